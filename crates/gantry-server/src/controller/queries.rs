//! What the API reads through the controller: the store's records, an
//! instance's log, a router's figures and the live event stream. Named
//! methods, so the API never reaches into the controller's parts and a
//! second `Store`, `Target` or `MetricProvider` changes nothing above here.

use super::{ControlError, Controller, LiveEvent};
use crate::audit::RefusalLimiter;
use crate::routing::MetricError;
use crate::target::TargetError;
use gantry_config::Config;
use gantry_core::audit::{AuditEntry, AuditRecord, Checkpoint};
use gantry_core::governance::Approval;
use gantry_core::{Deployment, DeploymentId, EnvName, Millis, Version};
use gantry_router::PoolStats;
use gantry_store::{Blobs, Delivery, EvidenceRecord, LogEntry, ReleaseRecord, TokenRecord, User};

impl Controller {
    /// The configuration this controller runs with (read-only).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where uploaded artifacts are staged and kept.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Live deployment events and notices, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// What each environment runs now (those deployed to at least once).
    pub fn env_states(&self) -> Result<Vec<gantry_store::EnvState>, ControlError> {
        Ok(self.store.env_states()?)
    }

    pub fn env_state(&self, env: &EnvName) -> Result<Option<gantry_store::EnvState>, ControlError> {
        Ok(self.store.env_state(env)?)
    }

    /// Deployments not yet finished.
    pub fn active_deployments(&self) -> Result<Vec<Deployment>, ControlError> {
        Ok(self.store.active_deployments()?)
    }

    /// Whether the target still runs this instance.
    pub async fn instance_running(&self, instance: &gantry_core::InstanceRef) -> bool {
        self.target.exited(instance).await.is_none()
    }

    pub fn releases(&self) -> Result<Vec<ReleaseRecord>, ControlError> {
        Ok(self.store.releases()?)
    }

    /// The newest `limit` deployments, of one environment or all.
    pub fn deployments(
        &self,
        env: Option<&EnvName>,
        limit: usize,
    ) -> Result<Vec<Deployment>, ControlError> {
        Ok(self.store.deployments(env, limit)?)
    }

    pub fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>, ControlError> {
        Ok(self.store.deployment(id)?)
    }

    /// Every verdict given on a deployment.
    pub fn approvals(&self, id: DeploymentId) -> Result<Vec<Approval>, ControlError> {
        Ok(self.store.approvals(id)?)
    }

    pub fn deployment_log(&self, id: DeploymentId) -> Result<Vec<LogEntry>, ControlError> {
        Ok(self.store.log(id)?)
    }

    pub fn users(&self) -> Result<Vec<User>, ControlError> {
        Ok(self.store.users()?)
    }

    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, ControlError> {
        Ok(self.store.tokens(user)?)
    }

    pub fn evidence(&self, version: &Version) -> Result<Vec<EvidenceRecord>, ControlError> {
        Ok(self.store.evidence(version)?)
    }

    pub fn deliveries(
        &self,
        deployment: Option<DeploymentId>,
        limit: usize,
    ) -> Result<Vec<Delivery>, ControlError> {
        Ok(self.store.deliveries(deployment, limit)?)
    }

    /// The tail of an instance's output, at most `max_bytes`.
    pub async fn instance_log(&self, id: &str, max_bytes: u64) -> Result<String, TargetError> {
        self.target.logs(id, max_bytes).await
    }

    /// What each release pool of `env` served, from its metric provider.
    pub async fn traffic(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Vec<PoolStats>, MetricError> {
        self.metrics.pool_stats(env, slower_than_ms).await
    }

    // ---- the audit trail ----

    pub fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, ControlError> {
        Ok(self.store.append_audit(entry)?)
    }

    /// Records one summary of a peer's counted refusals.
    pub fn flush_refusals(&self, limiter: &RefusalLimiter, peer: std::net::IpAddr, at: Millis) {
        limiter.flush(&*self.store, peer, at);
    }

    pub fn audit_head(&self) -> Result<(u64, String), ControlError> {
        Ok(self.store.audit_head()?)
    }

    pub fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        Ok(self.store.audit_records(after_seq, limit)?)
    }

    /// Where a pruned trail now starts, if it was pruned.
    pub fn audit_anchor(&self) -> Result<Option<(u64, String)>, ControlError> {
        Ok(self.store.audit_anchor()?)
    }

    pub fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>, ControlError> {
        Ok(self.store.latest_audit_checkpoint()?)
    }
}
