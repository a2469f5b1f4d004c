//! `gantry completions` and `gantry man`: shell completions and man pages
//! written from the clap definitions, so neither can drift from the CLI.
//! Hidden subcommands (`router`, `sample-service`: started by the controller
//! and the demo, not by people) appear in neither.

use crate::cli::Cli;
use crate::exit_code::ExitCode;
use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use std::io::Write;
use std::path::Path;

/// The completion script for `shell`, on standard output.
pub fn completions(shell: Shell) -> crate::exit_code::Exit {
    write_stdout(&completion_script(shell))?;
    Ok(ExitCode::Success)
}

/// `gantry.1` on standard output, or with `dir` every page (`gantry.1` and
/// one per subcommand, `gantry-deploy.1`, `gantry-release-create.1`, …)
/// written there, one path a line on standard output.
pub fn man(dir: Option<&Path>) -> crate::exit_code::Exit {
    let pages = man_pages()?;
    let Some(dir) = dir else {
        let (_, root) = pages.first().context("no man page was generated")?;
        write_stdout(root)?;
        return Ok(ExitCode::Success);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = String::new();
    for (name, page) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    write_stdout(written.as_bytes())?;
    Ok(ExitCode::Success)
}

/// Raw bytes to standard output; a closed pipe comes back as an `io::Error`
/// that `main` turns into [`ExitCode::BrokenPipe`].
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// The script clap_complete writes for `shell`. It is generated into memory
/// first: clap_complete panics on a failed write.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = without_hidden(&Cli::command());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "gantry", &mut script);
    script
}

/// `cmd` with its hidden subcommands left out, at every depth: clap_complete
/// would offer them otherwise. clap cannot remove a subcommand, so the
/// command is copied with what completion reads (name, help, arguments,
/// visible subcommands).
fn without_hidden(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        );
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        copy = copy.version(version.to_owned());
    }
    for alias in cmd.get_visible_aliases() {
        copy = copy.visible_alias(alias.to_owned());
    }
    copy
}

/// Every man page as (file name, roff), `gantry.1` first. Hidden subcommands
/// get no page and no mention (clap_mangen skips them).
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let root = clap_mangen::Man::new(cmd.clone()).title("GANTRY");
    let mut page = Vec::new();
    root.render(&mut page)?;
    let mut page = String::from_utf8(page).context("clap_mangen wrote a page that is not UTF-8")?;
    // EXIT STATUS goes before VERSION, where man-pages(7) puts it.
    let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
    page.insert_str(at, &exit_status_section());
    let page = page.into_bytes();
    pages.push((root.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand_pages(sub, &mut pages)?;
    }
    Ok(pages)
}

/// The page of `cmd` (already built, so its display name is `gantry-…`)
/// and of its visible subcommands.
fn subcommand_pages(cmd: &Command, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let man = clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase());
    let mut page = Vec::new();
    man.render(&mut page)?;
    pages.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand_pages(sub, pages)?;
    }
    Ok(())
}

/// EXIT STATUS of `gantry.1`, from [`ExitCode::ALL`].
fn exit_status_section() -> String {
    let mut roff = roff::Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for code in ExitCode::ALL {
        roff.control("TP", []);
        roff.text([roff::bold(code.code().to_string())]);
        roff.text([roff::roman(code.meaning())]);
    }
    // `render` (not `to_roff`) keeps apostrophes upright; the two lines of
    // preamble it repeats are harmless, clap_mangen repeats them per section too.
    roff.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIDDEN: [&str; 2] = ["router", "sample-service"];

    /// Whether `script` offers `name` as a word to complete: in bash's word
    /// lists and `case` arms, zsh's `'name:help'` entries, fish's `-a "name"`.
    /// (A bare `contains` would not do: `shutdown`'s help mentions the router.)
    fn offers(script: &str, name: &str) -> bool {
        [
            format!(" {name} "),
            format!("\"{name} "),
            format!(" {name}\""),
            format!(",{name})"),
            format!("'{name}:"),
            format!("-a \"{name}\""),
        ]
        .iter()
        .any(|p| script.contains(p.as_str()))
    }

    fn visible_subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_owned())
            .collect()
    }

    #[test]
    fn completions_offer_every_visible_subcommand_and_no_hidden_one() {
        let subcommands = visible_subcommands();
        assert!(subcommands.iter().any(|s| s == "deploy"));
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            for name in &subcommands {
                assert!(offers(&script, name), "{shell} completion lacks {name}");
            }
            for name in HIDDEN {
                assert!(!offers(&script, name), "{shell} completion offers {name}");
            }
        }
    }

    #[test]
    fn completions_keep_nested_subcommands_and_options() {
        let script = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        // `gantry release create --artifact`, `gantry audit verify`, global `--data-dir`.
        for needle in [
            "gantry__subcmd__release__subcmd__create",
            "--artifact",
            "gantry__subcmd__audit__subcmd__verify",
            "--data-dir",
        ] {
            assert!(script.contains(needle), "bash completion lacks {needle}");
        }
    }

    #[test]
    fn man_pages_cover_visible_subcommands_and_every_exit_code() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "gantry.1");
        for name in visible_subcommands() {
            assert!(
                names.contains(&format!("gantry-{name}.1").as_str()),
                "no page for {name}"
            );
        }
        assert!(names.contains(&"gantry-release-create.1"));
        for hidden in HIDDEN {
            assert!(
                !names.iter().any(|n| n.contains(hidden)),
                "a page for {hidden}"
            );
        }
        let root = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(root.contains("\n.TH GANTRY 1 "), "{root}");
        assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
        for code in ExitCode::ALL {
            assert!(
                root.contains(&format!("\\fB{}\\fR", code.code())),
                "no {code:?} in {root}"
            );
        }
        for hidden in HIDDEN {
            assert!(
                !root.contains(&format!("gantry\\-{hidden}")),
                "gantry.1 lists {hidden}"
            );
        }
        for (name, page) in &pages {
            let page = String::from_utf8(page.clone()).unwrap();
            let title = name.strip_suffix(".1").unwrap().to_uppercase();
            assert!(
                page.contains(&format!("\n.TH {title} 1 ")),
                "{name}: {page}"
            );
        }
    }
}
