//! Config → the settings a deployment runs with. A pure rule: the
//! controller takes a deployment's settings from here when it creates it
//! (they are stored with the deployment, so a later config change does not
//! alter one in flight).

use crate::{Config, Environment, Strategy};
use gantry_core::evidence::GateResult;
use gantry_core::machine::{CanarySettings, CanaryStep, RollingSettings};
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
                    })
                }
            },
            smoke: env.smoke.clone(),
            freezes: env.freezes.clone(),
            fleet: None,
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
