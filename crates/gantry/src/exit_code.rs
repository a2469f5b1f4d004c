//! The statuses `gantry` exits with, in one place: scripts branch on them, so
//! each has one number that never changes, and the README, `--help` and the
//! man page's EXIT STATUS section are written from (or checked against) this
//! list.

/// How a `gantry` command ended, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// The command did what was asked.
    Success = 0,
    /// Anything else went wrong (the controller unreachable, a refused
    /// request, a file not readable); the message on stderr says what.
    Error = 1,
    /// The command line itself is wrong (clap's own status for a usage error).
    Usage = 2,
    /// `deploy`, `rollback` or `rehearse` waited, and the deployment ended
    /// other than succeeded: rolled back or failed.
    DeployFailed = 3,
    /// `validate` or `server` found the configuration invalid.
    InvalidConfig = 4,
    /// `audit verify` found the hash chain broken (or not matching a checkpoint).
    AuditBroken = 5,
    /// `gates` found at least one gate failing.
    GateFailed = 6,
    /// `drift` found what runs differing from what should, or `converge`
    /// left some of it.
    Drift = 7,
    /// The reader of the output went away (`gantry log 4 | head`): the status
    /// a shell gives a process killed by SIGPIPE (128 + 13).
    BrokenPipe = 141,
}

impl ExitCode {
    /// Every status, in numeric order (a new variant goes here too: the
    /// README check and the man page read this list).
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Success,
        ExitCode::Error,
        ExitCode::Usage,
        ExitCode::DeployFailed,
        ExitCode::InvalidConfig,
        ExitCode::AuditBroken,
        ExitCode::GateFailed,
        ExitCode::Drift,
        ExitCode::BrokenPipe,
    ];

    /// The number the process exits with.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// What the status means, in the README's words (its "Exit codes:" line
    /// is checked against these).
    pub const fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Error => "error",
            ExitCode::Usage => "usage",
            ExitCode::DeployFailed => "the deployment did not succeed (rolled back or failed)",
            ExitCode::InvalidConfig => "invalid configuration (`validate` and `server`)",
            ExitCode::AuditBroken => "the audit trail is broken",
            ExitCode::GateFailed => "a gate fails",
            ExitCode::Drift => "drift found (or left by converge)",
            ExitCode::BrokenPipe => "the output's reader went away",
        }
    }

    /// Ends the process with this status, without waiting for anything.
    pub fn exit(self) -> ! {
        std::process::exit(self.code())
    }
}

/// What a command returns: how the process ends, or an error (which exits
/// [`ExitCode::Error`]).
pub type Exit = anyhow::Result<ExitCode>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The README's "Exit codes:" paragraph as number → meaning.
    fn readme_exit_codes() -> BTreeMap<i32, String> {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("\nExit codes: ")
            .expect("README.md has a paragraph starting \"Exit codes: \"");
        let paragraph = readme[start + 1..]
            .split("\n\n")
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let list = paragraph
            .strip_prefix("Exit codes: ")
            .unwrap()
            .strip_suffix('.')
            .expect("the exit-code paragraph ends with a full stop");
        list.split(", ")
            .map(|entry| {
                let (number, meaning) = entry
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("README exit code entry {entry:?} is \"N meaning\""));
                let number = number.parse().unwrap_or_else(|_| {
                    panic!("README exit code entry {entry:?} starts with a number")
                });
                (number, meaning.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_exit_code_with_its_meaning() {
        let readme = readme_exit_codes();
        let ours: BTreeMap<i32, String> = ExitCode::ALL
            .iter()
            .map(|c| (c.code(), c.meaning().to_owned()))
            .collect();
        assert_eq!(
            readme, ours,
            "README.md's \"Exit codes:\" line and ExitCode disagree"
        );
    }

    #[test]
    fn all_is_in_numeric_order_without_repeats() {
        assert!(ExitCode::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
    }
}
