//! Confinement of instances. A deployed release is untrusted code: it must not
//! read the controller's tokens or database, write its state, read another
//! release, or signal the controller and its routers.
//!
//! Two layers, both applied by `gantry confine`, a tiny launcher that the
//! local target runs in place of the instance; it restricts itself and then
//! execs the instance (same pid), so no `unsafe` pre-exec code is needed:
//!
//! - **A separate user.** When the controller runs as root, instances run as
//!   `service.run_as` (default `nobody`) with no supplementary groups. The data
//!   directory's secrets are 0600/0700 root, so they are out of reach, and a
//!   process of another user cannot signal or trace the controller.
//! - **Landlock** (Linux ≥ 5.13; signal and abstract-socket scoping ≥ 6.12): the
//!   instance may read and execute only the system directories, its own release
//!   directory and its command; write only its scratch directory and the
//!   configured paths; signal, trace or read the `/proc` secrets of only the
//!   processes of its own sandbox. This holds even when the controller is not root.
//!
//! Where a layer is not possible the controller says so once at start
//! ([`Confinement::plan`] warnings, [`Confinement::probe`]).

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

/// The hidden subcommand of the gantry binary that runs [`launch`].
pub const SUBCOMMAND: &str = "confine";

/// System directories an instance may read and execute from. `/proc` is
/// safe to read: what in it reveals another process (`environ`, `mem`,
/// `fd/`) passes the kernel's ptrace check, which Landlock refuses for any
/// process outside the instance's own sandbox.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys", "/proc",
];
/// Devices an instance may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("service.run_as: there is no user named {0:?} on this machine")]
    NoSuchUser(String),
    #[error("service.run_as: {0:?} is root; instances must run as an unprivileged user")]
    RootUser(String),
    #[error(
        "service.run_as = {name:?} needs the controller to run as root (it runs as uid {uid})"
    )]
    NotRoot { name: String, uid: u32 },
    #[error("cannot look up user {name:?}: {reason}")]
    Lookup { name: String, reason: String },
    #[error("confine: {0}")]
    Launch(String),
}

/// Who instances run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// How this controller confines the instances it starts.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The gantry executable that runs `gantry confine`.
    launcher: PathBuf,
    /// `Some` when the controller is root and so can switch users.
    pub run_as: Option<RunAs>,
    /// Landlock wanted (`service.sandbox` not `false`).
    pub landlock: bool,
    /// Extra paths the instance may read (and execute) or write.
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

impl Confinement {
    /// Decides the confinement from the service's config and the controller's
    /// own user. Returns warnings for the layers that cannot apply.
    pub fn plan(
        launcher: PathBuf,
        service: &gantry_config::Service,
    ) -> Result<(Confinement, Vec<String>), ConfineError> {
        Self::plan_for(launcher, service.run_as.as_deref(), &service.sandbox)
    }

    /// [`Confinement::plan`] from the two settings it reads, for a host
    /// that gets them over the fleet channel rather than from a config file.
    pub fn plan_for(
        launcher: PathBuf,
        run_as: Option<&str>,
        sandbox: &gantry_config::Sandbox,
    ) -> Result<(Confinement, Vec<String>), ConfineError> {
        let euid = nix::unistd::geteuid();
        let mut warnings = Vec::new();
        let run_as = if euid.is_root() {
            let name = run_as.unwrap_or("nobody").to_owned();
            let user = nix::unistd::User::from_name(&name)
                .map_err(|e| ConfineError::Lookup {
                    name: name.clone(),
                    reason: e.to_string(),
                })?
                .ok_or_else(|| ConfineError::NoSuchUser(name.clone()))?;
            if user.uid.is_root() {
                return Err(ConfineError::RootUser(name));
            }
            Some(RunAs {
                name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        } else {
            let own = nix::unistd::User::from_uid(euid)
                .ok()
                .flatten()
                .map(|u| u.name);
            match run_as {
                Some(name) if Some(name) != own.as_deref() => {
                    return Err(ConfineError::NotRoot {
                        name: name.to_owned(),
                        uid: euid.as_raw(),
                    })
                }
                _ => warnings.push(format!(
                    "the controller is not root: instances run as its own user (uid {}), \
                     kept from its files by Landlock only",
                    euid.as_raw()
                )),
            }
            None
        };
        if !sandbox.enabled {
            warnings.push(
                "service.sandbox = false: instances are not confined in the file system".into(),
            );
        }
        Ok((
            Confinement {
                launcher,
                run_as,
                landlock: sandbox.enabled,
                read: sandbox.read.clone(),
                write: sandbox.write.clone(),
            },
            warnings,
        ))
    }

    /// No user switch, no Landlock: for tests of other parts.
    pub fn none(launcher: PathBuf) -> Confinement {
        Confinement {
            launcher,
            run_as: None,
            landlock: false,
            read: Vec::new(),
            write: Vec::new(),
        }
    }

    /// Whether instances run as a user other than the controller's, so the
    /// data directory must let them traverse to their release directory.
    pub fn switches_user(&self) -> bool {
        self.run_as.is_some()
    }

    /// The command that starts `program` confined. `exec_file` is the
    /// command's resolved file when it lies outside the release directory (a
    /// release may link to an installed binary); `scratch` is the instance's
    /// private writable directory.
    pub fn command(
        &self,
        program: &Path,
        args: impl IntoIterator<Item = String>,
        exec_file: Option<&Path>,
        scratch: &Path,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.launcher);
        cmd.arg(SUBCOMMAND);
        cmd.args(self.flags(exec_file, scratch));
        cmd.arg("--").arg(program).args(args);
        cmd
    }

    fn flags(&self, exec_file: Option<&Path>, scratch: &Path) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if let Some(u) = &self.run_as {
            out.extend(["--uid".into(), u.uid.to_string().into()]);
            out.extend(["--gid".into(), u.gid.to_string().into()]);
        }
        if self.landlock {
            out.push("--landlock".into());
            for p in &self.read {
                out.extend(["--read".into(), p.clone().into_os_string()]);
            }
            if let Some(f) = exec_file {
                out.extend(["--read".into(), f.as_os_str().to_owned()]);
            }
            out.extend(["--write".into(), scratch.as_os_str().to_owned()]);
            for p in &self.write {
                out.extend(["--write".into(), p.clone().into_os_string()]);
            }
        }
        out
    }

    /// Runs the launcher once with this confinement (restricting itself and
    /// exiting instead of running an instance) and reports what the kernel
    /// enforced, so the controller can warn at start rather than leave an
    /// operator believing in a sandbox the kernel does not have.
    pub async fn probe(&self) -> Result<String, String> {
        if !self.landlock {
            return Ok("not requested".into());
        }
        let out = tokio::process::Command::new(&self.launcher)
            .arg(SUBCOMMAND)
            .arg("--report")
            .args(self.flags(None, Path::new("/nonexistent")))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.launcher.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{text} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// What `gantry confine` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    uid: Option<u32>,
    gid: Option<u32>,
    landlock: bool,
    report: bool,
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    program: Option<OsString>,
    args: Vec<OsString>,
}

fn parse(argv: &[OsString]) -> Result<Request, String> {
    let mut r = Request::default();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |v: OsString, name: &str| {
            v.to_str()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.to_str() {
            Some("--uid") => r.uid = Some(number(value("--uid")?, "--uid")?),
            Some("--gid") => r.gid = Some(number(value("--gid")?, "--gid")?),
            Some("--landlock") => r.landlock = true,
            Some("--report") => r.report = true,
            Some("--read") => r.read.push(value("--read")?.into()),
            Some("--write") => r.write.push(value("--write")?.into()),
            Some("--") => {
                r.program = it.next().cloned();
                r.args = it.cloned().collect();
                break;
            }
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    if r.uid.is_some() != r.gid.is_some() {
        return Err("--uid and --gid go together".into());
    }
    if r.program.is_none() && !r.report {
        return Err("no program after --".into());
    }
    Ok(r)
}

/// The body of `gantry confine`: restricts this process, then execs the
/// instance. Returns only on failure, with an exit code (126, as a shell
/// does when it cannot run a command). Runs before any thread is started.
pub fn launch(argv: &[OsString]) -> i32 {
    let request = match parse(argv) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gantry confine: {e}");
            return 2;
        }
    };
    match confine_and_exec(request) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("gantry confine: {e}");
            126
        }
    }
}

fn confine_and_exec(r: Request) -> Result<Infallible, ConfineError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ConfineError::Launch(format!("{what}: {e}"));
    // Landlock rules are opened while still privileged (the paths may not be
    // readable by the target user), then enforced after the user switch.
    let ruleset = if r.landlock {
        Some(landlock_ruleset(&r.read, &r.write).map_err(|e| fail("landlock", &e))?)
    } else {
        None
    };
    if let (Some(uid), Some(gid)) = (r.uid, r.gid) {
        use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
        setgroups(&[Gid::from_raw(gid)]).map_err(|e| fail("setgroups", &e))?;
        setgid(Gid::from_raw(gid)).map_err(|e| fail("setgid", &e))?;
        setuid(Uid::from_raw(uid)).map_err(|e| fail("setuid", &e))?;
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err(ConfineError::Launch(
                "could regain root after setuid".into(),
            ));
        }
    }
    let status = match ruleset {
        Some(rs) => {
            let s = rs.restrict_self().map_err(|e| fail("landlock", &e))?;
            format!("landlock {:?}", s.ruleset)
        }
        None => "landlock off".into(),
    };
    if r.report {
        println!("{status}");
        std::process::exit(0);
    }
    let program = r.program.unwrap_or_default();
    let err = std::process::Command::new(&program).args(&r.args).exec();
    Err(fail(
        &format!("cannot run {}", Path::new(&program).display()),
        &err,
    ))
}

fn landlock_ruleset(
    read: &[PathBuf],
    write: &[PathBuf],
) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    use landlock::{
        Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetError, Scope, ABI,
    };
    let abi = ABI::V6;
    let read_access = AccessFs::from_read(abi);
    let write_access = AccessFs::from_all(abi);
    let mut rules: Vec<PathBeneath<PathFd>> = Vec::new();
    // Missing paths are skipped: not every system has /lib32 or /libx32. A
    // file takes only the rights that apply to files.
    let mut allow = |path: &Path, access: BitFlags<AccessFs>| {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let access = if meta.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        if let Ok(fd) = PathFd::new(path) {
            rules.push(PathBeneath::new(fd, access));
        }
    };
    for p in SYSTEM_READ {
        allow(Path::new(p), read_access);
    }
    // The release directory is the working directory set by the target.
    allow(Path::new("."), read_access);
    for p in read {
        allow(p, read_access);
    }
    for p in DEVICES {
        allow(Path::new(p), write_access);
    }
    for p in write {
        allow(p, write_access);
    }
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .add_rules(rules.into_iter().map(Ok::<_, RulesetError>))
}

/// True when `path` (after following links) lies inside `dir`.
pub fn is_within(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_launcher_parses_what_the_target_writes() {
        let c = Confinement {
            launcher: "/gantry".into(),
            run_as: Some(RunAs {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
            }),
            landlock: true,
            read: vec!["/srv/static".into()],
            write: vec!["/var/lib/app".into()],
        };
        let mut argv = c.flags(Some(Path::new("/opt/bin/app")), Path::new("/scratch"));
        argv.extend(os(&["--", "./bin/app", "--port", "--", "x"]));
        let r = parse(&argv).unwrap();
        assert_eq!(r.uid, Some(65534));
        assert_eq!(r.gid, Some(65534));
        assert!(r.landlock);
        assert_eq!(
            r.read,
            [PathBuf::from("/srv/static"), PathBuf::from("/opt/bin/app")]
        );
        assert_eq!(
            r.write,
            [PathBuf::from("/scratch"), PathBuf::from("/var/lib/app")]
        );
        assert_eq!(r.program, Some("./bin/app".into()));
        assert_eq!(
            r.args,
            os(&["--port", "--", "x"]),
            "arguments pass untouched"
        );
    }

    #[test]
    fn the_launcher_refuses_half_requests() {
        assert!(parse(&os(&["--uid", "5", "--", "x"])).is_err());
        assert!(parse(&os(&["--uid", "five", "--gid", "5", "--", "x"])).is_err());
        assert!(parse(&os(&["--landlock"])).is_err(), "no program");
        assert!(parse(&os(&["--bogus", "--", "x"])).is_err());
        assert!(parse(&os(&["--read"])).is_err());
    }
}
