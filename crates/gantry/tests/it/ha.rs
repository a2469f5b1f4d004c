//! Several controllers on one PostgreSQL database (a throwaway server the
//! test starts), with real processes: one leads, the other follows and
//! forwards writes; the leader SIGKILLed mid-canary under load is replaced
//! within seconds and the rollout ends with no failed request; a leader
//! SIGSTOPped past its lease and continued writes nothing (checked in the
//! database, where each event names the epoch it was recorded under); a
//! leader killed mid-rolling update is replaced too; two controllers racing
//! into one environment start one deployment.
//!
//! The controllers share one data directory, as two controllers on one
//! machine with a shared volume would: the directory holds what adoption
//! needs besides the database (the routers' admin files and their token,
//! the instances' meta files and the marker that finds them in /proc, the
//! unpacked releases and artifacts, the audit signing key, the admin token).

use crate::harness::*;
use crate::postgres::server;
use gantry_api::client::Client;
use gantry_api::ClusterView;
use gantry_store::test_postgres::TestPostgres;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A canary whose first step (10%) lasts long enough to lose a leader in.
const CANARY: &str = r#"strategy = "canary"
canary = { steps = [{ weight = 10, pause = "5s" }, { weight = 50, pause = "2s" }, { weight = 100 }], interval = "250ms", max_wait = "20s", promotion_tolerance = 0.1 }
"#;

/// Another controller on the same data directory and database, listening
/// on a port of its own; SIGKILLed when dropped.
struct Peer {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Peer {
    fn start(g: &Gantry, database: &str, name: &str) -> Peer {
        let port = free_port();
        let log = g.dir.path().join(format!("controller-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(GANTRY)
            .arg("--data-dir")
            .arg(g.data())
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(g.config_path())
            .env("GANTRY_DATABASE_URL", database)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let peer = Peer {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        wait_until(
            &format!("controller {name} to answer"),
            Duration::from_secs(60),
            || {
                matches!(
                    try_http(&peer.url, "GET", "/healthz", None, ""),
                    Ok((200, _))
                )
            },
        );
        peer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// The cluster as the controller at `url` sees it.
fn cluster(g: &Gantry, url: &str) -> ClusterView {
    let client = Client::new(url, g.token()).unwrap();
    g.call(client.cluster())
}

/// Deployment `id` once finished, as the controller at `url` serves it,
/// polled until `within` has passed.
fn finished_at(g: &Gantry, url: &str, id: i64, within: Duration) -> gantry_core::Deployment {
    let deadline = Instant::now() + within;
    loop {
        let d = deployment_at(g, url, id);
        if d.phase.is_terminal() {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} never finished: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The deployment as the controller at `url` serves it.
fn deployment_at(g: &Gantry, url: &str, id: i64) -> gantry_core::Deployment {
    let client = Client::new(url, g.token()).unwrap();
    g.call(client.deployment(id)).deployment
}

/// A rolling update whose batches are judged long enough to lose a leader in.
const ROLLING: &str = r#"strategy = "rolling"
rolling = { max_surge = 1, max_unavailable = 0, analysis = "3s" }
"#;

/// Production on PostgreSQL with 1.0.0 serving under load, 1.1.0 registered,
/// and a second controller following the first.
fn two_controllers(pg: &TestPostgres) -> (Gantry, Peer, String, Load) {
    two_controllers_with(pg, CANARY)
}

/// [`two_controllers`] with production's strategy set by `tail`.
fn two_controllers_with(pg: &TestPostgres, tail: &str) -> (Gantry, Peer, String, Load) {
    let database = pg.fresh_database().unwrap();
    let g = Gantry::start_with_env_and_tail("300ms", &[("GANTRY_DATABASE_URL", &database)], tail);
    let peer = Peer::start(&g, &database, "b");
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until("stable traffic", Duration::from_secs(10), || {
        load.ok.load(Ordering::Relaxed) > 200
    });
    (g, peer, database, load)
}

#[test]
fn a_follower_serves_reads_forwards_writes_and_both_show_the_cluster() {
    let Some(pg) = server("follower forwards writes") else {
        return;
    };
    let database = pg.fresh_database().unwrap();
    let g = Gantry::start_full("300ms", "", &[("GANTRY_DATABASE_URL", &database)]);
    let leader_url = g.api_url();
    let peer = Peer::start(&g, &database, "b");

    // Both see both, and agree on the leader and its epoch.
    wait_until(
        "both controllers' heartbeats",
        Duration::from_secs(10),
        || cluster(&g, &peer.url).controllers.len() == 2,
    );
    let (from_leader, from_peer) = (cluster(&g, &leader_url), cluster(&g, &peer.url));
    assert_eq!(from_peer.store, "postgresql");
    assert!(from_leader.this_leads && !from_peer.this_leads);
    let lease = from_peer.lease.clone().unwrap();
    assert_eq!(lease.holder, from_leader.this);
    assert_eq!(lease.api_url, leader_url);
    assert_eq!(from_leader.lease.unwrap().epoch, lease.epoch);
    assert!(lease.live);
    let left = lease.expires_at.unwrap() - from_peer.observed_at;
    assert!(
        (0..=3_000).contains(&left),
        "the default lease is 3s: {left} ms left"
    );

    // A write sent to the follower is done by the leader, once.
    let artifact = g.artifact("1.0.0", "");
    let at_peer = |args: &[&str]| {
        let mut all = vec!["--server", peer.url.as_str()];
        all.extend_from_slice(args);
        g.gantry(&all)
    };
    at_peer(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        artifact.to_str().unwrap(),
    ])
    .ok();
    let run = at_peer(&["deploy", "1.0.0", "--env", "production"]).ok();
    assert!(
        run.stdout.contains("1.0.0 serves production"),
        "{}",
        run.stdout
    );
    assert_eq!(
        g.get_env("production"),
        (200, "hello from 1.0.0\n".to_owned())
    );
    let deployed: Vec<_> = g
        .audit_records()
        .into_iter()
        .filter(|r| r.entry.action == "POST /api/v1/deployments")
        .collect();
    assert_eq!(
        deployed.len(),
        1,
        "audited once, by the leader: {deployed:?}"
    );
    // Reads are the follower's own, from the shared database.
    let status = at_peer(&["status"]).ok();
    assert!(status.stdout.contains("1.0.0"), "{}", status.stdout);
    assert!(
        status.stdout.contains(&format!(
            "controllers (PostgreSQL): leader {}, epoch {}",
            lease.holder, lease.epoch
        )),
        "{}",
        status.stdout
    );
    let shown = at_peer(&["cluster"]).ok().stdout;
    assert!(
        shown.contains("follower") && shown.contains("(this)"),
        "{shown}"
    );
    // A follower does not stop the leader's workloads.
    at_peer(&["shutdown", "--workloads"]).fails_with(1, "this controller follows");
    assert!(!peer.log().contains("leads now"), "{}", peer.log());
}

#[test]
fn the_leader_killed_mid_canary_under_load_is_replaced_within_seconds_and_the_rollout_ends() {
    let Some(pg) = server("leader SIGKILL") else {
        return;
    };
    // A chat channel hears the deployment start and complete, whichever
    // controller dispatches: at least once, and not lost to the failover.
    let chat = Receiver::start(&[200]);
    let tail = format!(
        "{CANARY}\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nevents = [\"starting\", \"complete\"]\n",
        chat.url("/chat")
    );
    let (mut g, mut peer, _database, load) = two_controllers_with(&pg, &tail);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(30), || {
        g.deployment(id)
            .deployment
            .canary
            .is_some_and(|c| c.weight == 10)
    });
    let before = cluster(&g, &peer.url).lease.unwrap();
    let killed = Instant::now();
    g.kill_server();
    // The follower takes the lease once the dead leader's expires, and
    // resumes the deployment (its log says so) under the new epoch.
    wait_until("the follower to lead", Duration::from_secs(15), || {
        cluster(&g, &peer.url).this_leads
    });
    let took_over = killed.elapsed();
    wait_until("the deployment to resume", Duration::from_secs(15), || {
        g.gantry(&["--server", &peer.url, "log", &id.to_string()])
            .ok()
            .stdout
            .contains("took the lease under epoch")
    });
    let resumed = killed.elapsed();
    eprintln!("failover: leader {took_over:?} after SIGKILL, deployment resumed after {resumed:?}");
    assert!(took_over < Duration::from_secs(8), "{took_over:?}");
    let after = cluster(&g, &peer.url).lease.unwrap();
    assert!(after.epoch > before.epoch, "{after:?} after {before:?}");
    assert_eq!(after.api_url, peer.url);

    // The follower, now leader, carries the rollout to its end.
    let d = finished_at(&g, &peer.url, id, Duration::from_secs(60));
    let (ok, failed) = load.finish();
    // The test's Gantry now stops the new leader and its workloads at the end.
    g.server = peer.child.take();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    assert!(ok > 100, "{ok}");
    let log = g.gantry(&["log", &id.to_string()]).ok().stdout;
    for line in [
        "took the lease under epoch",
        "resuming in phase canary",
        "traffic: 50% to 1.1.0",
        "canary complete",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    assert_eq!(
        g.running_instances(),
        ["production-d2-1", "production-d2-2"]
    );
    g.gantry(&["audit", "verify"]).ok();
    let heard = |what: &str| {
        chat.received()
            .iter()
            .filter(|r| {
                r.json()["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(what) && t.contains(&format!("deployment {id}")))
            })
            .count()
    };
    wait_until(
        "the completion told after the failover",
        Duration::from_secs(20),
        || heard("is live in production") >= 1,
    );
    assert!(
        heard("starting") >= 1,
        "the start, told before the kill or after it"
    );
}

/// `SELECT max(seq)` of the rows of `table` recorded under `epoch`.
fn last_written(database: &str, table: &str, epoch: u64) -> Option<i64> {
    let mut c = postgres::Client::connect(database, postgres::NoTls).unwrap();
    c.query_one(
        &format!("SELECT MAX(seq) FROM {table} WHERE epoch = $1"),
        &[&(epoch as i64)],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_leader_paused_past_its_lease_writes_nothing_once_continued() {
    let Some(pg) = server("leader SIGSTOP") else {
        return;
    };
    let (mut g, mut peer, database, load) = two_controllers(&pg);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(30), || {
        g.deployment(id)
            .deployment
            .canary
            .is_some_and(|c| c.weight == 10)
    });
    let old = cluster(&g, &peer.url).lease.unwrap();
    let paused = g.server.take().unwrap();
    signal(&paused, nix::sys::signal::Signal::SIGSTOP);
    wait_until("the follower to lead", Duration::from_secs(15), || {
        cluster(&g, &peer.url).this_leads
    });
    let new = cluster(&g, &peer.url).lease.unwrap();
    assert!(new.epoch > old.epoch);
    // What the paused leader had written, and nothing after: its term ended.
    let events_then = last_written(&database, "events", old.epoch);
    let log_then = last_written(&database, "deployment_log", old.epoch);
    assert!(
        events_then.is_some(),
        "the old leader recorded the canary's start"
    );

    signal(&paused, nix::sys::signal::Signal::SIGCONT);
    let old_url = old.api_url.clone();
    wait_until(
        "the old leader to step down",
        Duration::from_secs(15),
        || !cluster(&g, &old_url).this_leads && g.controller_log().contains("stepping down"),
    );
    let d = finished_at(&g, &peer.url, id, Duration::from_secs(60));
    let (ok, failed) = load.finish();
    // The new leader is the one to stop at the end; the old one is killed.
    g.server = peer.child.take();
    let mut paused = paused;
    let _ = paused.kill();
    let _ = paused.wait();

    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    // In the database: no event or log line of the old term after the
    // takeover, and the rest of the rollout under the new epoch.
    assert_eq!(last_written(&database, "events", old.epoch), events_then);
    assert_eq!(
        last_written(&database, "deployment_log", old.epoch),
        log_then
    );
    assert!(last_written(&database, "events", new.epoch) > events_then);
    let mut c = postgres::Client::connect(&database, postgres::NoTls).unwrap();
    let foreign: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM events WHERE deployment = $1 AND seq > $2 AND epoch IS DISTINCT FROM $3",
            &[&id, &events_then.unwrap(), &(new.epoch as i64)],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        foreign, 0,
        "every event after the takeover is the new leader's"
    );
    let stepped = g.controller_log();
    let why = stepped
        .lines()
        .find(|l| l.contains("stepping down"))
        .unwrap_or_else(|| panic!("the old leader said why it stopped:\n{stepped}"));
    eprintln!("the continued leader: {why}");
    g.gantry(&["audit", "verify"]).ok();
}

/// Two controllers asked at the same moment to deploy into one environment
/// (production, whose router already holds its address; one request goes
/// directly, one through the follower, which forwards to the leader):
/// exactly one deployment starts, the other request is told the environment
/// is busy and by which deployment.
#[test]
fn two_controllers_racing_into_one_environment_start_one_deployment_and_name_it_to_the_other() {
    let Some(pg) = server("racing controllers") else {
        return;
    };
    let (mut g, mut peer, _database, load) = two_controllers(&pg);
    let urls = [g.api_url(), peer.url.clone()];
    let runs: Vec<Run> = std::thread::scope(|s| {
        let g = &g;
        let handles: Vec<_> = urls
            .iter()
            .map(|url| {
                s.spawn(move || {
                    g.gantry(&[
                        "--server",
                        url,
                        "deploy",
                        "1.1.0",
                        "--env",
                        "production",
                        "--detach",
                    ])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one starts: {:?}",
        runs.iter()
            .map(|r| (r.code, &r.stdout, &r.stderr))
            .collect::<Vec<_>>()
    );
    let holder = deploy_id(won[0]);
    let lost = runs.iter().find(|r| r.code != 0).unwrap();
    assert!(
        lost.stderr.contains(&format!(
            "environment production already has deployment {holder} of 1.1.0 in progress"
        )),
        "{}",
        lost.stderr
    );
    // 1.0.0's deployment, and the one that won.
    assert_eq!(g.deployments(Some("production")).len(), 2);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered");
    g.server = peer.child.take().or(g.server.take());
}

/// Failover figures, run by hand (`cargo test -p gantry --test it -- --ignored
/// failover_figures --nocapture`): the leader SIGKILLed at a canary's first
/// step, twenty times; how long until the follower leads and until the
/// deployment resumes (docs/benchmarks.md).
#[test]
#[ignore = "a benchmark: run by hand"]
fn failover_figures() {
    let Some(pg) = server("failover figures") else {
        return;
    };
    let mut leads = Vec::new();
    let mut resumes = Vec::new();
    for round in 0..20 {
        let (mut g, mut peer, _database, load) = two_controllers(&pg);
        let id = deploy_id(
            &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
                .ok(),
        );
        wait_until("the 10% step", Duration::from_secs(30), || {
            g.deployment(id)
                .deployment
                .canary
                .is_some_and(|c| c.weight == 10)
        });
        let killed = Instant::now();
        g.kill_server();
        wait_until("the follower to lead", Duration::from_secs(15), || {
            cluster(&g, &peer.url).this_leads
        });
        leads.push(killed.elapsed());
        wait_until("the deployment to resume", Duration::from_secs(15), || {
            g.gantry(&["--server", &peer.url, "log", &id.to_string()])
                .ok()
                .stdout
                .contains("resuming in phase")
        });
        resumes.push(killed.elapsed());
        let (_, failed) = load.finish();
        eprintln!(
            "round {round}: leads {:?}, resumed {:?}, failed requests {failed}",
            leads[round], resumes[round]
        );
        assert_eq!(failed, 0);
        g.server = peer.child.take();
    }
    let spread = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[(v.len() * 9).div_ceil(10) - 1])
    };
    let (lm, lp) = spread(&mut leads);
    let (rm, rp) = spread(&mut resumes);
    eprintln!("failover over 20 SIGKILLs (lease 3s, renew 1s): leads median {lm:?} p90 {lp:?}; resumed median {rm:?} p90 {rp:?}");
}

/// The leader SIGKILLed in the middle of a judged rolling update under load:
/// the follower takes over, resumes the batch it was in, and the update
/// ends with every instance replaced and no failed request.
#[test]
fn the_leader_killed_mid_rolling_update_is_replaced_and_the_update_ends() {
    let Some(pg) = server("leader SIGKILL mid-rolling") else {
        return;
    };
    let (mut g, mut peer, _database, load) = two_controllers_with(&pg, ROLLING);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until(
        "the first batch to be judged",
        Duration::from_secs(30),
        || {
            g.deployment(id).deployment.phase == Phase::Rolling
                && !g.deployment(id).deployment.new_instances.is_empty()
        },
    );
    g.kill_server();
    wait_until("the follower to lead", Duration::from_secs(15), || {
        cluster(&g, &peer.url).this_leads
    });
    let d = finished_at(&g, &peer.url, id, Duration::from_secs(90));
    let (ok, failed) = load.finish();
    g.server = peer.child.take();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    let log = g.gantry(&["log", &id.to_string()]).ok().stdout;
    assert!(log.contains("took the lease under epoch"), "{log}");
    assert!(log.contains("resuming in phase rolling"), "{log}");
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    assert_eq!(
        g.running_instances().len(),
        2,
        "{:?}",
        g.running_instances()
    );
    g.gantry(&["audit", "verify"]).ok();
}

/// PostgreSQL restarted mid-rollout (its own server, so no other test
/// feels it): the controller's writes and lease renewals fail while it is
/// down and are retried; the routers keep serving; once it is back the
/// controller reconnects, leads again and the canary ends promoted, with
/// no failed request and the audit chain intact.
#[test]
fn postgresql_restarted_mid_rollout_is_reconnected_to_and_the_rollout_ends() {
    let pg = match TestPostgres::start() {
        Ok(pg) => pg,
        Err(reason) if std::env::var_os("GANTRY_REQUIRE_POSTGRES").is_some() => {
            panic!("PostgreSQL is required here: {reason}")
        }
        Err(reason) => return eprintln!("skipping: {reason}"),
    };
    let database = pg.fresh_database().unwrap();
    let g = Gantry::start_with_env_and_tail("300ms", &[("GANTRY_DATABASE_URL", &database)], CANARY);
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until("stable traffic", Duration::from_secs(10), || {
        load.ok.load(Ordering::Relaxed) > 200
    });
    let id = deploy_id(
        &g.gantry(&["deploy", "1.1.0", "--env", "production", "--detach"])
            .ok(),
    );
    wait_until("the 10% step", Duration::from_secs(30), || {
        g.deployment(id)
            .deployment
            .canary
            .is_some_and(|c| c.weight == 10)
    });
    pg.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let d = loop {
        if let Ok(d) = g.try_call(g.client().deployment(id)) {
            if d.phase.is_terminal() {
                break d.deployment;
            }
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} never finished:\n{}",
            g.controller_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ok, failed) = load.finish();
    assert_eq!(d.phase, Phase::Succeeded, "{d:?}");
    assert_eq!(failed, 0, "no user request failed ({ok} succeeded)");
    assert_eq!(g.get_env("production").1, "hello from 1.1.0\n");
    g.gantry(&["audit", "verify"]).ok();
}
