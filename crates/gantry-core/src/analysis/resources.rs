//! The standards' resource triggers, judged from the target's own readings
//! of each instance (no metrics server needed): CPU above 80% and memory
//! above 85% of the instance's limit during a rollout roll back; above 90% is
//! "resource exhaustion".
//!
//! The target reports cumulative figures ([`InstanceUsage`]: CPU seconds of
//! the instance's process tree and the host's monotonic clock, resident
//! memory); the CPU share is the difference between two looks, so the judge
//! keeps each instance's previous reading in [`ResourceWatch`], stored with
//! the deployment. The first look at an instance gives its memory only.
//!
//! How new and old compare, where both run:
//! - a new instance over a threshold while every old instance is under it is
//!   a bad reading: the new release uses more than the old under the same
//!   load;
//! - new and old both over it: the load is the environment's, not the
//!   release's, and rolling back would not help: logged once, not counted;
//!   except that a new instance in exhaustion (above 90%) while the old ones
//!   are not counts;
//! - no reading of the old release (none runs, or none could be read): the
//!   new instance is judged against the threshold alone.
//!
//! A rule fires after `consecutive` bad readings in a row of the same
//! instance and resource (default 3), so one spike does not roll back. A
//! reading that could not be taken neither counts nor resets the run, and
//! is logged once: no data is an explained state, never a silent pass.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The resource rules of one deployment, frozen at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourcePolicy {
    /// CPU limit of one instance, in cores; `None`: the host's cores.
    pub cpu_cores: Option<f64>,
    /// Memory limit of one instance, in bytes; `None`: the host's memory.
    pub memory_bytes: Option<u64>,
    /// Share of the CPU limit above which a reading is bad (standards: 0.80).
    pub max_cpu: Option<f64>,
    /// Share of the memory limit above which a reading is bad (standards: 0.85).
    pub max_memory: Option<f64>,
    /// Share of either limit called "resource exhaustion" (workflow: 0.90).
    pub exhaustion: Option<f64>,
    /// Bad readings in a row of one instance that roll back.
    pub consecutive: u32,
}

/// The standards' CPU threshold: 80% of the limit.
pub const STANDARD_MAX_CPU: f64 = 0.80;
/// The standards' memory threshold: 85% of the limit.
pub const STANDARD_MAX_MEMORY: f64 = 0.85;
/// The workflow's "resource exhaustion": 90%.
pub const STANDARD_EXHAUSTION: f64 = 0.90;
/// Three bad readings in a row: one spike is not a regression.
pub const STANDARD_CONSECUTIVE: u32 = 3;

impl Default for ResourcePolicy {
    fn default() -> Self {
        ResourcePolicy {
            cpu_cores: None,
            memory_bytes: None,
            max_cpu: Some(STANDARD_MAX_CPU),
            max_memory: Some(STANDARD_MAX_MEMORY),
            exhaustion: Some(STANDARD_EXHAUSTION),
            consecutive: STANDARD_CONSECUTIVE,
        }
    }
}

impl ResourcePolicy {
    /// Whether any rule is on.
    pub fn is_on(&self) -> bool {
        self.max_cpu.is_some() || self.max_memory.is_some() || self.exhaustion.is_some()
    }
}

/// One look at one instance, as the target read it: cumulative figures of
/// its whole process tree, and the host's size for the default limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceUsage {
    pub instance: String,
    /// The tree's root process; another pid means the counters began again.
    pub pid: u32,
    /// Processes in the tree.
    pub processes: u32,
    /// CPU time the tree has used (user + system, reaped children included), seconds.
    pub cpu_seconds: f64,
    /// The host's monotonic clock when read, seconds.
    pub taken_at: f64,
    /// Resident memory of the tree (pages shared between its processes count once per process).
    pub memory_bytes: u64,
    /// Cores this host gives the controller's processes.
    pub host_cpu_cores: f64,
    pub host_memory_bytes: u64,
    /// Why nothing could be read (then the figures are zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Which release an instance runs, relative to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    New,
    Old,
}

/// What one instance used at the latest look, against its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceFigure {
    pub instance: String,
    pub side: Side,
    /// Cores used since the previous look (none at the first look).
    pub cpu_cores: Option<f64>,
    pub cpu_limit_cores: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Why nothing could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl ResourceFigure {
    /// The CPU used as a share of the limit.
    pub fn cpu_share(&self) -> Option<f64> {
        self.cpu_cores.map(|c| c / self.cpu_limit_cores)
    }
    pub fn memory_share(&self) -> Option<f64> {
        (self.unavailable.is_none() && self.memory_limit_bytes > 0)
            .then(|| self.memory_bytes as f64 / self.memory_limit_bytes as f64)
    }
}

/// The previous CPU reading of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CpuMark {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub taken_at: f64,
}

/// What the resource rules remember between looks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceWatch {
    /// Each instance's previous reading, for its CPU rate.
    #[serde(default)]
    pub previous: BTreeMap<String, CpuMark>,
    /// Bad readings in a row, by "instance cpu" or "instance memory".
    #[serde(default)]
    pub streaks: BTreeMap<String, u32>,
    /// The latest look's figures, for status.
    #[serde(default)]
    pub latest: Vec<ResourceFigure>,
    /// Notes already logged (shared load, no data), each once.
    #[serde(default)]
    pub noted: BTreeSet<String>,
}

/// The outcome of one look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceJudgement {
    /// Why the new release must roll back, if it must.
    pub failure: Option<String>,
    /// Lines for the deployment log (each said once per deployment).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "CPU",
            Resource::Memory => "memory",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
    fn share(self, f: &ResourceFigure) -> Option<f64> {
        match self {
            Resource::Cpu => f.cpu_share(),
            Resource::Memory => f.memory_share(),
        }
    }
    /// "0.19 of its 0.20 cores" or "56.3 MiB of its 64.0 MiB".
    fn amounts(self, f: &ResourceFigure) -> String {
        match self {
            Resource::Cpu => format!(
                "{:.2} of its {:.2} cores",
                f.cpu_cores.unwrap_or(0.0),
                f.cpu_limit_cores
            ),
            Resource::Memory => format!(
                "{} of its {} resident",
                mib(f.memory_bytes),
                mib(f.memory_limit_bytes)
            ),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Turns raw readings into figures against the limits, remembering each
/// instance's CPU mark for the next look. `new` and `old` are instance ids;
/// readings of other instances are ignored.
pub fn figures(
    policy: &ResourcePolicy,
    watch: &mut ResourceWatch,
    readings: &[InstanceUsage],
    new: &[String],
    old: &[String],
) -> Vec<ResourceFigure> {
    let mut out = Vec::new();
    for r in readings {
        let side = if new.contains(&r.instance) {
            Side::New
        } else if old.contains(&r.instance) {
            Side::Old
        } else {
            continue;
        };
        let cpu_limit = policy
            .cpu_cores
            .unwrap_or(r.host_cpu_cores)
            .max(f64::MIN_POSITIVE);
        let memory_limit = policy.memory_bytes.unwrap_or(r.host_memory_bytes);
        let mut cpu_cores = None;
        if r.unavailable.is_none() {
            let mark = CpuMark {
                pid: r.pid,
                cpu_seconds: r.cpu_seconds,
                taken_at: r.taken_at,
            };
            if let Some(prev) = watch.previous.insert(r.instance.clone(), mark) {
                let elapsed = r.taken_at - prev.taken_at;
                let used = r.cpu_seconds - prev.cpu_seconds;
                // A restarted process, a child that ended unreaped, or a
                // clock that did not move: no rate from this pair.
                if prev.pid == r.pid && elapsed > 0.0 && used >= 0.0 {
                    cpu_cores = Some(used / elapsed);
                }
            }
        }
        out.push(ResourceFigure {
            instance: r.instance.clone(),
            side,
            cpu_cores,
            cpu_limit_cores: cpu_limit,
            memory_bytes: r.memory_bytes,
            memory_limit_bytes: memory_limit,
            unavailable: r.unavailable.clone(),
        });
    }
    out
}

/// One look: the readings of the new release's instances (`new`) judged
/// against the policy and against the old release's (`old`).
pub fn judge(
    policy: &ResourcePolicy,
    watch: &mut ResourceWatch,
    readings: &[InstanceUsage],
    new: &[String],
    old: &[String],
) -> ResourceJudgement {
    let figures = figures(policy, watch, readings, new, old);
    let mut out = ResourceJudgement::default();
    for f in figures.iter().filter(|f| f.side == Side::New) {
        if let Some(why) = &f.unavailable {
            note(
                watch,
                &mut out,
                format!("unavailable {}", f.instance),
                format!(
                    "resource readings of {} unavailable: {why}; its resource rules wait for data",
                    f.instance
                ),
            );
        }
    }
    for resource in [Resource::Cpu, Resource::Memory] {
        let threshold = match resource {
            Resource::Cpu => policy.max_cpu,
            Resource::Memory => policy.max_memory,
        };
        let old_max = figures
            .iter()
            .filter(|f| f.side == Side::Old)
            .filter_map(|f| resource.share(f))
            .max_by(f64::total_cmp);
        let above = |share: f64, limit: Option<f64>| limit.is_some_and(|l| share > l);
        for f in figures.iter().filter(|f| f.side == Side::New) {
            let key = format!("{} {}", f.instance, resource.key());
            let Some(share) = resource.share(f) else {
                // No figure this look: the run neither grows nor ends.
                continue;
            };
            let over = above(share, threshold);
            let exhausted = above(share, policy.exhaustion);
            let old_over = old_max.is_some_and(|o| above(o, threshold));
            let old_exhausted = old_max.is_some_and(|o| above(o, policy.exhaustion));
            let bad = (over && !old_over) || (exhausted && !old_exhausted);
            if (over || exhausted) && !bad {
                note(
                    watch,
                    &mut out,
                    format!("shared {key}"),
                    format!(
                        "{} of {} at {} of its limit, and the old release's instances at up to {}: both above {}; the load is the environment's, not the release's, so it does not roll back",
                        resource.name(),
                        f.instance,
                        pct(share),
                        pct(old_max.unwrap_or(0.0)),
                        pct(if exhausted { policy.exhaustion } else { threshold }.unwrap_or(0.0)),
                    ),
                );
            }
            let streak = watch.streaks.entry(key).or_insert(0);
            *streak = if bad { *streak + 1 } else { 0 };
            if bad && *streak >= policy.consecutive.max(1) && out.failure.is_none() {
                let limit = if exhausted && !old_exhausted {
                    policy.exhaustion
                } else {
                    threshold
                };
                let label = if exhausted && !old_exhausted {
                    "resource exhaustion: "
                } else {
                    ""
                };
                let old = match old_max {
                    Some(o) => format!("the old release's instances at most {}", pct(o)),
                    None => "no reading of the old release to compare".to_owned(),
                };
                out.failure = Some(format!(
                    "{label}{} of {} at {} of its limit ({}), above {}, for {} readings in a row; {old}",
                    resource.name(),
                    f.instance,
                    pct(share),
                    resource.amounts(f),
                    pct(limit.unwrap_or(0.0)),
                    *streak,
                ));
            }
        }
    }
    // Instances gone from the deployment keep no marks or runs.
    let seen: BTreeSet<&String> = new.iter().chain(old).collect();
    watch.previous.retain(|id, _| seen.contains(id));
    watch.latest = figures;
    out
}

fn note(watch: &mut ResourceWatch, out: &mut ResourceJudgement, key: String, line: String) {
    if watch.noted.insert(key) {
        out.notes.push(line);
    }
}

/// One line per instance of the latest look, for status and the log.
pub fn describe(figures: &[ResourceFigure]) -> Vec<String> {
    figures
        .iter()
        .map(|f| {
            let side = match f.side {
                Side::New => "new",
                Side::Old => "old",
            };
            if let Some(why) = &f.unavailable {
                return format!("{} ({side}): no reading: {why}", f.instance);
            }
            let cpu = match f.cpu_share() {
                Some(s) => format!("CPU {} ({})", pct(s), Resource::Cpu.amounts(f)),
                None => "CPU not yet measured".to_owned(),
            };
            let memory = match f.memory_share() {
                Some(s) => format!("memory {} ({})", pct(s), Resource::Memory.amounts(f)),
                None => "memory not measured".to_owned(),
            };
            format!("{} ({side}): {cpu}, {memory}", f.instance)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A reading of `instance` at `t` seconds having used `cpu` seconds, `mem` bytes.
    fn reading(instance: &str, t: f64, cpu: f64, mem: u64) -> InstanceUsage {
        InstanceUsage {
            instance: instance.to_owned(),
            pid: 100,
            processes: 1,
            cpu_seconds: cpu,
            taken_at: t,
            memory_bytes: mem,
            host_cpu_cores: 2.0,
            host_memory_bytes: 4 * GIB,
            unavailable: None,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A policy with a 1-core, 1 GiB limit.
    fn policy() -> ResourcePolicy {
        ResourcePolicy {
            cpu_cores: Some(1.0),
            memory_bytes: Some(GIB),
            ..ResourcePolicy::default()
        }
    }

    /// Feeds looks one second apart: new uses `new_cores` cores, old `old_cores`.
    fn run(
        policy: &ResourcePolicy,
        looks: usize,
        new_cores: f64,
        old_cores: Option<f64>,
        mem: (u64, u64),
    ) -> (ResourceWatch, Vec<ResourceJudgement>) {
        let mut watch = ResourceWatch::default();
        let mut out = Vec::new();
        for i in 0..looks {
            let t = i as f64;
            let mut readings = vec![reading("new-1", t, new_cores * t, mem.0)];
            if let Some(old) = old_cores {
                readings.push(reading("old-1", t, old * t, mem.1));
            }
            out.push(judge(
                policy,
                &mut watch,
                &readings,
                &ids(&["new-1"]),
                &ids(&["old-1"]),
            ));
        }
        (watch, out)
    }

    #[test]
    fn cpu_above_80_percent_for_three_readings_in_a_row_fails_naming_instance_and_value() {
        let (_, looks) = run(&policy(), 4, 0.85, Some(0.1), (0, 0));
        // The first look has no CPU rate; then three bad readings.
        assert_eq!(looks[0].failure, None);
        assert_eq!(looks[1].failure, None);
        assert_eq!(looks[2].failure, None);
        let reason = looks[3].failure.as_deref().unwrap();
        assert_eq!(
            reason,
            "CPU of new-1 at 85% of its limit (0.85 of its 1.00 cores), above 80%, for 3 readings in a row; the old release's instances at most 10%"
        );
    }

    #[test]
    fn above_90_percent_is_resource_exhaustion() {
        let (_, looks) = run(&policy(), 4, 0.95, Some(0.1), (0, 0));
        let reason = looks[3].failure.as_deref().unwrap();
        assert!(
            reason.starts_with("resource exhaustion: CPU of new-1 at 95%"),
            "{reason}"
        );
        assert!(reason.contains("above 90%"), "{reason}");
    }

    #[test]
    fn memory_above_85_percent_fails_with_the_resident_size() {
        let (_, looks) = run(&policy(), 3, 0.0, Some(0.0), (GIB * 87 / 100, GIB / 10));
        let reason = looks[2].failure.as_deref().unwrap();
        assert!(
            reason.starts_with("memory of new-1 at 87% of its limit (890.9 MiB of its 1024.0 MiB resident), above 85%, for 3 readings in a row"),
            "{reason}"
        );
        assert!(reason.ends_with("the old release's instances at most 10%"));
    }

    #[test]
    fn under_the_thresholds_nothing_fails() {
        let (watch, looks) = run(&policy(), 10, 0.79, Some(0.5), (GIB * 84 / 100, 0));
        assert!(looks
            .iter()
            .all(|l| l.failure.is_none() && l.notes.is_empty()));
        assert_eq!(watch.streaks["new-1 cpu"], 0);
        let lines = describe(&watch.latest);
        assert_eq!(
            lines[0],
            "new-1 (new): CPU 79% (0.79 of its 1.00 cores), memory 84% (860.2 MiB of its 1024.0 MiB resident)"
        );
    }

    #[test]
    fn one_spike_does_not_roll_back_and_a_good_reading_ends_the_run() {
        let mut watch = ResourceWatch::default();
        let p = policy();
        // Cumulative CPU seconds at looks 1 s apart: busy, busy, idle, busy, busy.
        let cpu = [0.0, 0.9, 1.8, 1.9, 2.8, 3.7];
        let mut failures = Vec::new();
        for (i, c) in cpu.iter().enumerate() {
            let j = judge(
                &p,
                &mut watch,
                &[reading("new-1", i as f64, *c, 0)],
                &ids(&["new-1"]),
                &[],
            );
            failures.push(j.failure.is_some());
        }
        assert_eq!(failures, [false; 6]);
        assert_eq!(watch.streaks["new-1 cpu"], 2);
    }

    #[test]
    fn new_and_old_both_over_the_threshold_is_the_load_not_the_release() {
        let (watch, looks) = run(&policy(), 6, 0.85, Some(0.84), (0, 0));
        assert!(looks.iter().all(|l| l.failure.is_none()));
        let notes: Vec<&String> = looks.iter().flat_map(|l| &l.notes).collect();
        assert_eq!(notes.len(), 1, "said once: {notes:?}");
        assert!(
            notes[0].contains("both above 80%; the load is the environment's"),
            "{}",
            notes[0]
        );
        assert_eq!(watch.streaks["new-1 cpu"], 0);
    }

    #[test]
    fn exhaustion_of_the_new_while_the_old_is_only_busy_still_fails() {
        let (_, looks) = run(&policy(), 4, 0.97, Some(0.82), (0, 0));
        let reason = looks[3].failure.as_deref().unwrap();
        assert!(reason.starts_with("resource exhaustion: CPU"), "{reason}");
        assert!(reason.ends_with("the old release's instances at most 82%"));
    }

    #[test]
    fn without_old_readings_the_threshold_alone_judges() {
        let (_, looks) = run(&policy(), 4, 0.85, None, (0, 0));
        assert!(looks[3]
            .failure
            .as_deref()
            .unwrap()
            .ends_with("no reading of the old release to compare"));
    }

    #[test]
    fn the_host_is_the_limit_when_none_is_configured() {
        // 0.85 cores of a 2-core host is 42%.
        let (watch, looks) = run(&ResourcePolicy::default(), 5, 0.85, None, (0, 0));
        assert!(looks.iter().all(|l| l.failure.is_none()));
        assert_eq!(watch.latest[0].cpu_limit_cores, 2.0);
        assert_eq!(watch.latest[0].memory_limit_bytes, 4 * GIB);
        let (_, looks) = run(&ResourcePolicy::default(), 4, 1.7, None, (0, 0));
        assert!(looks[3].failure.as_deref().unwrap().contains("at 85%"));
    }

    #[test]
    fn a_restarted_process_or_a_missing_reading_gives_no_rate_and_keeps_the_run() {
        let p = policy();
        let mut watch = ResourceWatch::default();
        let new = ids(&["new-1"]);
        let look = |watch: &mut ResourceWatch, r: InstanceUsage| judge(&p, watch, &[r], &new, &[]);
        look(&mut watch, reading("new-1", 0.0, 0.0, 0));
        look(&mut watch, reading("new-1", 1.0, 0.9, 0));
        assert_eq!(watch.streaks["new-1 cpu"], 1);
        let gone = InstanceUsage {
            unavailable: Some("process is not running".into()),
            ..InstanceUsage {
                instance: "new-1".into(),
                ..InstanceUsage::default()
            }
        };
        let j = look(&mut watch, gone.clone());
        assert_eq!(
            j.notes,
            ["resource readings of new-1 unavailable: process is not running; its resource rules wait for data"]
        );
        assert!(look(&mut watch, gone).notes.is_empty(), "said once");
        assert_eq!(watch.streaks["new-1 cpu"], 1, "no data keeps the run");
        // Another pid: its counters began again, no rate from the pair.
        let restarted = InstanceUsage {
            pid: 200,
            ..reading("new-1", 3.0, 0.1, 0)
        };
        look(&mut watch, restarted);
        assert_eq!(watch.latest[0].cpu_cores, None);
        assert_eq!(watch.streaks["new-1 cpu"], 1);
    }

    #[test]
    fn rules_turned_off_never_fire() {
        let p = ResourcePolicy {
            max_cpu: None,
            exhaustion: None,
            ..policy()
        };
        let (_, looks) = run(&p, 6, 1.0, None, (0, 0));
        assert!(looks.iter().all(|l| l.failure.is_none()));
    }

    #[test]
    fn instances_outside_the_deployment_are_ignored() {
        let mut watch = ResourceWatch::default();
        judge(
            &policy(),
            &mut watch,
            &[reading("stranger", 0.0, 0.0, 0)],
            &ids(&["new-1"]),
            &[],
        );
        assert!(watch.latest.is_empty() && watch.previous.is_empty());
    }
}
