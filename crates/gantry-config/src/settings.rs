//! Config → the settings a deployment runs with. A pure rule: the
//! controller takes a deployment's settings from here when it creates it
//! (they are stored with the deployment, so a later config change does not
//! alter one in flight).

use crate::{Config, Environment, FleetPlan, HostShare, Strategy};
use gantry_core::evidence::GateResult;
use gantry_core::machine::{
    BatchJudge, CanarySettings, CanaryStep, RollingSettings, WatchSettings,
};
use gantry_core::machine::{FleetSettings, FleetWave};
use gantry_core::{DeploySettings, DeploymentKind, HealthSettings, StrategySettings};
use gantry_core::{EnvName, Version};

impl Config {
    /// The settings of a new deployment of `kind` into `env`.
    pub fn deploy_settings(&self, env: &Environment, kind: DeploymentKind) -> DeploySettings {
        let h = &self.health;
        DeploySettings {
            instances: env.instances,
            health: HealthSettings {
                interval_ms: h.interval_ms,
                startup_interval_ms: h.interval_ms.min(50),
                failure_threshold: h.failure_threshold,
                start_timeout_ms: h.start_timeout_ms,
            },
            // A rollback returns to a release already proven; keeping the
            // faulty one warm would only delay stopping it.
            bake_ms: match kind {
                DeploymentKind::Deploy => env.bake_ms,
                DeploymentKind::Rollback => 0,
            },
            // A rollback returns to what served before, all at once: no
            // canary steps or batches on the way.
            strategy: match (&env.strategy, kind) {
                (_, DeploymentKind::Rollback) | (Strategy::BlueGreen, _) => {
                    StrategySettings::BlueGreen
                }
                (Strategy::Canary(c), DeploymentKind::Deploy) => {
                    StrategySettings::Canary(CanarySettings {
                        steps: c
                            .steps
                            .iter()
                            .map(|s| CanaryStep {
                                weight: s.weight,
                                pause: s.pause,
                            })
                            .collect(),
                        analysis: self.analysis.clone(),
                        interval_ms: c.interval_ms,
                        max_wait_ms: c.max_wait_ms,
                        promotion_tolerance: c.promotion_tolerance,
                        max_pause_ms: c.max_pause_ms,
                    })
                }
                (Strategy::Rolling(r), DeploymentKind::Deploy) => {
                    StrategySettings::Rolling(RollingSettings {
                        max_surge: r.max_surge,
                        max_unavailable: r.max_unavailable,
                        judge: (r.analysis_ms > 0).then(|| BatchJudge {
                            window_ms: r.analysis_ms,
                            interval_ms: (r.analysis_ms / 10).clamp(250, 5_000),
                            policy: self.analysis.clone(),
                        }),
                    })
                }
            },
            smoke: env.smoke.clone(),
            freezes: env.freezes.clone(),
            fleet: fleet_settings(env, kind),
            // A rollback returns to a release already proven: not watched.
            watch: (env.watch_ms > 0 && kind == DeploymentKind::Deploy).then(|| WatchSettings {
                duration_ms: env.watch_ms,
                interval_ms: (env.watch_ms / 60).clamp(250, 10_000),
                policy: self.analysis.clone(),
            }),
            resources: env.resources.clone(),
            // A rollback is never held: only the hooks told of it go with it.
            hooks: env
                .hooks
                .iter()
                .map(|h| h.hook.clone())
                .filter(|h| {
                    kind == DeploymentKind::Deploy
                        || h.at == gantry_core::machine::hooks::HookPoint::OnRollback
                })
                .collect(),
            // Filled in by the controller from the release and the
            // environment's ledger of applied migrations.
            migrations: Vec::new(),
        }
    }
    /// The promotion-path gate of `version` entering `env`: it must have
    /// succeeded in every earlier, non-optional environment of the file's
    /// order. `None` for the first environment (or one not in the config).
    /// `succeeded_in` answers from the store; its error is passed on.
    pub fn promotion_path_gate<E>(
        &self,
        version: &Version,
        env: &Environment,
        mut succeeded_in: impl FnMut(&EnvName) -> Result<bool, E>,
    ) -> Result<Option<GateResult>, E> {
        let envs = &self.environments;
        let Some(pos) = envs.iter().position(|e| e.name == env.name) else {
            return Ok(None);
        };
        if pos == 0 {
            return Ok(None);
        }
        let mut missing = Vec::new();
        for earlier in envs[..pos].iter().filter(|e| !e.optional) {
            if !succeeded_in(&earlier.name)? {
                missing.push(earlier.name.to_string());
            }
        }
        let path: Vec<String> = envs
            .iter()
            .map(|e| {
                if e.optional {
                    format!("{} (optional)", e.name)
                } else {
                    e.name.to_string()
                }
            })
            .collect();
        Ok(Some(GateResult {
            gate: "promotion path".to_owned(),
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                format!(
                    "succeeded in every earlier environment of {}",
                    path.join(" → ")
                )
            } else {
                format!(
                    "{version} has not succeeded in {} yet; the path is {}",
                    missing.join(", "),
                    path.join(" → ")
                )
            },
            evidence: None,
        }))
    }
}

/// The batches of an environment with hosts but no `fleet` plan: one host
/// first, then a quarter, half, all.
pub const DEFAULT_FLEET_BATCHES: [HostShare; 4] = [
    HostShare::Count(1),
    HostShare::Percent(25),
    HostShare::Percent(50),
    HostShare::Percent(100),
];

/// The fleet plan resolved into explicit hosts per batch, so a later change
/// of the config (or of the hosts) cannot shift a deployment's plan.
fn fleet_settings(env: &Environment, kind: DeploymentKind) -> Option<FleetSettings> {
    if env.hosts.is_empty() {
        return None;
    }
    let total = env.hosts.len() as u32;
    if kind == DeploymentKind::Rollback {
        // Every host goes back at once; one that cannot is left to
        // convergence rather than holding the others on the faulty release.
        return Some(FleetSettings {
            waves: vec![FleetWave {
                name: "all".to_owned(),
                batches: vec![env.hosts.clone()],
            }],
            max_failed: total - 1,
        });
    }
    let default_plan = FleetPlan {
        batches: DEFAULT_FLEET_BATCHES.to_vec(),
        max_unavailable: None,
        max_failed: HostShare::Count(0),
        waves: Vec::new(),
    };
    let plan = env.fleet.as_ref().unwrap_or(&default_plan);
    let waves: Vec<(String, &[String])> = if plan.waves.is_empty() {
        vec![("all".to_owned(), env.hosts.as_slice())]
    } else {
        plan.waves
            .iter()
            .map(|w| (w.site.clone(), w.hosts.as_slice()))
            .collect()
    };
    Some(FleetSettings {
        waves: waves
            .into_iter()
            .map(|(name, hosts)| FleetWave {
                name,
                batches: match plan.max_unavailable {
                    Some(m) => hosts
                        .chunks(m.of(hosts.len() as u32).max(1) as usize)
                        .map(<[String]>::to_vec)
                        .collect(),
                    None => batches(&plan.batches, hosts),
                },
            })
            .collect(),
        max_failed: plan.max_failed.of(total),
    })
}

/// A wave's hosts cut by cumulative `shares` of the wave: batches that add
/// no host are skipped, and the last takes whatever is left.
fn batches(shares: &[HostShare], hosts: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut done = 0;
    for share in shares {
        let upto = (share.of(hosts.len() as u32) as usize).min(hosts.len());
        if upto > done {
            out.push(hosts[done..upto].to_vec());
            done = upto;
        }
    }
    if done < hosts.len() {
        match out.last_mut() {
            Some(last) => last.extend_from_slice(&hosts[done..]),
            None => out.push(hosts.to_vec()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{parse, Config, STARTER};
    use gantry_core::machine::Pause;
    use gantry_core::DeploymentKind::{Deploy, Rollback};

    fn config(src: &str) -> Config {
        parse("gantry.toml", src).expect("valid config").config
    }

    #[test]
    fn a_deploy_takes_the_environment_s_strategy_bake_and_health() {
        let c = config(STARTER);
        let staging = c.environment("staging").unwrap();
        let s = c.deploy_settings(staging, Deploy);
        assert_eq!(s.instances, staging.instances);
        assert_eq!(s.bake_ms, staging.bake_ms);
        assert!(s.bake_ms > 0);
        let gantry_core::StrategySettings::Rolling(rolling) = s.strategy else {
            panic!("staging rolls: {:?}", s.strategy)
        };
        let crate::Strategy::Rolling(r) = &staging.strategy else {
            panic!("the starter's staging is rolling")
        };
        assert_eq!(
            (rolling.max_surge, rolling.max_unavailable),
            (r.max_surge, r.max_unavailable)
        );
        assert_eq!(s.smoke, staging.smoke);
        assert_eq!(s.health.interval_ms, c.health.interval_ms);
        assert_eq!(s.health.failure_threshold, c.health.failure_threshold);
        assert_eq!(s.health.start_timeout_ms, c.health.start_timeout_ms);
        // Startup probes are at most 50 ms apart, so a new instance is seen soon.
        assert_eq!(s.health.startup_interval_ms, c.health.interval_ms.min(50));
        assert!(s.health.startup_interval_ms <= 50);
    }

    #[test]
    fn a_canary_deploy_carries_its_steps_and_the_analysis_policy() {
        let c = config(&STARTER.replace(
            "[environments.production]\n",
            "[environments.production]\ncanary = { steps = [{ weight = 10, pause = \"30s\" }, { weight = 50, pause = \"until-promoted\" }, { weight = 100 }], interval = \"500ms\" }\n",
        ).replace("strategy = \"blue-green\"\nbake = \"30s\"", "strategy = \"canary\"\nbake = \"30s\""));
        let prod = c.environment("production").unwrap();
        let gantry_core::StrategySettings::Canary(canary) =
            c.deploy_settings(prod, Deploy).strategy
        else {
            panic!("production is a canary")
        };
        let weights: Vec<u32> = canary.steps.iter().map(|s| s.weight).collect();
        assert_eq!(weights, [10, 50, 100]);
        assert_eq!(canary.steps[1].pause, Pause::UntilPromoted);
        assert_eq!(canary.interval_ms, 500);
        assert_eq!(canary.analysis, c.analysis);
    }

    #[test]
    fn a_rollback_goes_straight_back_without_bake_canary_or_batches() {
        let c = config(STARTER);
        for name in c.environment_names() {
            let env = c.environment(&name).unwrap();
            let s = c.deploy_settings(env, Rollback);
            assert_eq!(s.bake_ms, 0, "{name}");
            assert_eq!(
                s.strategy,
                gantry_core::StrategySettings::BlueGreen,
                "{name}"
            );
            assert_eq!(s.instances, env.instances, "{name}");
            assert_eq!(s.freezes, env.freezes, "{name}");
        }
    }

    /// The starter with seven hosts (eu: 4, us: 3) and production on all
    /// of them, with `fleet` (a TOML inline table) unless empty.
    fn fleet_config(fleet: &str) -> Config {
        let mut hosts = String::new();
        for (n, site) in ["eu", "eu", "eu", "eu", "us", "us", "us"]
            .iter()
            .enumerate()
        {
            hosts.push_str(&format!(
                "\n[hosts.h{}]\naddress = \"10.0.0.{}\"\nsite = \"{site}\"\nkey = \"agent\"\n",
                n + 1,
                n + 1
            ));
        }
        let plan = if fleet.is_empty() {
            String::new()
        } else {
            format!("fleet = {fleet}\n")
        };
        let src = STARTER.replacen(
            "[environments.production]\n",
            &format!(
                "[environments.production]\nhosts = [\"h1\", \"h2\", \"h3\", \"h4\", \"h5\", \"h6\", \"h7\"]\n{plan}"
            ),
            1,
        );
        config(&format!("{src}{hosts}"))
    }

    fn batches_of(s: &gantry_core::DeploySettings) -> Vec<(String, Vec<Vec<String>>)> {
        s.fleet
            .as_ref()
            .expect("a fleet")
            .waves
            .iter()
            .map(|w| (w.name.clone(), w.batches.clone()))
            .collect()
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn fleet_batches_resolve_per_wave_into_explicit_hosts() {
        let c = fleet_config(
            r#"{ batches = [1, "50%", "100%"], max_failed = "30%", waves = ["us", "eu"] }"#,
        );
        let s = c.deploy_settings(c.environment("production").unwrap(), Deploy);
        // Per wave: 1 host, then up to half (rounded up), then the rest.
        assert_eq!(
            batches_of(&s),
            [
                (
                    "us".to_owned(),
                    vec![hosts(&["h5"]), hosts(&["h6"]), hosts(&["h7"])]
                ),
                (
                    "eu".to_owned(),
                    vec![hosts(&["h1"]), hosts(&["h2"]), hosts(&["h3", "h4"])]
                ),
            ]
        );
        // 30% of 7 hosts, rounded up.
        assert_eq!(s.fleet.as_ref().unwrap().max_failed, 3);
        assert_eq!(s.fleet.as_ref().unwrap().hosts().count(), 7);
    }

    #[test]
    fn max_unavailable_cuts_each_wave_into_batches_of_that_many_hosts() {
        let c = fleet_config(r#"{ max_unavailable = 2, waves = ["eu", "us"] }"#);
        let s = c.deploy_settings(c.environment("production").unwrap(), Deploy);
        assert_eq!(
            batches_of(&s),
            [
                (
                    "eu".to_owned(),
                    vec![hosts(&["h1", "h2"]), hosts(&["h3", "h4"])]
                ),
                ("us".to_owned(), vec![hosts(&["h5", "h6"]), hosts(&["h7"])]),
            ]
        );
        // A share is of each wave, rounded up: 25% of 4 is 1, of 3 is 1.
        let c = fleet_config(r#"{ max_unavailable = "25%", waves = ["eu", "us"] }"#);
        let s = c.deploy_settings(c.environment("production").unwrap(), Deploy);
        assert_eq!(
            batches_of(&s)
                .iter()
                .map(|(_, b)| b.len())
                .collect::<Vec<_>>(),
            [4, 3]
        );
    }

    #[test]
    fn shares_that_add_no_host_are_skipped() {
        // 10% and 20% of 4 (eu) or 3 (us) hosts are both 1: one batch.
        let c = fleet_config(r#"{ batches = ["10%", "20%", "100%"], waves = ["eu", "us"] }"#);
        let s = c.deploy_settings(c.environment("production").unwrap(), Deploy);
        assert_eq!(
            batches_of(&s),
            [
                (
                    "eu".to_owned(),
                    vec![hosts(&["h1"]), hosts(&["h2", "h3", "h4"])]
                ),
                ("us".to_owned(), vec![hosts(&["h5"]), hosts(&["h6", "h7"])]),
            ]
        );
        assert_eq!(s.fleet.unwrap().max_failed, 0, "none may fail unless said");
    }

    #[test]
    fn without_a_plan_the_fleet_rolls_one_host_then_quarters_in_one_wave() {
        let c = fleet_config("");
        let s = c.deploy_settings(c.environment("production").unwrap(), Deploy);
        // 1, then 25% (2), 50% (4) and 100% (7) of 7.
        assert_eq!(
            batches_of(&s),
            [(
                "all".to_owned(),
                vec![
                    hosts(&["h1"]),
                    hosts(&["h2"]),
                    hosts(&["h3", "h4"]),
                    hosts(&["h5", "h6", "h7"])
                ]
            )]
        );
        assert_eq!(s.fleet.unwrap().max_failed, 0);
        // Local environments stay local.
        let staging = c.environment("staging").unwrap();
        assert_eq!(c.deploy_settings(staging, Deploy).fleet, None);
        assert_eq!(c.deploy_settings(staging, Rollback).fleet, None);
    }

    #[test]
    fn a_fleet_rollback_returns_every_host_at_once() {
        let c = fleet_config(r#"{ batches = [1, "100%"], waves = ["eu", "us"] }"#);
        let s = c.deploy_settings(c.environment("production").unwrap(), Rollback);
        assert_eq!(s.strategy, gantry_core::StrategySettings::BlueGreen);
        assert_eq!(
            batches_of(&s),
            [(
                "all".to_owned(),
                vec![hosts(&["h1", "h2", "h3", "h4", "h5", "h6", "h7"])]
            )]
        );
        // A host that cannot go back does not hold the others on the faulty release.
        assert_eq!(s.fleet.unwrap().max_failed, 6);
    }

    #[test]
    fn batches_cut_cumulative_shares_and_give_the_rest_to_the_last() {
        use super::batches;
        use crate::HostShare::{Count, Percent};
        let h: Vec<String> = (1..=10).map(|n| format!("h{n}")).collect();
        let sizes = |shares: &[crate::HostShare], n: usize| -> Vec<usize> {
            batches(shares, &h[..n]).iter().map(Vec::len).collect()
        };
        assert_eq!(
            sizes(&[Count(1), Percent(10), Percent(50), Percent(100)], 10),
            [1, 4, 5]
        );
        assert_eq!(sizes(&[Percent(34), Percent(100)], 10), [4, 6]);
        assert_eq!(
            sizes(&[Count(2), Percent(100)], 1),
            [1],
            "a count beyond the wave"
        );
        assert_eq!(
            sizes(&[Count(1), Percent(50)], 5),
            [1, 4],
            "the rest goes last"
        );
        assert_eq!(sizes(&[Count(3)], 3), [3]);
        // Every host once, in order.
        let all: Vec<String> = batches(&[Count(1), Percent(25), Percent(100)], &h).concat();
        assert_eq!(all, h);
    }

    #[test]
    fn the_promotion_path_names_what_is_missing_and_skips_the_first_environment() {
        let c = config(STARTER);
        let v = gantry_core::Version::new(1, 2, 0);
        let first = c.environment("development").unwrap();
        assert_eq!(
            c.promotion_path_gate(&v, first, |_| Ok::<_, ()>(false)),
            Ok(None)
        );
        let prod = c.environment("production").unwrap();
        let g = c
            .promotion_path_gate(&v, prod, |e| Ok::<_, ()>(e.as_str() == "development"))
            .unwrap()
            .expect("production has a path");
        assert!(!g.passed);
        assert!(g.detail.contains("integration, staging"), "{}", g.detail);
        let all = c
            .promotion_path_gate(&v, prod, |_| Ok::<_, ()>(true))
            .unwrap()
            .unwrap();
        assert!(all.passed, "{}", all.detail);
        assert_eq!(
            c.promotion_path_gate(&v, prod, |_| Err("store down")),
            Err("store down")
        );
    }
}
