//! Seeing a fleet: `gantry hosts` (through the controller), `gantry status`
//! per host, and `gantry deploy`'s per-host progress, on lab hosts (network
//! namespaces with Debian's sshd; root needed, as `fleet_ssh.rs`).

use crate::fleet::fleet_gantry;
use crate::fleet_ssh::{skipped, FleetLab, LAB_UP};
use crate::harness::{wait_until, Gantry};
use gantry_api::{HostView, HostsView, InstanceHealthView};
use std::time::Duration;

/// `gantry hosts --output json`, parsed into the API's own type (exit code
/// aside: it is 1 while a host is unreachable).
fn hosts(g: &Gantry) -> HostsView {
    let run = g.gantry(&["hosts", "--output", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "`gantry hosts --output json` is not a HostsView ({e}):\n{}\n{}",
            run.stdout, run.stderr
        )
    })
}

fn host<'v>(view: &'v HostsView, name: &str) -> &'v HostView {
    view.hosts.iter().find(|h| h.name == name).unwrap()
}

/// Waits (60 s at most) until `gantry hosts` finds every host reachable:
/// the controller started before `hosts trust` pinned the keys, and a
/// refused first attempt may be backed off for a few seconds.
fn all_reachable(g: &Gantry) -> HostsView {
    let mut view = hosts(g);
    wait_until("every host reachable", Duration::from_secs(60), || {
        view = hosts(g);
        view.hosts.iter().all(|h| h.reachable)
    });
    view
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn hosts_shows_each_host_before_and_after_a_deploy_and_a_cut_host_with_when_it_was_last_seen() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(3, &[], LAB_UP);
    let g = fleet_gantry(&lab, "", "");
    g.register("1.0.0", "");

    // Before any deployment: every host answers (the first look may find
    // them still connecting), serves production, runs nothing.
    let before = all_reachable(&g);
    assert_eq!(before.hosts.len(), 3);
    for h in &before.hosts {
        assert!(
            h.connected_since.is_some() && h.last_seen.is_some(),
            "{h:?}"
        );
        assert!(h.free_bytes.unwrap() > 0, "{h:?}");
        assert!(h.gantry_version.is_some(), "{h:?}");
        assert_eq!(h.environments.len(), 1, "{h:?}");
        let e = &h.environments[0];
        assert_eq!(e.env, "production");
        assert!(e.instances.is_empty() && e.releases.is_empty(), "{e:?}");
        assert_eq!(e.expected_instances, 0);
    }

    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let after = hosts(&g);
    for h in &after.hosts {
        assert!(h.reachable, "{h:?}");
        let e = &h.environments[0];
        assert_eq!(e.releases, vec!["1.0.0".to_owned()], "{h:?}");
        assert_eq!(e.expected_release.as_deref(), Some("1.0.0"));
        assert_eq!((e.instances.len(), e.expected_instances), (2, 2), "{e:?}");
        for i in &e.instances {
            assert_eq!(i.health, InstanceHealthView::Healthy, "{i:?}");
            assert!(i.id.ends_with(&format!("@{}", h.name)), "{i:?}");
        }
        assert_eq!(e.router_running, Some(true), "{h:?}");
    }
    let table = g.gantry(&["hosts"]).ok().stdout;
    for h in &lab.hosts {
        let row = table
            .lines()
            .find(|l| l.starts_with(&h.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{table}", h.name));
        for word in ["yes, since", "production", "1.0.0", "2/2"] {
            assert!(row.contains(word), "{word:?} not in {row:?}");
        }
    }

    // One host cut off the network: shown unreachable, with the moment it
    // last answered; the others unchanged.
    let cut = &lab.hosts[0].name;
    let seen_before_cut = host(&hosts(&g), cut).last_seen.unwrap();
    let cut_at = now_ms();
    lab.fault(cut, "cut");
    let mut view = hosts(&g);
    wait_until(
        "the cut host shown unreachable",
        Duration::from_secs(30),
        || {
            view = hosts(&g);
            !host(&view, cut).reachable
        },
    );
    let h = host(&view, cut);
    let last_seen = h
        .last_seen
        .expect("a host seen before keeps its last-seen time");
    assert!(
        last_seen >= seen_before_cut && last_seen <= cut_at + 1000,
        "last seen {last_seen}, looked at {seen_before_cut}, cut at {cut_at}"
    );
    assert!(h.error.is_some(), "{h:?}");
    for other in view.hosts.iter().filter(|h| &h.name != cut) {
        assert!(other.reachable, "{other:?}");
        assert_eq!(other.environments[0].instances.len(), 2, "{other:?}");
    }
    let run = g.gantry(&["hosts"]).fails_with(1, "NO, last seen");
    assert!(run.stdout.contains(&format!("{cut}: ")), "{}", run.stdout);
}

#[test]
fn status_and_deploy_show_each_host_and_a_cut_host_counts_down_without_holding_the_status() {
    if skipped() {
        return;
    }
    let lab = FleetLab::start(3, &[], LAB_UP);
    let g = fleet_gantry(&lab, "", "");
    g.register("1.0.0", "");
    all_reachable(&g);

    // `gantry deploy` (output not a terminal): a plain line per host
    // whenever its stage changes, ending with what it serves.
    let run = g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    for h in &lab.hosts {
        let lines: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.contains(&format!("host {}: ", h.name)))
            .collect();
        assert!(
            lines.last().is_some_and(|l| l.ends_with("serves 1.0.0")),
            "{}: {lines:?}\n{}",
            h.name,
            run.stdout
        );
        // Each line says something new about the host.
        let stages: std::collections::BTreeSet<&str> = lines
            .iter()
            .map(|l| l.split_once(": ").unwrap().1)
            .collect();
        assert_eq!(stages.len(), lines.len(), "{lines:?}");
    }

    // `gantry status`: a row per host with its release and instances.
    let status = g.status();
    let production = status
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(production.hosts.len(), 3, "{production:?}");
    for row in &production.hosts {
        assert_eq!(row.release.as_deref(), Some("1.0.0"), "{row:?}");
        assert_eq!((row.up, row.expected), (2, 2), "{row:?}");
        assert_eq!(row.failed, None, "{row:?}");
    }
    assert!(production.instances.iter().all(|i| i.host.is_some()));
    let table = g.gantry(&["status"]).ok().stdout;
    assert!(table.contains("production on 3 host(s)"), "{table}");
    for h in &lab.hosts {
        assert!(
            table.lines().any(|l| l.trim_start().starts_with(&h.name)
                && l.contains("1.0.0")
                && l.contains("2/2")),
            "no row for {}:\n{table}",
            h.name
        );
    }
    // The public status page: counts of hosts, never their names.
    let page = g.call(g.client().status_page());
    let env = page
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(
        env.fleet,
        Some(gantry_api::FleetStatus {
            hosts: 3,
            serving: 3,
            failed: 0
        })
    );
    let (_, html) = crate::harness::http(&g.api_url(), "GET", "/status", None, "");
    assert!(html.contains("3 of 3 hosts serving"), "{html}");
    for h in &lab.hosts {
        // (a lab host is named like `h1`, as the page's heading tag is)
        for shown in [
            format!(">{}<", h.name),
            format!("@{}", h.name),
            h.address.to_string(),
        ] {
            assert!(!html.contains(&shown), "{shown} on the public page: {html}");
        }
    }

    // A host cut off: its instances count as down within seconds, the
    // others stay up, and no status call waits on the lost host for long.
    let cut = lab.hosts[0].name.clone();
    lab.fault(&cut, "cut");
    let mut slowest = Duration::ZERO;
    wait_until(
        "the cut host's instances counted down",
        Duration::from_secs(30),
        || {
            let started = std::time::Instant::now();
            let status = g.status();
            slowest = slowest.max(started.elapsed());
            let rows = &status
                .environments
                .iter()
                .find(|e| e.name == "production")
                .unwrap()
                .hosts;
            rows.iter().all(|r| (r.up == 0) == (r.host == cut))
        },
    );
    assert!(
        slowest < Duration::from_secs(8),
        "a status call took {slowest:?}"
    );
    let page = g.call(g.client().status_page());
    let env = page
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(env.fleet.map(|f| f.serving), Some(2), "{env:?}");
}
