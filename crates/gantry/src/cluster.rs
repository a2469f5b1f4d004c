//! `gantry cluster` (and the end of `gantry status`): the controllers that
//! share the store, which one leads, under which epoch, and its lease.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::outln;
use gantry_api::ClusterView;

pub async fn show(c: &Client, output: Output) -> Exit {
    let view = c.cluster().await?;
    output.show(&view, print)?;
    Ok(ExitCode::Success)
}

/// Seconds between two moments of the database's clock, for people.
fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

pub fn print(v: &ClusterView) {
    let store = match v.store.as_str() {
        "postgresql" => "PostgreSQL",
        "sqlite" => "SQLite",
        other => other,
    };
    match &v.lease {
        Some(l) if l.live => outln!(
            "controllers ({store}): leader {}, epoch {}, {}",
            l.holder,
            l.epoch,
            match l.expires_at {
                Some(at) => format!("lease expires in {}", secs(at - v.observed_at)),
                None => "for as long as it runs".to_owned(),
            }
        ),
        Some(l) => outln!(
            "controllers ({store}): no leader now; the last, {} under epoch {}, let its lease expire {} ago",
            l.holder,
            l.epoch,
            secs(v.observed_at - l.expires_at.unwrap_or(v.observed_at))
        ),
        None => outln!("controllers ({store}): no controller has led yet"),
    }
    outln!(
        "  {:<28} {:<28} {:<9} {:<10} SEEN",
        "ID",
        "API",
        "VERSION",
        "ROLE"
    );
    for ctl in &v.controllers {
        let role = if ctl.leader { "leader" } else { "follower" };
        let this = if ctl.id == v.this { " (this)" } else { "" };
        outln!(
            "  {:<28} {:<28} {:<9} {:<10} {} ago{this}",
            ctl.id,
            ctl.api_url,
            ctl.version,
            role,
            secs(v.observed_at - ctl.last_seen)
        );
    }
}
