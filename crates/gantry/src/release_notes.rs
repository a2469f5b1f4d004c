//! `gantry release-notes`: the standards' release notes (new features,
//! improvements, bug fixes, breaking changes, known issues, upgrade notes)
//! from the conventional commits since the previous release, written to
//! `docs/releases/VERSION.md` of the service's repository.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEMPLATE: &str = r#"## Release {{ version }} - {{ date }}

Changes {{ range }}.

{% for section in sections -%}
### {{ section.title }}

{% for item in section.items -%}
- {{ item }}
{% else -%}
- None.
{% endfor %}

{% endfor -%}
"#;

/// One commit as `git log` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
    pub body: String,
}

/// The notes' sections, in the standards' order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notes {
    pub features: Vec<String>,
    pub improvements: Vec<String>,
    pub fixes: Vec<String>,
    pub breaking: Vec<String>,
    pub known_issues: Vec<String>,
    pub upgrade: Vec<String>,
    /// Commits that are not user-facing (docs, tests, chores) or not conventional.
    pub skipped: usize,
}

/// Sorts commits by their conventional-commit type (`feat`, `fix`, `perf`,
/// `refactor`, … with an optional scope and `!`); `BREAKING CHANGE:` and
/// `Upgrade-Note:` / `Migration:` footers feed their own sections.
pub fn classify(commits: &[Commit]) -> Notes {
    let mut notes = Notes::default();
    for c in commits {
        let short = &c.sha[..c.sha.len().min(7)];
        let Some((head, description)) = c.subject.split_once(": ") else {
            notes.skipped += 1;
            continue;
        };
        let bang = head.ends_with('!');
        let head = head.trim_end_matches('!');
        let (kind, scope) = match head.split_once('(') {
            Some((k, rest)) => (k, rest.strip_suffix(')')),
            None => (head, None),
        };
        let item = match scope {
            Some(s) => format!("**{s}**: {} ({short})", description.trim()),
            None => format!("{} ({short})", description.trim()),
        };
        let mut breaking_footer = false;
        for line in c.body.lines() {
            let line = line.trim();
            let footer = |prefixes: &[&str]| {
                prefixes
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                    .map(|text| format!("{} ({short})", text.trim()))
            };
            if let Some(text) = footer(&["BREAKING CHANGE:", "BREAKING-CHANGE:"]) {
                notes.breaking.push(text);
                breaking_footer = true;
            } else if let Some(text) = footer(&["Upgrade-Note:", "Migration:"]) {
                notes.upgrade.push(text);
            }
        }
        if bang && !breaking_footer {
            notes.breaking.push(item.clone());
        }
        match kind.to_ascii_lowercase().as_str() {
            "feat" | "feature" => notes.features.push(item),
            "fix" | "bugfix" => notes.fixes.push(item),
            "perf" | "refactor" | "improvement" | "improve" => notes.improvements.push(item),
            _ if bang || breaking_footer => {}
            _ => notes.skipped += 1,
        }
    }
    notes
}

#[derive(Serialize)]
struct Section<'a> {
    title: &'a str,
    items: &'a [String],
}

/// The Markdown of the notes.
pub fn render(version: &str, date: &str, range: &str, notes: &Notes) -> Result<String> {
    let sections = [
        Section {
            title: "New Features",
            items: &notes.features,
        },
        Section {
            title: "Improvements",
            items: &notes.improvements,
        },
        Section {
            title: "Bug Fixes",
            items: &notes.fixes,
        },
        Section {
            title: "Breaking Changes",
            items: &notes.breaking,
        },
        Section {
            title: "Known Issues",
            items: &notes.known_issues,
        },
        Section {
            title: "Upgrade Notes",
            items: &notes.upgrade,
        },
    ];
    let mut engine = minijinja::Environment::new();
    engine.set_trim_blocks(true);
    let text = engine.render_str(
        TEMPLATE,
        minijinja::context! { version, date, range, sections },
    )?;
    Ok(text.trim_end().to_owned() + "\n")
}

/// The known issues already written in `existing` notes (kept when the
/// notes are generated again, so hand-written ones are not lost).
pub fn known_issues_in(existing: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in existing.lines() {
        if line.starts_with("### ") {
            inside = line.trim() == "### Known Issues";
            continue;
        }
        if inside {
            if let Some(item) = line.strip_prefix("- ") {
                if item.trim() != "None." {
                    out.push(item.trim().to_owned());
                }
            }
        }
    }
    out
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .context("cannot run git; is it installed?")?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Commits in `range` (`A..B`, or everything reachable from `B`), oldest first, merges left out.
pub fn commits(repo: &Path, range: &str) -> Result<Vec<Commit>> {
    let log = git(
        repo,
        &[
            "log",
            "--no-merges",
            "--reverse",
            "--format=%H%x1f%s%x1f%b%x1e",
            range,
            "--",
        ],
    )?;
    Ok(log
        .split('\x1e')
        .filter_map(|rec| {
            let mut f = rec.trim_start_matches('\n').splitn(3, '\x1f');
            let sha = f.next()?.trim();
            (!sha.is_empty()).then(|| Commit {
                sha: sha.to_owned(),
                subject: f.next().unwrap_or("").trim().to_owned(),
                body: f.next().unwrap_or("").trim().to_owned(),
            })
        })
        .collect())
}

/// Where the previous release starts: a git ref, and how it was found.
pub fn previous_tag(repo: &Path, before: &str) -> Option<String> {
    git(
        repo,
        &[
            "describe",
            "--tags",
            "--abbrev=0",
            "--match",
            "v[0-9]*",
            &format!("{before}^"),
        ],
    )
    .ok()
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
}

pub struct Options {
    pub version: String,
    pub repo: PathBuf,
    /// The end of the range (the release's commit); HEAD by default.
    pub until: Option<String>,
    /// The start of the range (the previous release's commit).
    pub since: Option<String>,
    pub known_issues: Vec<String>,
    pub date: String,
}

/// Writes `docs/releases/VERSION.md` and returns its path and text.
pub fn write(o: &Options) -> Result<(PathBuf, String)> {
    semver::Version::parse(&o.version)
        .with_context(|| format!("{:?} is not a semantic version (expected X.Y.Z)", o.version))?;
    let until = o.until.clone().unwrap_or_else(|| "HEAD".to_owned());
    git(
        &o.repo,
        &["rev-parse", "--verify", &format!("{until}^{{commit}}")],
    )
    .with_context(|| format!("{until} is not a commit of {}", o.repo.display()))?;
    let since = o.since.clone().or_else(|| previous_tag(&o.repo, &until));
    let (range, described) = match &since {
        Some(s) => {
            let is_sha = s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit());
            let shown = if is_sha { &s[..12] } else { s.as_str() };
            (format!("{s}..{until}"), format!("since {shown}"))
        }
        None => (until.clone(), "since the first commit".to_owned()),
    };
    let mut notes = classify(&commits(&o.repo, &range)?);
    let path = o
        .repo
        .join("docs")
        .join("releases")
        .join(format!("{}.md", o.version));
    if let Ok(existing) = std::fs::read_to_string(&path) {
        notes.known_issues = known_issues_in(&existing);
    }
    for issue in &o.known_issues {
        if !notes.known_issues.contains(issue) {
            notes.known_issues.push(issue.clone());
        }
    }
    let text = render(&o.version, &o.date, &described, &notes)?;
    std::fs::create_dir_all(path.parent().expect("has a parent"))
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sha: &str, subject: &str, body: &str) -> Commit {
        Commit {
            sha: sha.repeat(7),
            subject: subject.into(),
            body: body.into(),
        }
    }

    #[test]
    fn conventional_commits_land_in_their_sections() {
        let notes = classify(&[
            c("a", "feat(api): approvals over HTTP", ""),
            c("b", "fix: a freeze that never ended", ""),
            c("c", "perf: faster gates", ""),
            c(
                "d",
                "feat!: tokens replace the shared secret",
                "Upgrade-Note: create a token per user",
            ),
            c(
                "e",
                "refactor(store): one table per concern",
                "BREAKING CHANGE: the database is migrated on start",
            ),
            c("f", "docs: typo", ""),
            c("g", "Merge the thing", ""),
        ]);
        assert_eq!(
            notes.features,
            [
                "**api**: approvals over HTTP (aaaaaaa)",
                "tokens replace the shared secret (ddddddd)"
            ]
        );
        assert_eq!(notes.fixes, ["a freeze that never ended (bbbbbbb)"]);
        assert_eq!(
            notes.improvements,
            [
                "faster gates (ccccccc)",
                "**store**: one table per concern (eeeeeee)"
            ]
        );
        assert_eq!(
            notes.breaking,
            [
                "tokens replace the shared secret (ddddddd)",
                "the database is migrated on start (eeeeeee)"
            ]
        );
        assert_eq!(notes.upgrade, ["create a token per user (ddddddd)"]);
        assert_eq!(notes.skipped, 2);
    }

    #[test]
    fn rendered_notes_follow_the_standards_format_and_keep_known_issues() {
        let mut notes = classify(&[c("a", "feat: one thing", "")]);
        notes.known_issues = vec!["slow on ARM".into()];
        let text = render("1.2.0", "2026-11-22", "since v1.1.0", &notes).unwrap();
        assert!(
            text.starts_with("## Release 1.2.0 - 2026-11-22\n"),
            "{text}"
        );
        let titles: Vec<&str> = text.lines().filter(|l| l.starts_with("### ")).collect();
        assert_eq!(
            titles,
            [
                "### New Features",
                "### Improvements",
                "### Bug Fixes",
                "### Breaking Changes",
                "### Known Issues",
                "### Upgrade Notes"
            ]
        );
        assert!(text.contains("### Bug Fixes\n\n- None.\n"), "{text}");
        assert_eq!(known_issues_in(&text), ["slow on ARM"]);
    }
}
