//! The bounds every request is checked against on the host before it is
//! acted on (counts and string lengths), on top of the frame limit. The
//! error names the field and the limit; never a value (it may be a secret).

use super::protocol::{Call, CHUNK_SIZE, MAX_ARTIFACT_BYTES, MAX_LOG_BYTES};
use crate::target::LaunchSpec;
use gantry_api::PoolStats;
use gantry_core::InstanceRef;
use gantry_router::Affinity;

/// Names: environments, pools, instance ids, controller ids, variables.
pub const NAME: usize = 256;
/// Paths, commands, arguments, health paths.
pub const PATH: usize = 4096;
/// One variable's value (a secret, a certificate).
pub const VALUE: usize = 64 << 10;
pub const VARS: usize = 1024;
pub const ARGS: usize = 256;
pub const INSTANCES: usize = 1024;
pub const POOLS: usize = 64;
pub const UPSTREAMS: usize = 1024;
pub const LATENCY_LIMITS: usize = 16;
/// A probe's timeout, in milliseconds.
pub const PROBE_TIMEOUT_MS: u64 = 60_000;
/// Smoke checks per suite, and the longest suite a host runs.
pub const SMOKE_CHECKS: usize = 64;
pub const SMOKE_TIMEOUT_MS: u64 = 600_000;

impl LaunchSpec {
    pub(super) fn check(&self) -> Result<(), String> {
        count("spec.count", self.count as usize, INSTANCES)?;
        text("spec.command", &self.command, PATH)?;
        count("spec.args", self.args.len(), ARGS)?;
        for a in &self.args {
            text("spec.args[]", a, PATH)?;
        }
        text("spec.port_env", &self.port_env, NAME)?;
        count("spec.vars", self.vars.len(), VARS)?;
        for (k, v) in &self.vars {
            text("spec.vars key", k, NAME)?;
            if v.len() > VALUE {
                // The name only: the value may be a secret.
                return Err(format!("spec.vars.{k}: longer than {} bytes", VALUE));
            }
        }
        Ok(())
    }
}

impl Call {
    /// Checks counts and string lengths; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Call::Hello(h) => {
                text("hello.controller", &h.controller, NAME)?;
                if h.controller.is_empty() {
                    return Err("hello.controller: must not be empty".to_owned());
                }
                text("hello.data_dir", &h.data_dir, PATH)?;
                if let Some(u) = &h.confinement.run_as {
                    text("hello.confinement.run_as", u, NAME)?;
                }
                count("hello.confinement.read", h.confinement.read.len(), 64)?;
                count("hello.confinement.write", h.confinement.write.len(), 64)?;
                for p in h.confinement.read.iter().chain(&h.confinement.write) {
                    text("hello.confinement path", &p.to_string_lossy(), PATH)?;
                }
                Ok(())
            }
            Call::HaveArtifact { .. } | Call::Running => Ok(()),
            Call::UploadChunk {
                size, offset, data, ..
            } => {
                if *size > MAX_ARTIFACT_BYTES {
                    return Err(format!(
                        "upload_chunk.size: {size} bytes is above the limit of {MAX_ARTIFACT_BYTES}"
                    ));
                }
                if data.len() > CHUNK_SIZE {
                    return Err(format!(
                        "upload_chunk.data: {} bytes is above the chunk size {CHUNK_SIZE}",
                        data.len()
                    ));
                }
                if offset.saturating_add(data.len() as u64) > *size {
                    return Err(format!(
                        "upload_chunk: offset {offset} + {} bytes runs past the declared size {size}",
                        data.len()
                    ));
                }
                Ok(())
            }
            Call::Prepare { release, .. } | Call::CheckRelease { release } => {
                text("release.kind", &release.kind, 16)
            }
            Call::EnsureInstances { spec } => spec.check(),
            Call::RestartInstance { spec, instance } => {
                spec.check()?;
                instance_ok("instance", instance)
            }
            Call::Stop { instances } => {
                count("stop.instances", instances.len(), INSTANCES)?;
                instances
                    .iter()
                    .try_for_each(|i| instance_ok("stop.instances[]", i))
            }
            Call::Exited { instance } => instance_ok("exited.instance", instance),
            Call::Logs {
                instance,
                max_bytes,
            } => {
                instance_ok(
                    "logs.instance",
                    &InstanceRef {
                        id: instance.clone(),
                        port: 0,
                        host: None,
                    },
                )?;
                if *max_bytes > MAX_LOG_BYTES {
                    return Err(format!(
                        "logs.max_bytes: {max_bytes} is above the limit of {MAX_LOG_BYTES}"
                    ));
                }
                Ok(())
            }
            Call::Route {
                pools, affinity, ..
            } => {
                count("route.pools", pools.len(), POOLS)?;
                for p in pools {
                    text("route.pools[].name", &p.name, NAME)?;
                    count("route.pools[].upstreams", p.upstreams.len(), UPSTREAMS)?;
                }
                match affinity {
                    Some(Affinity::Cookie(n)) | Some(Affinity::Header(n)) => {
                        text("route.affinity", n, NAME)
                    }
                    None => Ok(()),
                }
            }
            Call::Revive { .. } | Call::RouterRunning { .. } | Call::StopRouter { .. } => Ok(()),
            Call::Stats { slower_than_ms, .. } => {
                count("stats.slower_than_ms", slower_than_ms.len(), LATENCY_LIMITS)?;
                if slower_than_ms.iter().any(|l| !l.is_finite() || *l < 0.0) {
                    return Err("stats.slower_than_ms: every limit must be a finite, non-negative number of milliseconds".to_owned());
                }
                Ok(())
            }
            Call::Probe {
                instance,
                path,
                timeout_ms,
            } => {
                instance_ok("probe.instance", instance)?;
                text("probe.path", path, PATH)?;
                if !path.starts_with('/') {
                    return Err(format!("probe.path: {path:?} must start with '/'"));
                }
                if *timeout_ms == 0 || *timeout_ms > PROBE_TIMEOUT_MS {
                    return Err(format!(
                        "probe.timeout_ms: {timeout_ms} is not within 1..={}",
                        PROBE_TIMEOUT_MS
                    ));
                }
                Ok(())
            }
            Call::Usage { instances } => {
                count("usage.instances", instances.len(), INSTANCES)?;
                instances
                    .iter()
                    .try_for_each(|i| instance_ok("usage.instances[]", i))
            }
            Call::Smoke {
                settings,
                instances,
            } => {
                count("smoke.instances", instances.len(), INSTANCES)?;
                count("smoke.settings.checks", settings.checks.len(), SMOKE_CHECKS)?;
                for i in instances {
                    instance_ok("smoke.instances", i)?;
                }
                if settings.timeout_ms == 0 || settings.timeout_ms > SMOKE_TIMEOUT_MS {
                    return Err(format!(
                        "smoke.settings.timeout_ms: {} is not within 1..={SMOKE_TIMEOUT_MS}",
                        settings.timeout_ms
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Pools in one `Stats` answer: a router keeps the counters of every pool
/// it served since it started, so more than a routing holds.
pub const STATS_POOLS: usize = 1024;

/// Checks a host's `Stats` answer on the controller before anything uses
/// it: pool count, names, and each latency histogram
/// ([`gantry_api::LatencyHistogram::check`]: bucket count, values, counts).
pub fn check_stats(pools: &[PoolStats]) -> Result<(), String> {
    count("stats.pools", pools.len(), STATS_POOLS)?;
    for p in pools {
        text("stats.pools[].name", &p.name, NAME)?;
        count(
            "stats.pools[].slower_than",
            p.slower_than.len(),
            LATENCY_LIMITS,
        )?;
        if let Some(h) = &p.latency_histogram {
            h.check()
                .map_err(|e| format!("stats.pools[{:?}].{e}", p.name))?;
        }
    }
    Ok(())
}

fn text(field: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        Err(format!("{field}: longer than {max} bytes"))
    } else {
        Ok(())
    }
}

fn count(field: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        Err(format!("{field}: {n} items, at most {max} allowed"))
    } else {
        Ok(())
    }
}

fn instance_ok(field: &str, i: &InstanceRef) -> Result<(), String> {
    text(field, &i.id, NAME)?;
    if i.id.is_empty() || i.id.contains('/') || i.id.contains("..") {
        return Err(format!("{field}: {:?} is not an instance id", i.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_api::LatencyHistogram;
    use gantry_core::{Digest, EnvName};

    #[test]
    fn checks_name_the_field_out_of_bounds() {
        let call = Call::Stats {
            env: EnvName::try_from("production".to_owned()).unwrap(),
            slower_than_ms: vec![1.0; LATENCY_LIMITS + 1],
            histograms: true,
        };
        assert!(call.check().unwrap_err().contains("stats.slower_than_ms"));
        let call = Call::Logs {
            instance: "../etc".into(),
            max_bytes: 10,
        };
        assert!(call.check().unwrap_err().contains("logs.instance"));
        let call = Call::Exited {
            instance: InstanceRef {
                id: "../x".into(),
                port: 1,
                host: None,
            },
        };
        assert!(call.check().unwrap_err().contains("exited.instance"));
        let call = Call::Usage {
            instances: vec![
                InstanceRef {
                    id: "x".into(),
                    port: 1,
                    host: None,
                };
                INSTANCES + 1
            ],
        };
        assert!(call.check().unwrap_err().contains("usage.instances"));
        let call = Call::UploadChunk {
            digest: Digest::try_from("a".repeat(64)).unwrap(),
            size: 10,
            offset: 8,
            data: vec![0; 4],
        };
        assert!(call
            .check()
            .unwrap_err()
            .contains("runs past the declared size"));
    }

    #[test]
    fn a_stats_answer_with_a_bad_histogram_is_refused_naming_the_pool_and_field() {
        let pool = |buckets: Vec<(u64, u64)>| PoolStats {
            name: "2.0.0".into(),
            requests: 3,
            latency_histogram: Some(LatencyHistogram {
                significant_digits: 3,
                buckets,
            }),
            ..PoolStats::default()
        };
        check_stats(&[pool(vec![(10, 2), (20, 1)])]).unwrap();
        let too_many: Vec<(u64, u64)> = (1..=gantry_api::MAX_LATENCY_BUCKETS as u64 + 1)
            .map(|v| (v, 1))
            .collect();
        let e = check_stats(&[pool(too_many)]).unwrap_err();
        assert!(
            e.contains(r#"stats.pools["2.0.0"].latency_histogram.buckets"#),
            "{e}"
        );
        let e = check_stats(&[pool(vec![(u64::MAX, 1)])]).unwrap_err();
        assert!(e.contains("not within 1..="), "{e}");
        let e = check_stats(&[pool(vec![(20, 1), (10, 1)])]).unwrap_err();
        assert!(e.contains("ascending"), "{e}");
        let many = vec![PoolStats::default(); STATS_POOLS + 1];
        assert!(check_stats(&many).unwrap_err().contains("stats.pools"));
    }
}
