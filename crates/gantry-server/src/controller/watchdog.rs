//! Background upkeep: the router watchdog and the retention task.

use super::{now_ms, Controller};
use gantry_core::{EnvName, Millis};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

impl Controller {
    /// Prunes audit records and finished deployments past the configured
    /// retention, now and then daily; the store keeps an anchor so the audit
    /// chain stays verifiable, and never drops what an environment runs.
    pub fn spawn_retention(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = this.upgrade() else { return };
                let before = now_ms() - c.config.retention.audit_ms as Millis;
                match c.store.prune_audit(before, now_ms()) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(records = n, "pruned audit records past retention");
                        // Sign the new anchor at once.
                        if let Err(e) = c.audit_checkpoint() {
                            tracing::error!(error = %e, "cannot sign an audit checkpoint");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot prune the audit trail"),
                }
                let before = now_ms() - c.config.retention.deployments_ms as Millis;
                match c.store.prune_deployments(before) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deployments = n, "pruned deployments past retention"),
                    Err(e) => tracing::error!(error = %e, "cannot prune deployments"),
                }
                drop(c);
                tokio::time::sleep(Duration::from_secs(86_400)).await;
            }
        });
    }

    /// Keeps every environment's router running: one that died (killed,
    /// crashed) is started again and serves its last routing from disk.
    /// Deployments in flight see its counters start over and judge on.
    pub fn spawn_router_watchdog(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = this.upgrade() else { return };
                c.revive_routers().await;
            }
        });
    }

    async fn revive_routers(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut envs: HashSet<EnvName> = HashSet::new();
        if let Ok(states) = self.store.env_states() {
            envs.extend(states.into_iter().map(|s| s.env));
        }
        if let Ok(active) = self.store.active_deployments() {
            // Only those that have routed: before that there may be no router on purpose.
            envs.extend(
                active
                    .into_iter()
                    .filter(|d| d.traffic_on_new || !d.old_instances.is_empty())
                    .map(|d| d.env),
            );
        }
        for env in envs {
            let Ok(config) = self.env(env.as_str()) else {
                continue;
            };
            match self.router.revive(&env, config.listen).await {
                Ok(true) => {
                    tracing::warn!(env = %env, "router was not running; started it again with its last routing")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(env = %env, error = %e, "cannot start router"),
            }
        }
    }
}
