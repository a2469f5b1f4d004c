//! `[environments.*.resources]`: the standards' numbers by default, limits
//! and thresholds when set, and every bad value named by its field.

use super::{errors_of, BASE};
use crate::{parse, ResourcePolicy};
use gantry_core::DeploymentKind;

#[test]
fn the_standards_numbers_by_default_and_the_host_as_the_limit() {
    let config = parse("gantry.toml", BASE).unwrap().config;
    let env = &config.environments[0];
    assert_eq!(env.resources, ResourcePolicy::default());
    assert_eq!(env.resources.max_cpu, Some(0.80));
    assert_eq!(env.resources.max_memory, Some(0.85));
    assert_eq!(env.resources.exhaustion, Some(0.90));
    assert_eq!(env.resources.consecutive, 3);
    assert_eq!(
        (env.resources.cpu_cores, env.resources.memory_bytes),
        (None, None)
    );
}

#[test]
fn limits_and_thresholds_reach_the_deployment_settings() {
    let src = format!(
        "{BASE}resources = {{ cpu_cores = 0.5, memory_mb = 256, max_cpu = 0.7, max_memory = false, consecutive = 5 }}\n"
    );
    let config = parse("gantry.toml", &src).unwrap().config;
    let env = &config.environments[0];
    let settings = config.deploy_settings(env, DeploymentKind::Deploy);
    assert_eq!(
        settings.resources,
        ResourcePolicy {
            cpu_cores: Some(0.5),
            memory_bytes: Some(256 << 20),
            max_cpu: Some(0.7),
            max_memory: None,
            exhaustion: Some(0.9),
            consecutive: 5,
        }
    );
}

#[test]
fn bad_resource_settings_name_the_field_and_what_was_expected() {
    let src = format!(
        "{BASE}resources = {{ cpu_cores = 0, memory_mb = \"1GiB\", max_cpu = 80, exhaustion = true, consecutive = 0, cpu = 1 }}\n"
    );
    let errors = errors_of(&src);
    for wanted in [
        "environments.production.resources.cpu_cores: expected a number from 0.01 to 1024",
        "environments.production.resources.memory_mb: expected an integer, found",
        "environments.production.resources.max_cpu: expected a number from 0.01 to 1",
        "environments.production.resources.exhaustion: expected a number, or false to turn the rule off",
        "environments.production.resources.consecutive: expected an integer from 1 to 100",
        "environments.production.resources.cpu",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(wanted)),
            "missing {wanted:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 6, "{errors:#?}");
}
