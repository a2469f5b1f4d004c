//! Decoding an environment's `fleet = { batches, max_failed, waves }`,
//! checked against the hosts the environment resolved to.

use super::*;
use crate::hosts::{FleetPlan, Host, HostShare, Wave};

/// `fleet = { batches, max_failed, waves }` over the environment's hosts.
pub(super) fn decode_fleet(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    hosts: &[&Host],
) -> Option<FleetPlan> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::FleetSection>(t, path);
    let total = hosts.len() as u32;
    let batches = match t.get("batches") {
        Some(b) => decode_batches(w, b, &join(path, "batches"), total),
        None => Some(vec![HostShare::Percent(100)]),
    };
    let max_unavailable = match t.get("max_unavailable") {
        Some(m) => {
            let p = join(path, "max_unavailable");
            if t.get("batches").is_some() {
                w.error(
                    m.span(),
                    &p,
                    "set `batches` or `max_unavailable`, not both: each cuts the hosts into batches",
                );
                None
            } else {
                host_share(w, m, &p, 1).map(Some)
            }
        }
        None => Some(None),
    };
    let max_failed = match t.get("max_failed") {
        Some(m) => {
            let p = join(path, "max_failed");
            host_share(w, m, &p, 0).and_then(|share| {
                if share.of(total) < total {
                    return Some(share);
                }
                w.error(
                    m.span(),
                    &p,
                    format!("allows all {total} hosts of the environment to fail; expected fewer, so a rollout can still fail"),
                );
                None
            })
        }
        None => Some(HostShare::Count(0)),
    };
    let waves = match t.get("waves") {
        Some(wv) => decode_waves(w, wv, &join(path, "waves"), hosts),
        None => Some(Vec::new()),
    };
    Some(FleetPlan {
        batches: batches?,
        max_unavailable: max_unavailable?,
        max_failed: max_failed?,
        waves: waves?,
    })
}

/// An integer count (at least `min`) or a "N%" share (`min`..=100).
fn host_share(w: &mut Walker<'_>, v: &Val<'_>, p: &str, min: u32) -> Option<HostShare> {
    if let DeValue::String(s) = v.get_ref() {
        let n = s
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u32>().ok())
            .filter(|n| (min..=100).contains(n));
        if n.is_none() {
            w.error(
                v.span(),
                p,
                format!("{s:?} is not a share of hosts; expected \"{min}%\" to \"100%\", or a number of hosts"),
            );
        }
        return n.map(HostShare::Percent);
    }
    // A share is a count or a percentage, untagged: its range depends on
    // which, so it is stated here rather than in the schema.
    w.count_within(v, p, u64::from(min), 100_000)
        .map(HostShare::Count)
}

fn decode_batches(w: &mut Walker<'_>, v: &Val<'_>, p: &str, total: u32) -> Option<Vec<HostShare>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            p,
            format!(
                "expected an array such as [1, \"10%\", \"50%\", \"100%\"], found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    let (mut last_count, mut last_percent) = (0, 0);
    for (n, item) in items.iter().enumerate() {
        let ip = format!("{p}[{n}]");
        let Some(share) = host_share(w, item, &ip, 1) else {
            ok = false;
            continue;
        };
        let rising = match share {
            HostShare::Count(c) => std::mem::replace(&mut last_count, c) < c,
            HostShare::Percent(c) => std::mem::replace(&mut last_percent, c) < c,
        };
        if !rising {
            w.error(
                item.span(),
                &ip,
                "batches are cumulative targets and must rise: each count above the counts before it, each share above the shares before it",
            );
            ok = false;
        }
        if let HostShare::Count(c) = share {
            if c >= total {
                w.error(
                    item.span(),
                    &ip,
                    format!("{c} hosts is the whole environment ({total} hosts) or more; end with \"100%\" instead"),
                );
                ok = false;
            }
        }
        out.push(share);
    }
    if ok && out.last() != Some(&HostShare::Percent(100)) {
        w.error(
            v.span(),
            p,
            "the last batch must be \"100%\", so every host is reached",
        );
        ok = false;
    }
    ok.then_some(out)
}

fn decode_waves(w: &mut Walker<'_>, v: &Val<'_>, p: &str, hosts: &[&Host]) -> Option<Vec<Wave>> {
    let sites = w.string_list(v, p)?;
    let DeValue::Array(items) = v.get_ref() else {
        return None;
    };
    let mut out: Vec<Wave> = Vec::new();
    let mut ok = true;
    for (n, (item, site)) in items.iter().zip(&sites).enumerate() {
        let ip = format!("{p}[{n}]");
        if out.iter().any(|wave| &wave.site == site) {
            w.error(item.span(), &ip, format!("site {site:?} is already a wave"));
            ok = false;
            continue;
        }
        let of_site: Vec<String> = hosts
            .iter()
            .filter(|h| h.site.as_deref() == Some(site.as_str()))
            .map(|h| h.name.clone())
            .collect();
        if of_site.is_empty() {
            let mut known: Vec<&str> = hosts.iter().filter_map(|h| h.site.as_deref()).collect();
            known.sort();
            known.dedup();
            w.error(
                item.span(),
                &ip,
                format!(
                    "no host of this environment is in site {site:?}; its sites: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            ok = false;
            continue;
        }
        out.push(Wave {
            site: site.clone(),
            hosts: of_site,
        });
    }
    if ok && !out.is_empty() {
        let left: Vec<&str> = hosts
            .iter()
            .filter(|h| !out.iter().any(|wave| wave.hosts.contains(&h.name)))
            .map(|h| h.name.as_str())
            .collect();
        if !left.is_empty() {
            w.error(
                v.span(),
                p,
                format!(
                    "no wave reaches {}; add their sites to `waves`, or leave them out of the environment",
                    left.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}
