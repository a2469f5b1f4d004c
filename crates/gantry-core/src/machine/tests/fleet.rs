//! Rolling over a fleet, played against a simulated fleet: each effect is
//! carried out on per-host instances and routers (with the fleet router's
//! rules: a routing is split by host, a host it does not name keeps its
//! routing, a host with one empty pool gives the other all of it), and
//! answered with the event the runtime would send.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const OLD: Version = Version::new(1, 0, 0);
const NEW: Version = Version::new(1, 1, 0);

fn old_of(host: &str, k: u32) -> InstanceRef {
    InstanceRef {
        id: format!("{host}-old{k}"),
        port: 8000 + k as u16,
        host: Some(host.to_owned()),
    }
}

fn new_of(host: &str, k: u32) -> InstanceRef {
    InstanceRef {
        id: format!("{host}-new{k}"),
        port: 9000 + k as u16,
        host: Some(host.to_owned()),
    }
}

/// Waves as (name, batches of host names).
type Plan<'a> = &'a [(&'a str, &'a [&'a [&'a str]])];

fn fleet_deploy(plan: Plan<'_>, max_failed: u32, per_host: u32) -> Deployment {
    let waves: Vec<FleetWave> = plan
        .iter()
        .map(|(name, batches)| FleetWave {
            name: (*name).to_owned(),
            batches: batches
                .iter()
                .map(|b| b.iter().map(|h| (*h).to_owned()).collect())
                .collect(),
        })
        .collect();
    let fleet = FleetSettings { waves, max_failed };
    let mut s = settings();
    s.instances = per_host;
    s.strategy = StrategySettings::Rolling(RollingSettings {
        max_surge: 1,
        max_unavailable: 0,
        judge: None,
    });
    let old_instances = fleet
        .hosts()
        .flat_map(|h| (1..=per_host).map(move |k| old_of(h, k)))
        .collect();
    s.fleet = Some(fleet);
    Deployment::new(
        NewDeployment {
            id: 7,
            env: "production".parse().unwrap(),
            kind: DeploymentKind::Deploy,
            version: NEW,
            previous_version: Some(OLD),
            old_instances,
            settings: s,
            requested_by: "alice".into(),
        },
        0,
    )
}

/// Two waves of three hosts: eu in batches [h1] [h2 h3], us in [h4] [h5] [h6].
const TWO_WAVES: Plan<'static> = &[
    ("eu", &[&["h1"], &["h2", "h3"]]),
    ("us", &[&["h4"], &["h5"], &["h6"]]),
];

/// How a host misbehaves with the new release.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The target cannot start anything there.
    StartFails,
    /// Its new instances exit at this time (or at once if started later).
    Crash(Millis),
    /// Its new instances answer healthy once, then unhealthy.
    Sick,
    /// Its new instances never answer healthy.
    NeverUp,
    /// Its new instances are up but fail 5% of the requests they serve.
    Errors,
}

enum Item {
    Answer(Effect),
    Crash(String),
    Send(Event),
}

/// A fleet that carries out effects and answers them in time order.
struct World {
    hosts: Vec<String>,
    /// Running instances: id → (host, runs the new release).
    running: BTreeMap<String, (String, bool)>,
    /// What each host's router sends traffic to.
    routing: BTreeMap<String, BTreeSet<String>>,
    faults: BTreeMap<String, Fault>,
    /// Hosts whose new instances crashed (later ones exit too).
    crashed: BTreeSet<String>,
    /// Sick instances that answered healthy once.
    answered: BTreeSet<String>,
    queue: Vec<(Millis, u64, Item)>,
    seq: u64,
    now: Millis,
    log: Vec<String>,
    effects: Vec<Effect>,
    transcript: String,
    /// Each host's canary weight (its last `ShiftTraffic`).
    weights: BTreeMap<String, u32>,
    /// Cumulative counts each host's router gave the new and the old release.
    served: BTreeMap<String, (Counts, Counts)>,
    /// The hosts the runtime counts for the analysis (`waves::current_hosts`).
    scope: Option<Vec<String>>,
}

impl World {
    fn new(d: &Deployment, faults: BTreeMap<String, Fault>) -> World {
        let mut w = World {
            hosts: d
                .settings
                .fleet
                .as_ref()
                .unwrap()
                .hosts()
                .cloned()
                .collect(),
            running: BTreeMap::new(),
            routing: BTreeMap::new(),
            faults,
            crashed: BTreeSet::new(),
            answered: BTreeSet::new(),
            queue: Vec::new(),
            seq: 0,
            now: 0,
            log: Vec::new(),
            effects: Vec::new(),
            transcript: String::new(),
            weights: BTreeMap::new(),
            served: BTreeMap::new(),
            scope: None,
        };
        for i in &d.old_instances {
            let h = i.host.clone().unwrap();
            w.running.insert(i.id.clone(), (h.clone(), false));
            w.routing.entry(h).or_default().insert(i.id.clone());
        }
        let crashes: Vec<(Millis, String)> = w
            .faults
            .iter()
            .filter_map(|(h, f)| match f {
                Fault::Crash(at) => Some((*at, h.clone())),
                _ => None,
            })
            .collect();
        for (at, h) in crashes {
            w.push(at, Item::Crash(h));
        }
        w
    }

    fn push(&mut self, at: Millis, item: Item) {
        self.seq += 1;
        self.queue.push((at, self.seq, item));
    }

    fn pop(&mut self) -> Option<(Millis, Item)> {
        let (pos, _) = self
            .queue
            .iter()
            .enumerate()
            .min_by_key(|(_, (at, seq, _))| (*at, *seq))?;
        let (at, _, item) = self.queue.remove(pos);
        Some((at, item))
    }

    fn host_of(i: &InstanceRef) -> String {
        i.host.clone().unwrap()
    }

    fn set_routing(&mut self, stable: &[InstanceRef], canary: &[InstanceRef], weight: u32) {
        for h in self.hosts.clone() {
            let s: BTreeSet<String> = stable
                .iter()
                .filter(|i| Self::host_of(i) == h)
                .map(|i| i.id.clone())
                .collect();
            let c: BTreeSet<String> = canary
                .iter()
                .filter(|i| Self::host_of(i) == h)
                .map(|i| i.id.clone())
                .collect();
            let to = match (s.is_empty(), c.is_empty()) {
                (true, true) => continue,
                (false, true) => s,
                (true, false) => c,
                _ if weight == 0 => s,
                _ if weight >= 100 => c,
                _ => s.union(&c).cloned().collect(),
            };
            self.weights.insert(h.clone(), weight);
            self.routing.insert(h, to);
        }
    }

    /// Carries out `e` and gives the event that answers it, if any.
    fn answer(&mut self, e: Effect) -> Option<Event> {
        let now = self.now;
        Some(match e {
            Effect::PrepareRelease { .. } => Event::Prepared,
            Effect::RunHooks { .. } | Effect::RunMigration { .. } => return None,
            Effect::StartInstances { count, hosts, .. } => {
                let hosts = if hosts.is_empty() {
                    self.hosts.clone()
                } else {
                    hosts
                };
                let mut instances = Vec::new();
                let mut failed_hosts = BTreeMap::new();
                for h in hosts {
                    if self.faults.get(&h) == Some(&Fault::StartFails) {
                        failed_hosts.insert(h, "ssh: connection refused".to_owned());
                        continue;
                    }
                    for k in 1..=count {
                        let i = new_of(&h, k);
                        if !self.running.contains_key(&i.id) {
                            self.running.insert(i.id.clone(), (h.clone(), true));
                            if self.crashed.contains(&h) {
                                self.push(now + 5, Item::Crash(h.clone()));
                            }
                        }
                        instances.push(i);
                    }
                }
                Event::InstancesStarted {
                    instances,
                    failed_hosts,
                }
            }
            Effect::ProbeHealth { instance, .. } => {
                let h = Self::host_of(&instance);
                let probe = if !self.running.contains_key(&instance.id) {
                    Probe::Unreachable("connection refused".into())
                } else if !self.running[&instance.id].1 {
                    Probe::Healthy
                } else {
                    match self.faults.get(&h) {
                        Some(Fault::NeverUp) => Probe::Unreachable("connection refused".into()),
                        Some(Fault::Sick) if !self.answered.insert(instance.id.clone()) => {
                            Probe::Unhealthy("HTTP 500".into())
                        }
                        _ => Probe::Healthy,
                    }
                };
                Event::HealthObserved {
                    instance: instance.id,
                    probe,
                }
            }
            Effect::RouteTraffic { instances, to_new } => {
                self.set_routing(&instances, &[], 0);
                Event::TrafficRouted { to_new }
            }
            Effect::ShiftTraffic {
                weight,
                stable,
                canary,
            } => {
                self.set_routing(&stable, &canary, weight);
                Event::TrafficRouted { to_new: true }
            }
            Effect::StopInstances { instances } => {
                for i in instances {
                    self.running.remove(&i.id);
                }
                Event::InstancesStopped
            }
            Effect::RestoreInstances { instances, .. } => {
                for i in instances {
                    self.running
                        .insert(i.id.clone(), (Self::host_of(&i), false));
                }
                Event::InstancesRestored
            }
            Effect::WakeAt { .. } => Event::Tick,
            Effect::RunSmoke { .. } => Event::SmokeFinished {
                results: Vec::new(),
            },
            Effect::ObserveBaseline => Event::BaselineObserved {
                baseline: Baseline {
                    requests: 10_000,
                    errors: 10,
                    p50_ms: 5.0,
                    p99_ms: 20.0,
                    queries: Default::default(),
                },
            },
            Effect::ObserveMetrics { .. } => self.observe(),
            Effect::ObserveResources { .. } => return None,
        })
    }

    /// A second of traffic, 1,000 requests per host split by its routing
    /// (errors: 0.1%, 5% for new instances on a host with `Fault::Errors`),
    /// then the cumulative counts on the hosts in scope.
    fn observe(&mut self) -> Event {
        for h in self.hosts.clone() {
            let new_share = match self.serves(&h) {
                Some(true) => 1000,
                Some(false) => 0,
                None => 10 * self.weights.get(&h).copied().unwrap_or(0) as u64,
            };
            let bad = self.faults.get(&h) == Some(&Fault::Errors);
            let (new, old) = self.served.entry(h).or_default();
            new.requests += new_share;
            new.errors += if bad {
                new_share / 20
            } else {
                new_share / 1000
            };
            old.requests += 1000 - new_share;
            old.errors += (1000 - new_share) / 1000;
        }
        let scope = self.scope.clone().unwrap_or_else(|| self.hosts.clone());
        let (mut canary, mut stable) = (Counts::default(), Counts::default());
        let mut hosts = BTreeMap::new();
        for h in &scope {
            let (new, old) = self.served.get(h).copied().unwrap_or_default();
            canary.requests += new.requests;
            canary.errors += new.errors;
            stable.requests += old.requests;
            stable.errors += old.errors;
            hosts.insert(h.clone(), new);
        }
        Event::MetricsObserved {
            canary,
            stable,
            hosts,
            queries: Default::default(),
            resources: Vec::new(),
        }
    }

    fn schedule(&mut self, effects: Vec<Effect>) {
        for e in effects {
            self.effects.push(e.clone());
            let at = match &e {
                Effect::ProbeHealth { at, .. } | Effect::WakeAt { at } => (*at).max(self.now),
                _ => self.now + 10,
            };
            self.push(at, Item::Answer(e));
        }
    }

    /// Steps `d` with `event` now, records the transcript, queues the effects.
    fn feed(&mut self, d: &Deployment, event: &Event) -> Deployment {
        let t = step(d, event, self.now);
        if !matches!(event, Event::HealthObserved { .. } | Event::Tick) || !t.log.is_empty() {
            writeln!(
                self.transcript,
                "@{} {} → {}",
                self.now,
                serde_json::to_string(event).unwrap(),
                t.deployment.phase
            )
            .unwrap();
            for e in &t.effects {
                if !matches!(e, Effect::ProbeHealth { .. } | Effect::WakeAt { .. }) {
                    writeln!(
                        self.transcript,
                        "  effect: {}",
                        serde_json::to_string(e).unwrap()
                    )
                    .unwrap();
                }
            }
            for l in &t.log {
                writeln!(self.transcript, "  log: {l}").unwrap();
            }
        }
        self.log.extend(t.log.iter().cloned());
        self.scope = waves::current_hosts(&t.deployment);
        self.schedule(t.effects);
        t.deployment
    }

    /// Runs `d` from creation until it finishes (or `limit` events pass).
    fn run(&mut self, d: Deployment, limit: usize) -> Deployment {
        let mut d = self.feed(&d, &Event::Created);
        for _ in 0..limit {
            if d.phase.is_terminal() {
                break;
            }
            let Some((at, item)) = self.pop() else { break };
            self.now = at;
            let event = match item {
                Item::Answer(e) => match self.answer(e) {
                    Some(ev) => ev,
                    None => continue,
                },
                Item::Send(ev) => ev,
                // The rollout is over once it drains (as for one machine,
                // the watch on new instances ends with it).
                Item::Crash(_) if d.phase == Phase::Draining => continue,
                Item::Crash(h) => {
                    self.crashed.insert(h.clone());
                    let gone: Vec<String> = self
                        .running
                        .iter()
                        .filter(|(_, (host, new))| *host == h && *new)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in gone {
                        self.running.remove(&id);
                        let ev = Event::InstanceExited {
                            instance: id,
                            detail: "exit status 1".into(),
                        };
                        self.push(at, Item::Send(ev));
                    }
                    continue;
                }
            };
            d = self.feed(&d, &event);
        }
        d
    }

    /// The release each host's router serves: `Some(true)` new only,
    /// `Some(false)` old only, `None` mixed, empty or dead.
    fn serves(&self, host: &str) -> Option<bool> {
        let to = self.routing.get(host)?;
        let kinds: BTreeSet<bool> = to
            .iter()
            .map(|id| self.running.get(id).map(|(_, new)| *new))
            .collect::<Option<_>>()?;
        match kinds.len() {
            1 => kinds.into_iter().next(),
            _ => None,
        }
    }

    fn starts(&self) -> Vec<Vec<String>> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartInstances { hosts, .. } => Some(hosts.clone()),
                _ => None,
            })
            .collect()
    }
}

fn faults(list: &[(&str, Fault)]) -> BTreeMap<String, Fault> {
    list.iter().map(|(h, f)| ((*h).to_owned(), *f)).collect()
}

fn lines_with<'a>(log: &'a [String], part: &str) -> Vec<&'a str> {
    log.iter()
        .filter(|l| l.contains(part))
        .map(String::as_str)
        .collect()
}

#[test]
fn batches_walk_two_waves_in_order_with_a_bake_between() {
    let d = fleet_deploy(TWO_WAVES, 0, 1);
    let mut w = World::new(&d, BTreeMap::new());
    let d = w.run(d, 2000);
    insta::assert_snapshot!(w.transcript);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    // Each start asks for every live host begun so far; one batch more each time.
    assert_eq!(
        w.starts(),
        [
            vec!["h1"],
            vec!["h1", "h2", "h3"],
            vec!["h1", "h2", "h3", "h4"],
            vec!["h1", "h2", "h3", "h4", "h5"],
            vec!["h1", "h2", "h3", "h4", "h5", "h6"],
        ]
    );
    assert_eq!(
        lines_with(&w.log, ": batch "),
        [
            "wave eu: batch 1/2: hosts h1",
            "wave eu: batch 2/2: hosts h2, h3",
            "wave us: batch 1/3: hosts h4",
            "wave us: batch 2/3: hosts h5",
            "wave us: batch 3/3: hosts h6",
        ]
    );
    // The bake sits between the waves: its tick comes after the last
    // routing of eu and before the first start in us.
    let bake = w
        .log
        .iter()
        .position(|l| l == "wave eu: healthy through the 3s bake")
        .expect("eu bakes");
    let us = w
        .log
        .iter()
        .position(|l| l.starts_with("wave us (2/2) begins"))
        .unwrap();
    assert!(bake < us);
    assert!(
        lines_with(&w.log, "wave us: baking").is_empty(),
        "the last wave does not bake"
    );
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }
    assert!(
        w.running.values().all(|(_, new)| *new),
        "old instances drained"
    );
    assert!(d.failed_hosts.is_empty());
}

#[test]
fn routing_moves_one_batch_of_hosts_at_a_time() {
    let d = fleet_deploy(TWO_WAVES, 0, 2);
    let mut w = World::new(&d, BTreeMap::new());
    let d = w.run(d, 4000);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    // Each routing: canary = every new instance so far, stable = the old
    // instances of hosts not switched yet; weights by counts.
    let shifts: Vec<(u32, usize, usize)> = w
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::ShiftTraffic {
                weight,
                stable,
                canary,
            } => Some((*weight, canary.len(), stable.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        shifts,
        [
            (17, 2, 10),
            (50, 6, 6),
            (67, 8, 4),
            (83, 10, 2),
            (100, 12, 0)
        ]
    );
    // Stops: the batch's old instances, two per host.
    let stops: Vec<usize> = w
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::StopInstances { instances } => Some(instances.len()),
            _ => None,
        })
        .collect();
    assert_eq!(stops, [2, 4, 2, 2, 2, 12], "batches, then the drain");
}

#[test]
fn a_host_failing_within_max_failed_is_recorded_skipped_and_keeps_the_old_release() {
    let d = fleet_deploy(TWO_WAVES, 1, 1);
    let mut w = World::new(&d, faults(&[("h2", Fault::StartFails)]));
    let d = w.run(d, 2000);
    insta::assert_snapshot!(w.transcript);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert_eq!(
        d.failed_hosts.keys().collect::<Vec<_>>(),
        ["h2"],
        "{:?}",
        d.failed_hosts
    );
    assert!(d.failed_hosts["h2"].contains("connection refused"));
    // Left out of every later start.
    for hosts in &w.starts()[2..] {
        assert!(!hosts.contains(&"h2".to_owned()), "{hosts:?}");
    }
    assert_eq!(w.serves("h2"), Some(false), "h2 keeps the old release");
    assert!(w.running.contains_key("h2-old1"), "never drained");
    for h in w.hosts.iter().filter(|h| *h != "h2") {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }
    assert!(w
        .log
        .iter()
        .any(|l| l == "1 of at most 1 host(s) failed; going on without h2"));
    // What serves afterwards: every new instance, and h2's old one.
    let serving: BTreeSet<String> = d
        .serving_after_success()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let running: BTreeSet<String> = w.running.keys().cloned().collect();
    assert_eq!(serving, running);
    assert!(serving.contains("h2-old1"));
}

#[test]
fn a_switched_host_that_fails_later_goes_back_to_the_old_release() {
    // h1 takes the new release in batch 1; its instance crashes as us begins.
    let d = fleet_deploy(TWO_WAVES, 1, 1);
    let mut w = World::new(&d, faults(&[("h1", Fault::Crash(3105))]));
    let d = w.run(d, 3000);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert!(
        d.failed_hosts["h1"].contains("exited"),
        "{:?}",
        d.failed_hosts
    );
    assert!(w.effects.contains(&Effect::RestoreInstances {
        version: OLD,
        instances: vec![old_of("h1", 1)]
    }));
    assert_eq!(w.serves("h1"), Some(false), "{:?}", w.routing);
    for h in w.hosts.iter().filter(|h| *h != "h1") {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }
    // Restored before it takes traffic, traffic back before its new instance stops.
    let pos = |f: &dyn Fn(&Effect) -> bool| w.effects.iter().position(f).unwrap();
    let restore = pos(&|e| matches!(e, Effect::RestoreInstances { .. }));
    let reroute = pos(
        &|e| matches!(e, Effect::RouteTraffic { instances, to_new: false } if instances == &[old_of("h1", 1)]),
    );
    let stop = pos(
        &|e| matches!(e, Effect::StopInstances { instances } if instances == &[new_of("h1", 1)]),
    );
    assert!(restore < reroute && reroute < stop);

    // Unhealthy past the threshold during the bake between waves: the same.
    let d = fleet_deploy(TWO_WAVES, 1, 1);
    let mut w = World::new(&d, faults(&[("h2", Fault::Sick)]));
    let d = w.run(d, 3000);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert!(
        d.failed_hosts["h2"].contains("health check failed 3 consecutive times"),
        "{:?}",
        d.failed_hosts
    );
    assert_eq!(w.serves("h2"), Some(false));
    assert!(!w.starts().last().unwrap().contains(&"h2".to_owned()));
}

#[test]
fn one_failure_over_max_failed_rolls_every_wave_back() {
    // h1 (wave eu) fails within the budget; h5 (wave us) is one too many.
    let d = fleet_deploy(TWO_WAVES, 1, 1);
    let mut w = World::new(
        &d,
        faults(&[("h1", Fault::NeverUp), ("h5", Fault::StartFails)]),
    );
    let d = w.run(d, 3000);
    insta::assert_snapshot!(w.transcript);
    assert_eq!(d.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    let reason = d.reason.clone().unwrap();
    assert!(
        reason.contains("2 host(s) failed, more than max_failed (1)")
            && reason.contains("h1 (")
            && reason.contains("h5 ("),
        "{reason}"
    );
    // Every retired old instance of both waves came back: every host serves old.
    let restored: BTreeSet<String> = w
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::RestoreInstances { instances, .. } => Some(instances.clone()),
            _ => None,
        })
        .flatten()
        .map(|i| i.id)
        .collect();
    for h in ["h2", "h3", "h4"] {
        assert!(restored.contains(&format!("{h}-old1")), "{h}: {restored:?}");
    }
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}: {:?}", w.routing);
    }
    assert!(
        w.running.values().all(|(_, new)| !new),
        "no new instance runs"
    );
}

#[test]
fn a_failure_in_wave_two_rolls_back_wave_one_s_hosts() {
    let d = fleet_deploy(TWO_WAVES, 0, 1);
    let mut w = World::new(&d, faults(&[("h6", Fault::StartFails)]));
    let d = w.run(d, 3000);
    assert_eq!(d.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    assert!(d.reason.as_deref().unwrap().contains("h6 (could not start"));
    assert!(lines_with(&w.log, "wave eu done").len() == 1, "eu was done");
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
    let restored: usize = w
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::RestoreInstances { instances, .. } => Some(instances.len()),
            _ => None,
        })
        .sum();
    assert_eq!(restored, 5, "h1 to h5 had retired their old instance");
}

#[test]
fn blue_green_on_a_fleet_goes_on_without_a_failed_host_within_budget() {
    let mut d = fleet_deploy(TWO_WAVES, 1, 1);
    d.settings.strategy = StrategySettings::BlueGreen;
    let mut w = World::new(&d, faults(&[("h3", Fault::StartFails)]));
    let done = w.run(d.clone(), 2000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert_eq!(done.failed_hosts.keys().collect::<Vec<_>>(), ["h3"]);
    assert_eq!(w.serves("h3"), Some(false), "untouched by the switch");
    assert!(
        w.running.contains_key("h3-old1"),
        "its old instance is not drained"
    );
    for h in w.hosts.iter().filter(|h| *h != "h3") {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }

    // Over the budget: rolled back, nothing switched.
    let mut w = World::new(
        &d,
        faults(&[("h3", Fault::StartFails), ("h4", Fault::StartFails)]),
    );
    let done = w.run(d.clone(), 2000);
    assert_eq!(done.phase, Phase::RolledBack);
    assert!(done
        .reason
        .unwrap()
        .contains("h3 (could not start: ssh: connection refused); h4"));
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
    assert!(w.running.values().all(|(_, new)| !new));

    // Without a fleet, a start failure is as before: a rollback.
    let mut local = first_deploy();
    local.settings.strategy = StrategySettings::BlueGreen;
    let t = step(&local, &Event::Created, 0);
    let t = step(&t.deployment, &Event::Prepared, 1);
    let t = step(
        &t.deployment,
        &Event::StartFailed {
            reason: "no port".into(),
        },
        2,
    );
    assert_eq!(t.deployment.phase, Phase::RolledBack);
    assert!(t.deployment.failed_hosts.is_empty());
}

/// The stage a deployment stands in, as a short name.
fn stage_name(d: &Deployment) -> String {
    match d.rolling.as_ref().map(|r| &r.stage) {
        Some(s) => serde_json::to_value(s).unwrap()["stage"]
            .as_str()
            .unwrap()
            .to_owned(),
        None => d.phase.to_string(),
    }
}

/// Effects that matter after a restart (probes and timers aside).
fn outstanding(effects: &[Effect]) -> Vec<&Effect> {
    effects
        .iter()
        .filter(|e| !matches!(e, Effect::ProbeHealth { .. } | Effect::WakeAt { .. }))
        .collect()
}

#[test]
fn resumed_at_any_stage_re_emits_what_the_stage_needs() {
    // Record every state a fleet rollout with one recovered host passes through.
    let d = fleet_deploy(TWO_WAVES, 1, 1);
    let mut states = Vec::new();
    let mut w = World::new(&d, faults(&[("h1", Fault::Crash(3105))]));
    let mut cur = w.feed(&d, &Event::Created);
    while !cur.phase.is_terminal() {
        let Some((at, item)) = w.pop() else { break };
        w.now = at;
        let event = match item {
            Item::Answer(e) => match w.answer(e) {
                Some(ev) => ev,
                None => continue,
            },
            Item::Send(ev) => ev,
            Item::Crash(h) => {
                w.crashed.insert(h.clone());
                for id in ["h1-new1"] {
                    if w.running.remove(id).is_some() {
                        w.push(
                            at,
                            Item::Send(Event::InstanceExited {
                                instance: id.into(),
                                detail: "exit status 1".into(),
                            }),
                        );
                    }
                }
                continue;
            }
        };
        cur = w.feed(&cur, &event);
        states.push(cur.clone());
    }
    assert_eq!(cur.phase, Phase::Succeeded);
    let mut seen = BTreeSet::new();
    for s in &states {
        if s.phase != Phase::Rolling {
            continue;
        }
        let name = stage_name(s);
        let r = s.rolling.as_ref().unwrap();
        let t = step(s, &Event::Resumed, 100_000);
        assert_eq!(t.deployment.rolling, s.rolling, "resuming changes nothing");
        let out = outstanding(&t.effects);
        let ok = match &r.stage {
            RollStage::Start { count, hosts } => {
                out == [&Effect::StartInstances {
                    version: NEW,
                    count: *count,
                    hosts: hosts.clone(),
                }]
            }
            RollStage::Verify => {
                out.is_empty() && t.effects.iter().any(|e| matches!(e, Effect::WakeAt { .. }))
            }
            RollStage::Route { retire } => {
                matches!(out.as_slice(), [Effect::ShiftTraffic { stable, canary, .. }]
                    if canary == &s.new_instances
                        && retire.iter().all(|i| !stable.contains(i)))
            }
            RollStage::Stop { retire } => {
                out == [&Effect::StopInstances {
                    instances: retire.clone(),
                }]
            }
            RollStage::Bake => {
                out.is_empty()
                    && t.effects.contains(&Effect::WakeAt {
                        at: r.stage_since + s.settings.bake_ms as Millis,
                    })
            }
            RollStage::Recover {
                restore,
                reroute,
                stop,
                ..
            } => {
                let want = if !restore.is_empty() {
                    Effect::RestoreInstances {
                        version: OLD,
                        instances: restore.clone(),
                    }
                } else if !reroute.is_empty() {
                    Effect::RouteTraffic {
                        instances: reroute.clone(),
                        to_new: false,
                    }
                } else {
                    Effect::StopInstances {
                        instances: stop.clone(),
                    }
                };
                out == [&want]
            }
            other => panic!("unexpected stage {other:?}"),
        };
        assert!(ok, "resumed at {name}: {:?}", t.effects);
        // Probes of instances already up are re-armed.
        for i in &s.new_instances {
            if s.health.get(&i.id).is_some_and(|h| h.up) {
                assert!(
                    t.effects.iter().any(
                        |e| matches!(e, Effect::ProbeHealth { instance, .. } if instance == i)
                    ),
                    "{name}: {} not re-probed",
                    i.id
                );
            }
        }
        seen.insert(name);
    }
    let want: BTreeSet<String> = ["start", "verify", "route", "stop", "bake", "recover"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(seen, want, "every stage was resumed once at least");
}

fn any_fault() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Fault::StartFails)),
        1 => (0..12_000i64).prop_map(|at| Some(Fault::Crash(at))),
        1 => Just(Some(Fault::Sick)),
        1 => Just(Some(Fault::NeverUp)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever fails, and when: the rollout finishes; then either every
    /// host that did not fail serves the new release (the failed ones the
    /// old, and no more of them than allowed), or every host serves the
    /// old release and no new instance runs. A finished deployment never
    /// moves again.
    #[test]
    fn a_fleet_ends_all_new_but_the_failed_or_all_old(
        host_faults in prop::collection::vec(any_fault(), 6),
        max_failed in 0..3u32,
        per_host in 1..3u32,
        abort_at in prop::option::weighted(0.15, 0..15_000i64),
    ) {
        let d = fleet_deploy(TWO_WAVES, max_failed, per_host);
        let f: BTreeMap<String, Fault> = host_faults
            .iter()
            .enumerate()
            .filter_map(|(n, f)| f.map(|f| (format!("h{}", n + 1), f)))
            .collect();
        let mut w = World::new(&d, f);
        if let Some(at) = abort_at {
            w.push(at, Item::Send(Event::AbortRequested { by: "bob".into() }));
        }
        let end = w.run(d, 20_000);
        prop_assert!(end.phase.is_terminal(), "stuck in {}: {}", stage_name(&end), w.log.join("\n"));
        match end.phase {
            Phase::Succeeded => {
                prop_assert!(end.failed_hosts.len() <= max_failed as usize);
                for h in &w.hosts {
                    let want = !end.failed_hosts.contains_key(h);
                    prop_assert_eq!(w.serves(h), Some(want), "{} in {:?}\n{}", h, w.routing, w.log.join("\n"));
                }
                let stray: Vec<&String> = w
                    .running
                    .iter()
                    .filter(|(_, (h, new))| *new == end.failed_hosts.contains_key(h))
                    .map(|(id, _)| id)
                    .collect();
                prop_assert!(stray.is_empty(), "left running: {:?}", stray);
            }
            // Failed: aborted before anything changed.
            Phase::RolledBack | Phase::Failed => {
                for h in &w.hosts {
                    prop_assert_eq!(w.serves(h), Some(false), "{} in {:?}\n{}", h, w.routing, w.log.join("\n"));
                }
                prop_assert!(w.running.values().all(|(_, new)| !new), "new instances left: {:?}", w.running);
            }
            other => prop_assert!(false, "ended {other}: {:?}\n{}", end.reason, w.log.join("\n")),
        }
        for e in [Event::Resumed, Event::Tick, Event::AbortRequested { by: "x".into() }, Event::InstancesStopped] {
            let t = step(&end, &e, 99_999);
            prop_assert_eq!(&t.deployment, &end);
            prop_assert!(t.effects.is_empty());
        }
    }
}

#[test]
fn smoke_checks_run_once_on_the_first_batch_before_it_takes_traffic() {
    let mut d = fleet_deploy(TWO_WAVES, 0, 1);
    d.settings.smoke = Some(SmokeSettings {
        checks: vec![SmokeCheck {
            name: "home".into(),
            critical: true,
            timeout_ms: 100,
            probe: SmokeProbe::Command {
                argv: vec!["true".into()],
            },
        }],
        timeout_ms: 1000,
        max_noncritical_failure_ratio: 0.1,
    });
    let mut w = World::new(&d, BTreeMap::new());
    let d = w.run(d, 2000);
    assert_eq!(d.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    let smokes: Vec<(usize, &Vec<InstanceRef>)> = w
        .effects
        .iter()
        .enumerate()
        .filter_map(|(n, e)| match e {
            Effect::RunSmoke { instances } => Some((n, instances)),
            _ => None,
        })
        .collect();
    assert_eq!(smokes.len(), 1, "first batch only");
    assert_eq!(smokes[0].1, &vec![new_of("h1", 1)]);
    let first_route = w
        .effects
        .iter()
        .position(|e| matches!(e, Effect::ShiftTraffic { .. }))
        .unwrap();
    assert!(smokes[0].0 < first_route);
}

/// A canary of 10% then 50% (5 s each) then 100% over `plan`.
fn fleet_canary(plan: Plan<'_>) -> Deployment {
    use crate::analysis::AnalysisPolicy;
    let mut d = fleet_deploy(plan, 0, 1);
    let pause = Pause::For { ms: 5_000 };
    d.settings.strategy = StrategySettings::Canary(CanarySettings {
        steps: vec![
            CanaryStep { weight: 10, pause },
            CanaryStep { weight: 50, pause },
            CanaryStep {
                weight: 100,
                pause: Pause::For { ms: 0 },
            },
        ],
        analysis: AnalysisPolicy::default(),
        interval_ms: 1000,
        max_wait_ms: 60_000,
        promotion_tolerance: STANDARD_PROMOTION_TOLERANCE,
        max_pause_ms: STANDARD_MAX_PAUSE_MS,
    });
    d
}

/// The hosts named by each `ShiftTraffic`, in order.
fn shifted_hosts(effects: &[Effect]) -> Vec<BTreeSet<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ShiftTraffic { stable, canary, .. } => Some(
                stable
                    .iter()
                    .chain(canary)
                    .map(World::host_of)
                    .collect::<BTreeSet<_>>(),
            ),
            _ => None,
        })
        .collect()
}

fn set(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| (*h).to_owned()).collect()
}

#[test]
fn a_canary_walks_the_waves_one_after_another_each_on_its_own_hosts() {
    let d = fleet_canary(TWO_WAVES);
    let mut w = World::new(&d, BTreeMap::new());
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert_eq!(
        w.starts(),
        [vec!["h1", "h2", "h3"], vec!["h4", "h5", "h6"]],
        "each wave starts the new release on its own hosts only"
    );
    let shifts = shifted_hosts(&w.effects);
    let (eu, us) = (set(&["h1", "h2", "h3"]), set(&["h4", "h5", "h6"]));
    assert_eq!(shifts.len(), 6, "three steps per wave: {shifts:?}");
    assert!(shifts[..3].iter().all(|s| *s == eu), "{shifts:?}");
    assert!(shifts[3..].iter().all(|s| *s == us), "{shifts:?}");
    // The second wave begins only after the first baked.
    let order: Vec<&String> = w
        .log
        .iter()
        .filter(|l| l.starts_with("wave ") || l.starts_with("canary complete"))
        .collect();
    assert_eq!(
        order,
        [
            "canary complete in this wave: all its traffic on the new release",
            "wave eu (1/2) done: healthy through the 3s bake; 3 host(s) serve 1.1.0",
            "wave us (2/2) begins: 3 host(s)",
            "canary complete: all traffic on the new release",
        ],
        "{}",
        w.log.join("\n")
    );
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }
    assert!(
        w.running.values().all(|(_, new)| *new),
        "old instances drained after the last wave only"
    );
    // Each wave's analysis spends half the budget.
    assert_eq!(waves::budget_share(&done), 0.5);
}

#[test]
fn a_bad_canary_in_the_second_wave_returns_every_host_of_every_wave_at_once() {
    let d = fleet_canary(TWO_WAVES);
    let mut w = World::new(&d, faults(&[("h5", Fault::Errors)]));
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    let reason = done.reason.clone().unwrap();
    assert!(reason.contains("canary analysis at"), "{reason}");
    assert!(reason.contains("h5"), "the bad host is named: {reason}");
    assert!(
        w.log.iter().any(|l| l == "wave us (2/2) begins: 3 host(s)"),
        "failed in the second wave"
    );
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
    assert!(w.running.values().all(|(_, new)| !new));
    assert!(
        !w.effects
            .iter()
            .any(|e| matches!(e, Effect::RestoreInstances { .. })),
        "the first wave's old instances were still warm: one routing change"
    );
    // The rollback's routing names every host's old instances in one effect.
    let back: Vec<&Effect> = w
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::RouteTraffic { to_new: false, .. }))
        .collect();
    assert_eq!(back.len(), 1);
    if let Effect::RouteTraffic { instances, .. } = back[0] {
        assert_eq!(instances.len(), 6);
    }
}

#[test]
fn blue_green_switches_wave_by_wave_with_a_bake_each() {
    let mut d = fleet_deploy(TWO_WAVES, 0, 2);
    d.settings.strategy = StrategySettings::BlueGreen;
    let mut w = World::new(&d, BTreeMap::new());
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert_eq!(w.starts(), [vec!["h1", "h2", "h3"], vec!["h4", "h5", "h6"]]);
    let switches: Vec<BTreeSet<String>> = w
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::RouteTraffic {
                instances,
                to_new: true,
            } => Some(instances.iter().map(World::host_of).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(
        switches,
        [
            set(&["h1", "h2", "h3"]),
            set(&["h1", "h2", "h3", "h4", "h5", "h6"])
        ]
    );
    assert_eq!(
        lines_with(&w.log, "bake").len(),
        2,
        "a bake per wave: {}",
        w.log.join("\n")
    );
    assert_eq!(done.new_instances.len(), 12);
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }

    // One wave of the fleet: nothing changes from a fleet without waves.
    let mut d = fleet_deploy(&[("all", &[&["h1", "h2"]])], 0, 1);
    d.settings.strategy = StrategySettings::BlueGreen;
    assert!(!waves::active(&d));
    let mut w = World::new(&d, BTreeMap::new());
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::Succeeded);
    assert_eq!(w.starts(), [Vec::<String>::new()]);
}

/// Rolling over TWO_WAVES with each batch judged for 5 s.
fn judged_rolling(max_failed: u32) -> Deployment {
    use crate::analysis::AnalysisPolicy;
    let mut d = fleet_deploy(TWO_WAVES, max_failed, 1);
    d.settings.strategy = StrategySettings::Rolling(RollingSettings {
        max_surge: 1,
        max_unavailable: 0,
        judge: Some(BatchJudge {
            window_ms: 5_000,
            interval_ms: 1_000,
            policy: AnalysisPolicy::default(),
        }),
    });
    d
}

#[test]
fn a_judged_rolling_update_compares_each_batch_with_the_old_release_before_the_next() {
    let d = judged_rolling(0);
    let mut w = World::new(&d, BTreeMap::new());
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    let judged = lines_with(&w.log, "judged over");
    // Five batches; the last has no old release left beside it to compare with.
    assert_eq!(judged.len(), 4, "{judged:#?}");
    assert!(
        judged[0].starts_with("batch 1 judged over 5s: no rule failed"),
        "{}",
        judged[0]
    );
    // Each batch is judged before the next starts.
    let order: Vec<&String> = w
        .log
        .iter()
        .filter(|l| l.contains("judged over") || l.contains(": batch "))
        .collect();
    assert!(order[0].contains("batch 1/2: hosts h1"), "{order:#?}");
    assert!(order[1].starts_with("batch 1 judged"), "{order:#?}");
    assert!(order[2].contains("batch 2/2: hosts h2, h3"), "{order:#?}");
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(true), "{h}");
    }
}

#[test]
fn a_judged_batch_worse_than_the_old_release_rolls_back_with_its_old_instances_warm() {
    // h1's new instance fails 5% of its requests; health checks pass.
    let d = judged_rolling(1);
    let mut w = World::new(&d, faults(&[("h1", Fault::Errors)]));
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    let reason = done.reason.clone().unwrap();
    assert!(reason.starts_with("analysis of batch 1: "), "{reason}");
    assert!(
        lines_with(&w.log, ": batch 2/2").is_empty(),
        "no batch after the judged one: {}",
        w.log.join("\n")
    );
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
    assert!(
        !w.effects
            .iter()
            .any(|e| matches!(e, Effect::RestoreInstances { .. })),
        "h1's old instance was judged beside, not stopped: nothing to restart"
    );
}

/// Blue-green over one wave of three hosts, watched for `watch_ms`.
fn watched(watch_ms: u64) -> Deployment {
    use crate::analysis::AnalysisPolicy;
    let mut d = fleet_deploy(&[("all", &[&["h1", "h2", "h3"]])], 0, 1);
    d.settings.strategy = StrategySettings::BlueGreen;
    d.settings.watch = Some(WatchSettings {
        duration_ms: watch_ms,
        interval_ms: 1_000,
        policy: AnalysisPolicy::default(),
    });
    d
}

#[test]
fn a_watched_release_is_judged_after_the_full_rollout_then_the_old_drain() {
    let d = watched(20_000);
    let mut w = World::new(&d, BTreeMap::new());
    let first = w.feed(&d, &Event::Created);
    assert!(
        w.effects.contains(&Effect::ObserveBaseline),
        "the baseline is taken while preparing, before anything changes"
    );
    let done = w.run(first, 5000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    let watching = lines_with(
        &w.log,
        "watching 1.1.0 for 20s against the baseline of 1.0.0",
    );
    assert_eq!(watching.len(), 1, "{}", w.log.join("\n"));
    let over = lines_with(&w.log, "watch over: no rule failed in 20s");
    assert_eq!(over.len(), 1, "{}", w.log.join("\n"));
    let at = |part: &str| w.log.iter().position(|l| l.contains(part)).unwrap();
    assert!(at("traffic switched") < at("watching 1.1.0"));
    assert!(at("watch over") < at("previous instances stopped"));
    assert!(w.running.values().all(|(_, new)| *new));
    assert!(
        done.watch.unwrap().judged > 10_000,
        "three hosts' traffic judged"
    );
}

#[test]
fn a_regression_during_the_watch_rolls_back_to_the_warm_old_instances() {
    let d = watched(60_000);
    let mut w = World::new(&d, faults(&[("h2", Fault::Errors)]));
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    let reason = done.reason.unwrap();
    assert!(
        reason.starts_with("watch after the full rollout, "),
        "{reason}"
    );
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
    assert!(!w
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RestoreInstances { .. })));

    // A rolling update had stopped its old instances: they start again.
    let mut d = watched(60_000);
    d.settings.strategy = StrategySettings::Rolling(RollingSettings {
        max_surge: 1,
        max_unavailable: 0,
        judge: None,
    });
    let mut w = World::new(&d, faults(&[("h2", Fault::Errors)]));
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::RolledBack, "{}", w.log.join("\n"));
    assert!(done
        .reason
        .unwrap()
        .starts_with("watch after the full rollout"));
    assert!(w
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RestoreInstances { .. })));
    for h in &w.hosts {
        assert_eq!(w.serves(h), Some(false), "{h}");
    }
}

#[test]
fn promote_ends_a_watch_early_and_a_rollback_is_never_watched() {
    let d = watched(600_000);
    let mut w = World::new(&d, BTreeMap::new());
    w.push(
        8_000,
        Item::Send(Event::PromoteRequested { by: "alice".into() }),
    );
    let done = w.run(d, 5000);
    assert_eq!(done.phase, Phase::Succeeded, "{}", w.log.join("\n"));
    assert_eq!(
        lines_with(&w.log, "watch ended early by alice after").len(),
        1,
        "{}",
        w.log.join("\n")
    );
    assert!(done.finished_at.unwrap() < 60_000);

    let mut rollback = watched(600_000);
    rollback.kind = DeploymentKind::Rollback;
    let mut w = World::new(&rollback, BTreeMap::new());
    let done = w.run(rollback, 5000);
    assert_eq!(done.phase, Phase::Succeeded);
    assert!(lines_with(&w.log, "watching").is_empty());
}
