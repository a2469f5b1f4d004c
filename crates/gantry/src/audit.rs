//! `gantry audit`: read, export and verify the hash-chained audit trail.

use crate::client::Client;
use crate::term::{errln, outln};
use crate::Exit;
use anyhow::{bail, Context};
use gantry_core::audit::{verify, AuditRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::Path;

/// Exit code of `gantry audit verify` when the chain is broken.
pub const EXIT_CHAIN_BROKEN: i32 = 5;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Records, oldest first.
    List {
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 50)]
        limit: usize,
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
    Verify {
        /// Verify an export instead of the controller's trail (no controller needed).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Deserialize)]
struct Page {
    anchor: Option<Anchor>,
    records: Vec<AuditRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Anchor {
    seq: u64,
    hash: String,
}

/// The first line of an export of a pruned trail.
#[derive(Serialize, Deserialize)]
struct AnchorLine {
    anchor: Anchor,
}

pub async fn run(connect: impl Fn() -> anyhow::Result<Client>, cmd: AuditCommand) -> Exit {
    match cmd {
        AuditCommand::List { after, limit } => {
            let page: Page = connect()?
                .get(&format!("/audit?after={after}&limit={limit}"))
                .await?;
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
                    crate::commands::time(&Value::from(e.at)),
                    e.actor,
                    e.outcome,
                    e.action,
                    e.subject
                );
            }
            Ok(0)
        }
        AuditCommand::Show { seq } => {
            let page: Page = connect()?
                .get(&format!("/audit?after={}&limit=1", seq.saturating_sub(1)))
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
            Ok(0)
        }
        AuditCommand::Export { output } => {
            let (anchor, records) = fetch_all(&connect()?).await?;
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
            Ok(0)
        }
        AuditCommand::Verify { file } => {
            let (anchor, records) = match file {
                Some(path) => read_export(&path)?,
                None => fetch_all(&connect()?).await?,
            };
            let anchor_ref = anchor.as_ref().map(|a| (a.seq, a.hash.as_str()));
            match verify(&records, anchor_ref) {
                Ok(n) => {
                    let range = match (records.first(), records.last()) {
                        (Some(f), Some(l)) => format!(" (records {} to {})", f.seq, l.seq),
                        _ => String::new(),
                    };
                    outln!("audit trail intact: {n} record(s){range}");
                    Ok(0)
                }
                Err(b) => {
                    outln!("audit trail BROKEN at record {}: {}", b.seq, b.reason);
                    Ok(EXIT_CHAIN_BROKEN)
                }
            }
        }
    }
}

async fn fetch_all(c: &Client) -> anyhow::Result<(Option<Anchor>, Vec<AuditRecord>)> {
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut anchor = None;
    loop {
        let after = records.last().map_or(0, |r| r.seq);
        let page: Page = c.get(&format!("/audit?after={after}&limit=10000")).await?;
        anchor = anchor.or(page.anchor);
        if page.records.is_empty() {
            return Ok((anchor, records));
        }
        records.extend(page.records);
    }
}

/// Reads an export; a line that is not a record is an error naming its line.
fn read_export(path: &Path) -> anyhow::Result<(Option<Anchor>, Vec<AuditRecord>)> {
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
    Ok((anchor, records))
}
