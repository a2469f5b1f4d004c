//! `gantry audit`: read, export and verify the hash-chained audit trail,
//! and take the signed checkpoints an auditor keeps to verify it against.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::term::{errln, outln};
use anyhow::{bail, Context};
use gantry_api::{AuditAnchor as Anchor, AuditQuery};
use gantry_core::audit::{verify_trail, AuditRecord, Checkpoint, Trail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Records, oldest first.
    List {
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        output: crate::output::Output,
    },
    /// One record, whole.
    Show { seq: u64 },
    /// Every record as JSON Lines (first line: the anchor of a pruned trail).
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Check that no record was edited, removed or reordered; names the first bad one.
    /// With `--checkpoint`, also that the trail was not cut short or rewritten
    /// past a checkpoint kept earlier.
    Verify {
        /// Verify an export instead of the controller's trail (no controller needed).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// A checkpoint kept earlier (`gantry audit checkpoint`): the trail must
        /// still hold the record it names with that hash, and not be shorter.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        /// The public key the checkpoint must be signed with (hex, or a file
        /// holding it); default: the controller's, or with `--file` the one
        /// written in the checkpoint.
        #[arg(long, requires = "checkpoint")]
        public_key: Option<String>,
    },
    /// Print a signed checkpoint of the trail's head now (JSON): keep it
    /// outside the controller's machine to verify against later.
    Checkpoint {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Print the public key that signs checkpoints (hex): pin it.
    PublicKey,
}

/// A trail as fetched or read: its anchor, the head the store recorded (not
/// in an export) and its records.
struct Fetched {
    anchor: Option<Anchor>,
    head: Option<Anchor>,
    /// The controller's newest stored checkpoint (not in an export).
    stored: Option<Checkpoint>,
    records: Vec<AuditRecord>,
}

/// The first line of an export of a pruned trail.
#[derive(Serialize, Deserialize)]
struct AnchorLine {
    anchor: Anchor,
}

pub async fn run(connect: impl Fn() -> anyhow::Result<Client>, cmd: AuditCommand) -> Exit {
    match cmd {
        AuditCommand::List {
            after,
            limit,
            output,
        } => {
            let page = connect()?
                .audit(&AuditQuery {
                    after,
                    limit: Some(limit),
                })
                .await?;
            if output.is_json() {
                return output.show(&page, |_| ()).map(|()| ExitCode::Success);
            }
            outln!(
                "{:>5}  {:<20} {:<10} {:<14} {:<40} SUBJECT",
                "SEQ",
                "AT",
                "ACTOR",
                "OUTCOME",
                "ACTION"
            );
            for r in page.records {
                let e = &r.entry;
                outln!(
                    "{:>5}  {:<20} {:<10} {:<14} {:<40} {}",
                    r.seq,
                    crate::time::time(e.at),
                    e.actor,
                    e.outcome,
                    e.action,
                    e.subject
                );
            }
            Ok(ExitCode::Success)
        }
        AuditCommand::Show { seq } => {
            let page = connect()?
                .audit(&AuditQuery {
                    after: seq.saturating_sub(1),
                    limit: Some(1),
                })
                .await?;
            let Some(r) = page.records.into_iter().find(|r| r.seq == seq) else {
                bail!("audit record {seq} does not exist (or was pruned)");
            };
            let mut v = serde_json::to_value(&r)?;
            // Show the detail as JSON, not as a string of JSON.
            if let Ok(detail) = serde_json::from_str::<Value>(&r.entry.detail) {
                v["detail"] = detail;
            }
            outln!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::Success)
        }
        AuditCommand::Export { output } => {
            let Fetched {
                anchor, records, ..
            } = fetch_all(&connect()?).await?;
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            if let Some(anchor) = anchor {
                writeln!(out, "{}", serde_json::to_string(&AnchorLine { anchor })?)?;
            }
            for r in &records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
            out.flush()?;
            if let Some(p) = output {
                errln!("{} record(s) written to {}", records.len(), p.display());
            }
            Ok(ExitCode::Success)
        }
        AuditCommand::Checkpoint { output } => {
            let cp = connect()?.audit_checkpoint().await?;
            let text = serde_json::to_string_pretty(&cp)? + "\n";
            match output {
                Some(p) => {
                    std::fs::write(&p, text)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    errln!(
                        "checkpoint of record {} written to {}; keep it away from the controller's machine",
                        cp.seq,
                        p.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::Success)
        }
        AuditCommand::PublicKey => {
            let k = connect()?.audit_public_key().await?;
            outln!("{}", k.public_key);
            Ok(ExitCode::Success)
        }
        AuditCommand::Verify {
            file,
            checkpoint,
            public_key,
        } => {
            let (client, fetched) = match &file {
                Some(path) => (None, read_export(path)?),
                None => {
                    let c = connect()?;
                    let fetched = fetch_all(&c).await?;
                    (Some(c), fetched)
                }
            };
            // Without the auditor's checkpoint, the controller's newest one
            // (which an attacker with the data directory can remove or re-sign).
            let (checkpoint, kept_by_auditor) = match &checkpoint {
                Some(path) => (Some(read_checkpoint(path)?), true),
                None => (fetched.stored.clone(), false),
            };
            if let Some(cp) = &checkpoint {
                let pinned = match (&public_key, &client) {
                    (Some(k), _) => Some(read_public_key(k)?),
                    (None, Some(c)) => Some(c.audit_public_key().await?.public_key),
                    (None, None) => {
                        errln!(
                            "warning: the checkpoint's signature is checked against the key written in it; pass --public-key to pin the key"
                        );
                        None
                    }
                };
                let pinned = pinned
                    .map(|k| gantry_core::audit::parse_public_key(&k))
                    .transpose()
                    .context("--public-key")?;
                if let Err(e) = cp.check_signature(pinned.as_ref()) {
                    outln!("audit checkpoint REFUSED: {e}");
                    return Ok(ExitCode::AuditBroken);
                }
            }
            let trail = Trail {
                records: &fetched.records,
                anchor: fetched.anchor.as_ref().map(|a| (a.seq, a.hash.as_str())),
                head: fetched.head.as_ref().map(|a| (a.seq, a.hash.as_str())),
            };
            match verify_trail(trail, checkpoint.as_ref()) {
                Ok(v) => {
                    let records = &fetched.records;
                    let range = match (records.first(), records.last()) {
                        (Some(f), Some(l)) => format!(" (records {} to {})", f.seq, l.seq),
                        _ => String::new(),
                    };
                    outln!("audit trail intact: {} record(s){range}", v.records);
                    if let Some(cp) = &checkpoint {
                        outln!(
                            "holds the {} checkpoint of record {} signed {} ({} record(s) since)",
                            if kept_by_auditor {
                                "given"
                            } else {
                                "controller's newest"
                            },
                            cp.seq,
                            gantry_core::governance::rfc3339(cp.at),
                            v.newer_than_checkpoint
                        );
                    }
                    if let Some((from, to, by)) = v.pruned_since_checkpoint {
                        outln!("records {from}..{to} were pruned since, as record {by} says");
                    }
                    Ok(ExitCode::Success)
                }
                Err(b) => {
                    outln!("audit trail BROKEN at record {}: {}", b.seq, b.reason);
                    Ok(ExitCode::AuditBroken)
                }
            }
        }
    }
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not an audit checkpoint (the JSON `gantry audit checkpoint` prints)",
            path.display()
        )
    })
}

/// A key given as hex, or the path of a file holding it.
fn read_public_key(given: &str) -> anyhow::Result<String> {
    let path = Path::new(given);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("cannot read {}", path.display()));
    }
    Ok(given.trim().to_owned())
}

async fn fetch_all(c: &Client) -> anyhow::Result<Fetched> {
    let mut records: Vec<AuditRecord> = Vec::new();
    let (mut anchor, mut head, mut stored) = (None, None, None);
    loop {
        let after = records.last().map_or(0, |r| r.seq);
        let page = c
            .audit(&AuditQuery {
                after,
                limit: Some(10_000),
            })
            .await?;
        anchor = anchor.or(page.anchor);
        // The head as first seen: records appended while paging are past it.
        head = head.or(Some(page.head));
        stored = stored.or(page.checkpoint);
        if page.records.is_empty() {
            return Ok(Fetched {
                anchor,
                head,
                stored,
                records,
            });
        }
        records.extend(page.records);
    }
}

/// Reads an export; a line that is not a record is an error naming its line.
fn read_export(path: &Path) -> anyhow::Result<Fetched> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut anchor = None;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if n == 0 {
            if let Ok(a) = serde_json::from_str::<AnchorLine>(&line) {
                anchor = Some(a.anchor);
                continue;
            }
        }
        let r: AuditRecord = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an audit record", path.display(), n + 1))?;
        records.push(r);
    }
    Ok(Fetched {
        anchor,
        head: None,
        stored: None,
        records,
    })
}
