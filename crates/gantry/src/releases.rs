//! `gantry release`: register, list, show and re-verify releases.

use crate::cli::ReleaseCommand;
use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::term::outln;
use crate::time::time;
use anyhow::Context;
use base64::Engine as _;
use gantry_api::ReleaseRecord;

/// The commit time of `sha` (RFC 3339) as the git repository of the
/// working directory knows it, if it does.
fn commit_time_of(sha: &str) -> Option<String> {
    if !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let out = std::process::Command::new("git")
        .args(["show", "-s", "--format=%cI", sha, "--"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && gantry_core::time::parse_rfc3339(text).is_ok())
        .then(|| text.to_owned())
}

pub async fn run(c: &Client, rc: ReleaseCommand) -> Exit {
    match rc {
        ReleaseCommand::Create {
            version,
            artifact,
            git_sha,
            signature,
            commit_time,
        } => {
            let file = tokio::fs::File::open(&artifact)
                .await
                .with_context(|| format!("cannot read artifact {}", artifact.display()))?;
            let sig = match &signature {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read signature {}", p.display()))?;
                    Some(base64::engine::general_purpose::STANDARD.encode(text))
                }
                None => None,
            };
            // The commit's time, for DORA's lead time: given, or asked of
            // the repository here when it has the commit.
            let commit_time = match (commit_time, &git_sha) {
                (Some(t), _) => {
                    gantry_core::time::parse_rfc3339(&t)
                        .map_err(|e| anyhow::anyhow!("--commit-time: {e}"))?;
                    Some(t)
                }
                (None, Some(sha)) => commit_time_of(sha),
                (None, None) => None,
            };
            let r = c
                .put_release(
                    &version,
                    file,
                    git_sha.as_deref(),
                    sig.as_deref(),
                    commit_time.as_deref(),
                )
                .await?;
            outln!(
                "release {} registered: sha256 {} ({} bytes, {}){}",
                r.version,
                r.digest,
                r.size,
                r.artifact_kind,
                if r.signed_by.is_some() {
                    ", signature verified"
                } else {
                    ", unsigned"
                }
            );
            Ok(ExitCode::Success)
        }
        ReleaseCommand::List { output } => {
            let releases = c.releases().await?;
            output.show(&releases, |releases| {
                outln!(
                    "{:<14} {:<14} {:<10} {:>10}  {:<8} created",
                    "VERSION",
                    "SHA256",
                    "GIT",
                    "SIZE",
                    "SIGNED"
                );
                for r in releases {
                    let digest = r.digest.to_string();
                    outln!(
                        "{:<14} {:<14} {:<10} {:>10}  {:<8} {}",
                        r.version,
                        &digest[..digest.len().min(12)],
                        r.git_sha
                            .as_deref()
                            .map(|s| &s[..s.len().min(8)])
                            .unwrap_or("-"),
                        r.size,
                        if r.signed_by.is_some() { "yes" } else { "no" },
                        time(r.created_at)
                    );
                }
            })?;
            Ok(ExitCode::Success)
        }
        ReleaseCommand::Show { version, output } => {
            let r = c.release(&version).await?;
            output.show(&r, show)?;
            Ok(ExitCode::Success)
        }
        ReleaseCommand::Verify { output } => {
            let results = c.verify_releases().await?;
            let bad = results.iter().filter(|r| !r.ok).count();
            output.show(&results, |results| {
                for r in results {
                    outln!(
                        "{} {:<14} {}",
                        if r.ok { "ok " } else { "BAD" },
                        r.version,
                        r.detail
                    );
                }
                outln!("{} release(s) checked, {bad} failed", results.len());
            })?;
            Ok(if bad == 0 {
                ExitCode::Success
            } else {
                ExitCode::Error
            })
        }
    }
}

/// One release for a person: every field on its line.
fn show(r: &ReleaseRecord) {
    outln!("version     {}", r.version);
    outln!("sha256      {}", r.digest);
    outln!("size        {} bytes", r.size);
    outln!("kind        {}", r.artifact_kind);
    outln!("git         {}", r.git_sha.as_deref().unwrap_or("-"));
    outln!(
        "signed by   {}",
        r.signed_by.as_deref().unwrap_or("- (unsigned)")
    );
    outln!("created     {} by {}", time(r.created_at), r.created_by);
}

/// The git commits of the newest registered release before `version` and of
/// `version` itself, where they were registered with one.
pub fn commits_of(releases: &[ReleaseRecord], version: &str) -> (Option<String>, Option<String>) {
    let Ok(target) = semver::Version::parse(version) else {
        return (None, None);
    };
    let mut prev: Option<(&semver::Version, String)> = None;
    let mut this = None;
    for r in releases {
        let (v, Some(sha)) = (&r.version, &r.git_sha) else {
            continue;
        };
        if *v == target {
            this = Some(sha.clone());
        } else if *v < target && prev.as_ref().is_none_or(|(p, _)| v > *p) {
            prev = Some((v, sha.clone()));
        }
    }
    (prev.map(|(_, s)| s), this)
}
