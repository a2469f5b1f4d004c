//! The controller: turns requests into deployments and drives each one by
//! feeding the pure state machine and carrying out its effects.
//!
//! The order is always: step the machine, persist the event and new state,
//! then run the effects. A controller killed anywhere in between finds the
//! deployment in the store on restart and resumes it (`Event::Resumed`
//! makes the machine re-emit what its phase still needs).

use crate::artifact;
use crate::routing::{MetricProvider, TrafficRouter};
use crate::target::{LaunchSpec, Target};
use gantry_config::{Config, Environment, Strategy};
use gantry_core::analysis::{Baseline, Counts, LatencyLimits};
use gantry_core::machine::{CanarySettings, CanaryStep, Probe, RollStage, RollingSettings};
use gantry_core::{
    step, DeploySettings, Deployment, DeploymentId, DeploymentKind, Effect, EnvName, Event,
    HealthSettings, InstanceRef, Millis, Version,
};
use gantry_router::{Affinity, Pool};
use gantry_store::{Blobs, EnvState, InsertOutcome, ReleaseRecord, Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a request was refused. The API maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's roles do not allow it, or a rule forbids this caller.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EnvironmentBusy { .. } => ControlError::Conflict(e.to_string()),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The longest version accepted: it names the release's directory (and
/// its manifest), which must fit a file name (255 bytes) with room to spare.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest signature accepted; minisign's are a few hundred bytes.
pub const MAX_SIGNATURE_LEN: usize = 4096;

/// A new release as received by the API.
#[derive(Debug)]
pub struct NewRelease<'a> {
    pub version: &'a str,
    /// The uploaded artifact, hashed, not yet in the store.
    pub artifact: gantry_store::Staged,
    pub git_sha: Option<String>,
    /// The `.minisig` file's text.
    pub signature: Option<String>,
    pub by: &'a str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VerifyResult {
    pub version: String,
    pub digest: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EnvStatus {
    pub name: String,
    pub listen: String,
    pub version: Option<String>,
    pub since: Option<Millis>,
    pub instances: Vec<InstanceStatus>,
    pub active_deployment: Option<DeploymentSummary>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub port: u16,
    pub running: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeploymentSummary {
    pub id: DeploymentId,
    pub version: String,
    pub phase: String,
}

/// What live views hear: each recorded step of a deployment, and each notice.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    Step {
        deployment: DeploymentId,
        env: String,
        version: String,
        phase: String,
        log: Vec<String>,
        at: Millis,
    },
    Notice(gantry_core::notify::Notice),
}

pub struct Controller {
    pub store: Arc<dyn Store>,
    pub blobs: Blobs,
    pub target: Arc<dyn Target>,
    pub router: Arc<dyn TrafficRouter>,
    pub metrics: Arc<dyn MetricProvider>,
    pub config: Arc<Config>,
    inboxes: Mutex<HashMap<DeploymentId, mpsc::UnboundedSender<Event>>>,
    pub(crate) http: reqwest::Client,
    /// Live deployment events for server-sent-event subscribers.
    pub events: tokio::sync::broadcast::Sender<LiveEvent>,
    /// Wakes the notification dispatcher.
    pub(crate) dispatch: Arc<tokio::sync::Notify>,
    /// Set once workloads are being stopped on purpose: no router revival.
    stopping: std::sync::atomic::AtomicBool,
    /// Signs audit checkpoints; loaded from `audit.key` at start.
    pub(crate) audit_key: std::sync::OnceLock<gantry_core::audit::SigningKey>,
    /// Lines for a deployment's log that an effect produced besides its
    /// event; the drive loop records them with that event.
    notes: Mutex<HashMap<DeploymentId, Vec<String>>>,
}

impl Controller {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Blobs,
        target: Arc<dyn Target>,
        router: Arc<dyn TrafficRouter>,
        metrics: Arc<dyn MetricProvider>,
        config: Arc<Config>,
    ) -> Arc<Controller> {
        let http = http_client();
        Arc::new(Controller {
            store,
            blobs,
            target,
            router,
            metrics,
            config,
            inboxes: Mutex::default(),
            http,
            events: tokio::sync::broadcast::channel(1024).0,
            dispatch: Arc::new(tokio::sync::Notify::new()),
            stopping: Default::default(),
            audit_key: std::sync::OnceLock::new(),
            notes: Mutex::default(),
        })
    }

    /// Installs the key that signs audit checkpoints (once; later calls are ignored).
    pub fn set_audit_key(&self, key: gantry_core::audit::SigningKey) {
        let _ = self.audit_key.set(key);
    }

    /// The environment named `name`, or an error naming the known ones.
    pub fn env(&self, name: &str) -> Result<&Environment, ControlError> {
        self.config.environment(name).ok_or_else(|| {
            ControlError::NotFound(format!(
                "environment {name:?} is not defined; known: {}",
                self.config.environment_names().join(", ")
            ))
        })
    }

    fn add_notes(&self, id: DeploymentId, lines: Vec<String>) {
        if !lines.is_empty() {
            self.notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id)
                .or_default()
                .extend(lines);
        }
    }

    fn take_notes(&self, id: DeploymentId) -> Vec<String> {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .unwrap_or_default()
    }

    fn parse_version(s: &str) -> Result<Version, ControlError> {
        Version::parse(s).map_err(|e| {
            ControlError::Invalid(format!(
                "{s:?} is not a semantic version (expected X.Y.Z, e.g. 1.4.2): {e}"
            ))
        })
    }

    fn registered(&self, version: &Version) -> Result<ReleaseRecord, ControlError> {
        self.store.release(version)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "release {version} is not registered; `gantry release list` shows the registered ones"
            ))
        })
    }

    // ---- releases ----

    pub fn register_release(
        &self,
        r: NewRelease<'_>,
    ) -> Result<(ReleaseRecord, bool), ControlError> {
        if r.version.len() > MAX_VERSION_LEN {
            return Err(ControlError::Invalid(format!(
                "version is {} characters long; at most {MAX_VERSION_LEN} are accepted (it names the release's directory)",
                r.version.len()
            )));
        }
        let version = Self::parse_version(r.version)?;
        if let Some(sha) = &r.git_sha {
            if !(7..=40).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ControlError::Invalid(format!(
                    "git SHA {sha:?} is not a hex commit id of 7 to 40 characters"
                )));
            }
        }
        if let Some(sig) = &r.signature {
            if sig.len() > MAX_SIGNATURE_LEN {
                return Err(ControlError::Invalid(format!(
                    "signature is {} bytes long; a minisign signature file is at most {MAX_SIGNATURE_LEN}",
                    sig.len()
                )));
            }
        }
        let staged = r.artifact;
        let refused = |e: String| ControlError::Invalid(format!("release {version} refused: {e}"));
        let kind = artifact::detect_kind(staged.path()).map_err(ControlError::Invalid)?;
        let signed_by = match &r.signature {
            Some(sig) => Some(
                artifact::verify_signature(staged.path(), sig, &self.config.signing.public_keys)
                    .map_err(refused)?,
            ),
            None => None,
        };
        // Check for a conflict before storing the blob, so a refused upload leaves nothing behind.
        let digest = staged.digest().clone();
        if let Some(existing) = self.store.release(&version)? {
            if existing.digest != digest {
                return Err(ControlError::Conflict(format!(
                    "release {version} already exists with different content (sha256 {}); releases are immutable, use a new version",
                    existing.digest
                )));
            }
            return Ok((existing, false));
        }
        // A release that could never unpack is refused now, not at its first deployment.
        artifact::check(kind, staged.path(), &self.config.artifacts).map_err(refused)?;
        let record = ReleaseRecord {
            version: version.clone(),
            digest: digest.clone(),
            size: staged.size(),
            artifact_kind: kind.to_owned(),
            git_sha: r.git_sha.map(|s| s.to_ascii_lowercase()),
            signature: r.signature,
            signed_by,
            created_at: now_ms(),
            created_by: r.by.to_owned(),
        };
        self.blobs
            .commit(staged)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        match self.store.insert_release(&record)? {
            InsertOutcome::Inserted => Ok((record, true)),
            InsertOutcome::AlreadyPresent => Ok((self.registered(&version)?, false)),
            InsertOutcome::Conflict { existing } => Err(ControlError::Conflict(format!(
                "release {version} already exists with different content (sha256 {existing})"
            ))),
        }
    }

    pub fn release(&self, version: &str) -> Result<ReleaseRecord, ControlError> {
        self.registered(&Self::parse_version(version)?)
    }

    /// Re-hashes every stored artifact, and checks each release directory
    /// already unpacked against its manifest (without repairing it: the
    /// next deployment of that release does).
    pub async fn verify_releases(&self) -> Result<Vec<VerifyResult>, ControlError> {
        let mut results = Vec::new();
        for r in self.store.releases()? {
            let blobs = self.blobs.clone();
            let digest = r.digest.clone();
            let artifact = tokio::task::spawn_blocking(move || blobs.verify(&digest))
                .await
                .map_err(|e| ControlError::Internal(e.to_string()))?;
            let (ok, detail) = match artifact {
                Err(e) => (false, e.to_string()),
                Ok(()) => match self.target.check_release(&r).await {
                    None => (true, "checksum verified".to_owned()),
                    Some(Ok(())) => (
                        true,
                        "checksum verified; release directory matches its manifest".to_owned(),
                    ),
                    Some(Err(why)) => (
                        false,
                        format!("checksum verified, but the release directory does not match its manifest ({why}); its next deployment unpacks it again"),
                    ),
                },
            };
            results.push(VerifyResult {
                version: r.version.to_string(),
                digest: r.digest.to_string(),
                ok,
                detail,
            });
        }
        Ok(results)
    }

    // ---- deployments ----

    fn settings_for(&self, env: &Environment, kind: DeploymentKind) -> DeploySettings {
        let h = &self.config.health;
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
            // A rollback goes straight back: no canary steps on the way.
            canary: match (&env.strategy, kind) {
                (Strategy::Canary(c), DeploymentKind::Deploy) => Some(CanarySettings {
                    steps: c
                        .steps
                        .iter()
                        .map(|s| CanaryStep {
                            weight: s.weight,
                            pause: s.pause,
                        })
                        .collect(),
                    analysis: self.config.analysis.clone(),
                    interval_ms: c.interval_ms,
                    max_wait_ms: c.max_wait_ms,
                }),
                _ => None,
            },
            // A rollback returns to what served before, all at once.
            rolling: match (&env.strategy, kind) {
                (Strategy::Rolling(r), DeploymentKind::Deploy) => Some(RollingSettings {
                    max_surge: r.max_surge,
                    max_unavailable: r.max_unavailable,
                }),
                _ => None,
            },
            smoke: env.smoke.clone(),
            freezes: env.freezes.clone(),
        }
    }

    async fn check_listen_free(&self, env: &Environment) -> Result<(), ControlError> {
        // A deployment in progress may be starting the router this very
        // moment; the store refuses the second deployment with a clearer reason.
        let busy = self
            .store
            .active_deployments()?
            .iter()
            .any(|d| d.env == env.name);
        if busy || self.router.is_running(&env.name).await {
            return Ok(());
        }
        std::net::TcpListener::bind(env.listen)
            .map(drop)
            .map_err(|e| {
                ControlError::Conflict(format!(
                    "environment {} listens on {}, which is not available: {e}",
                    env.name, env.listen
                ))
            })
    }

    /// A new deployment of `version` into `env`, once the release passed the
    /// promotion path, the gates, the change type's rules and the freezes.
    pub async fn deploy(
        self: &Arc<Self>,
        env: &str,
        version: &str,
        by: &str,
        change: Option<&str>,
        reason: Option<String>,
    ) -> Result<Deployment, ControlError> {
        let env = self.env(env)?.clone();
        let version = Self::parse_version(version)?;
        let release = self.registered(&version)?;
        if env.require_signature && release.signed_by.is_none() {
            return Err(ControlError::Invalid(format!(
                "environment {} requires a signed release; {version} was registered without a signature",
                env.name
            )));
        }
        let change = self.admit(&env, &version, change, reason)?;
        if change.change == gantry_core::governance::ChangeType::Emergency {
            self.supersede_waiting(&env.name, by).await?;
        }
        self.check_listen_free(&env).await?;
        self.create(&env, DeploymentKind::Deploy, version, by, Some(change))
    }

    pub async fn rollback(
        self: &Arc<Self>,
        env: &str,
        to: Option<&str>,
        by: &str,
    ) -> Result<Deployment, ControlError> {
        let env = self.env(env)?.clone();
        let current = self.store.env_state(&env.name)?.ok_or_else(|| {
            ControlError::Conflict(format!(
                "nothing has been deployed to {}; there is nothing to roll back",
                env.name
            ))
        })?;
        let target = match to {
            Some(v) => {
                let v = Self::parse_version(v)?;
                self.registered(&v)?;
                if v == current.version {
                    return Err(ControlError::Invalid(format!(
                        "{v} is already serving {}",
                        env.name
                    )));
                }
                if !self.store.succeeded_versions(&env.name)?.contains(&v) {
                    return Err(ControlError::Invalid(format!(
                        "{v} never succeeded in {}; a rollback returns to a release that did",
                        env.name
                    )));
                }
                v
            }
            None => self
                .store
                .last_good_other_than(&env.name, &current.version)?
                .ok_or_else(|| {
                    ControlError::Conflict(format!(
                        "{} has no earlier successful release than {} to roll back to",
                        env.name, current.version
                    ))
                })?,
        };
        self.check_listen_free(&env).await?;
        // A rollback returns to a release that already served here: it is
        // the way out of trouble, so no gate, approval or freeze holds it.
        self.create(&env, DeploymentKind::Rollback, target, by, None)
    }

    fn create(
        self: &Arc<Self>,
        env: &Environment,
        kind: DeploymentKind,
        version: Version,
        by: &str,
        change: Option<gantry_core::governance::ChangeControl>,
    ) -> Result<Deployment, ControlError> {
        let current = self.store.env_state(&env.name)?;
        let settings = self.settings_for(env, kind);
        let now = now_ms();
        let d = self.store.create_deployment(&env.name, &mut |id| {
            let d = Deployment::new(
                id,
                env.name.clone(),
                kind,
                version.clone(),
                current.as_ref().map(|c| c.version.clone()),
                current
                    .as_ref()
                    .map(|c| c.instances.clone())
                    .unwrap_or_default(),
                settings.clone(),
                by.to_owned(),
                now,
            );
            match &change {
                Some(c) => d.with_change(c.clone()),
                None => d,
            }
        })?;
        self.launch(d.clone(), Event::Created);
        Ok(d)
    }

    /// Starts driving a deployment in the background, beginning with `first`
    /// (`Created` for a new one, `Resumed` after a restart).
    pub fn launch(self: &Arc<Self>, d: Deployment, first: Event) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.id, tx.clone());
        let _ = tx.send(first);
        tokio::spawn(self.clone().drive(d, tx, rx));
    }

    async fn drive(
        self: Arc<Self>,
        mut d: Deployment,
        tx: mpsc::UnboundedSender<Event>,
        mut rx: mpsc::UnboundedReceiver<Event>,
    ) {
        while let Some(event) = rx.recv().await {
            let now = now_ms();
            let mut t = step(&d, &event, now);
            // What an effect found on the way (a repaired release directory)
            // goes on the log before the line of the event it led to.
            let notes = self.take_notes(d.id);
            if !notes.is_empty() {
                t.log.splice(0..0, notes);
            }
            if t.deployment == d && t.effects.is_empty() && t.log.is_empty() {
                continue; // A stale event: nothing to record, nothing to do.
            }
            // Persist before acting. If the store refuses, act on nothing and retry.
            let outbox = self.outbox(&event, &d, &t.deployment, now);
            if let Err(e) = self.store.record(&event, &t, now, &outbox) {
                tracing::error!(deployment = d.id, error = %e, "cannot record event; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(event);
                continue;
            }
            for line in &t.log {
                tracing::info!(deployment = d.id, env = %d.env, "{line}");
            }
            self.announced(outbox);
            let _ = self.events.send(LiveEvent::Step {
                deployment: d.id,
                env: d.env.to_string(),
                version: d.version.to_string(),
                phase: t.deployment.phase.as_str().to_owned(),
                log: t.log.clone(),
                at: now,
            });
            d = t.deployment;
            for effect in t.effects {
                tokio::spawn(self.clone().execute(d.clone(), effect, tx.clone()));
            }
            if d.phase.is_terminal() {
                break;
            }
        }
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&d.id);
        if d.phase == gantry_core::Phase::Succeeded && d.kind == DeploymentKind::Deploy {
            self.auto_deploy_after(Some(&d.env), &d.version).await;
        }
    }

    async fn execute(
        self: Arc<Self>,
        d: Deployment,
        effect: Effect,
        tx: mpsc::UnboundedSender<Event>,
    ) {
        let event = match effect {
            Effect::PrepareRelease { version } => match self.prepare(&d, &version).await {
                Ok(repairs) => {
                    self.add_notes(d.id, repairs);
                    Event::Prepared
                }
                Err(reason) => Event::PrepareFailed { reason },
            },
            Effect::StartInstances { version, count } => {
                match self.start(&d, &version, count).await {
                    Ok(instances) => Event::InstancesStarted { instances },
                    Err(reason) => Event::StartFailed { reason },
                }
            }
            Effect::ProbeHealth { instance, at } => {
                sleep_until(at).await;
                self.probe(&instance).await
            }
            Effect::RouteTraffic { instances, to_new } => {
                let name = if to_new {
                    Some(&d.version)
                } else {
                    d.previous_version.as_ref()
                };
                let pools = pools_for(name, &instances);
                match self.route(&d.env, pools).await {
                    Ok(()) => Event::TrafficRouted { to_new },
                    Err(reason) => Event::RouteFailed { reason },
                }
            }
            Effect::StopInstances { instances } => loop {
                match self.target.stop(&instances).await {
                    Ok(()) => break Event::InstancesStopped,
                    Err(e) => {
                        tracing::error!(deployment = d.id, error = %e, "stop failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            Effect::WakeAt { at } => {
                sleep_until(at).await;
                Event::Tick
            }
            Effect::ObserveBaseline => {
                let (stable_name, _) = pool_names(&d);
                let baseline = match self.metrics.pool_stats(&d.env, &[]).await {
                    Ok(pools) => pools
                        .iter()
                        .find(|p| p.name == stable_name)
                        .map(|p| Baseline {
                            requests: p.requests,
                            errors: p.errors,
                            p50_ms: p.p50_ms,
                            p99_ms: p.p99_ms,
                        })
                        .unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(deployment = d.id, error = %e, "no baseline; rules relative to it are off");
                        Baseline::default()
                    }
                };
                Event::BaselineObserved { baseline }
            }
            Effect::ShiftTraffic {
                weight,
                stable,
                canary,
            } => {
                let (stable_name, canary_name) = pool_names(&d);
                let pools = vec![
                    Pool {
                        name: stable_name,
                        weight: 100 - weight.min(100),
                        upstreams: upstreams(&stable),
                    },
                    Pool {
                        name: canary_name,
                        weight: weight.min(100),
                        upstreams: upstreams(&canary),
                    },
                ];
                match self.route(&d.env, pools).await {
                    Ok(()) => Event::TrafficRouted { to_new: true },
                    Err(reason) => Event::RouteFailed { reason },
                }
            }
            Effect::ObserveMetrics { limits, at } => {
                sleep_until(at).await;
                self.observe_metrics(&d, &limits).await
            }
            Effect::RunSmoke { instances } => {
                crate::smoke::answer(&self.http, d.settings.smoke.as_ref(), &instances).await
            }
            Effect::RestoreInstances { version, instances } => {
                match self.restore(&d, &version, &instances).await {
                    Ok(()) => Event::InstancesRestored,
                    Err(reason) => Event::RestoreFailed { reason },
                }
            }
        };
        let _ = tx.send(event);
    }

    /// Both pools' cumulative counts, with requests over each latency limit.
    async fn observe_metrics(&self, d: &Deployment, limits: &LatencyLimits) -> Event {
        let asked: Vec<f64> = [limits.p99_ms, limits.p50_ms, limits.compare_ms]
            .into_iter()
            .flatten()
            .collect();
        let pools = match self.metrics.pool_stats(&d.env, &asked).await {
            Ok(p) => p,
            Err(e) => {
                return Event::MetricsUnavailable {
                    reason: e.to_string(),
                }
            }
        };
        let (stable_name, canary_name) = pool_names(d);
        let counts = |name: &str| -> Counts {
            // A pool that has not served yet has no counters: zero.
            let Some(p) = pools.iter().find(|p| p.name == name) else {
                return Counts::default();
            };
            let over = |limit: Option<f64>| {
                limit
                    .and_then(|l| p.slower_than.iter().find(|s| s.limit_ms == l))
                    .map_or(0, |s| s.requests)
            };
            Counts {
                requests: p.requests,
                errors: p.errors,
                client_errors: p.client_errors,
                over_p99_limit: over(limits.p99_ms),
                over_p50_limit: over(limits.p50_ms),
                over_compare_limit: over(limits.compare_ms),
            }
        };
        Event::MetricsObserved {
            canary: counts(&canary_name),
            stable: counts(&stable_name),
        }
    }

    /// Sends a person's request (promote, pause, resume, abort) to a running deployment.
    pub fn request(&self, id: DeploymentId, event: Event) -> Result<(), ControlError> {
        let d = self
            .store
            .deployment(id)?
            .ok_or_else(|| ControlError::NotFound(format!("deployment {id} does not exist")))?;
        if d.phase.is_terminal() {
            return Err(ControlError::Conflict(format!(
                "deployment {id} already finished ({})",
                d.phase.as_str()
            )));
        }
        use gantry_core::Phase;
        let held_smoke = d.smoke.as_ref().is_some_and(|s| s.held)
            && (d.phase == Phase::Smoke
                || d.rolling
                    .as_ref()
                    .is_some_and(|r| r.stage == RollStage::Smoke));
        let allowed = match event {
            Event::PromoteRequested { .. } => d.phase == Phase::Canary || held_smoke,
            Event::PauseRequested { .. } | Event::ResumeRequested { .. } => {
                d.phase == Phase::Canary
            }
            _ => true,
        };
        if !allowed {
            return Err(ControlError::Conflict(format!(
                "deployment {id} is {}: promote acts on a canary step or on smoke checks waiting for a decision; pause and resume act on canary steps",
                d.phase.as_str()
            )));
        }
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        match inboxes.get(&id) {
            Some(tx) => {
                let _ = tx.send(event);
                Ok(())
            }
            None => Err(ControlError::Internal(format!(
                "deployment {id} is not being driven"
            ))),
        }
    }

    /// Re-hashes the artifact, checks its signature where the environment
    /// requires one, and has the target unpack (or re-check) it. Returns
    /// what the target had to repair, for the deployment log.
    async fn prepare(&self, d: &Deployment, version: &Version) -> Result<Vec<String>, String> {
        let release = self.registered(version).map_err(|e| e.to_string())?;
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let blobs = self.blobs.clone();
        let digest = release.digest.clone();
        tokio::task::spawn_blocking(move || blobs.verify(&digest))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("artifact of {version} failed verification: {e}"))?;
        let path = self.blobs.path(&release.digest);
        if env.require_signature {
            let sig = release.signature.clone().ok_or_else(|| {
                format!(
                    "environment {} requires a signed release; {version} has no signature",
                    d.env
                )
            })?;
            let keys = self.config.signing.public_keys.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || artifact::verify_signature(&path, &sig, &keys))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("signature of {version}: {e}"))?;
        }
        self.target
            .prepare(&release, &path, &self.config.artifacts)
            .await
            .map_err(|e| e.to_string())
    }

    /// Plain variables and resolved secrets for an environment.
    fn launch_spec(
        &self,
        env: &Environment,
        deployment: DeploymentId,
        version: &Version,
        count: u32,
    ) -> Result<LaunchSpec, String> {
        let svc = &self.config.service;
        let mut vars: BTreeMap<String, String> = svc.env.clone();
        vars.extend(env.env.clone());
        let mut secrets = svc.secrets.clone();
        secrets.extend(env.secrets.clone());
        for (name, source) in secrets {
            let value = crate::secret_file::resolve(&name, &source)?;
            vars.insert(name, value);
        }
        Ok(LaunchSpec {
            env: env.name.clone(),
            deployment,
            version: version.clone(),
            count,
            command: svc.command.clone(),
            args: svc.args.clone(),
            port_env: svc.port_env.clone(),
            vars,
        })
    }

    async fn start(
        &self,
        d: &Deployment,
        version: &Version,
        count: u32,
    ) -> Result<Vec<InstanceRef>, String> {
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let spec = self.launch_spec(env, d.id, version, count)?;
        self.target
            .ensure_instances(&spec)
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts stopped instances again with their old ids and ports, and
    /// waits until each answers its health check.
    async fn restore(
        &self,
        d: &Deployment,
        version: &Version,
        instances: &[InstanceRef],
    ) -> Result<(), String> {
        let env = self.env(d.env.as_str()).map_err(|e| e.to_string())?;
        let spec = self.launch_spec(env, d.id, version, instances.len() as u32)?;
        for i in instances {
            self.target
                .restart_instance(&spec, i)
                .await
                .map_err(|e| e.to_string())?;
        }
        let deadline = now_ms() + d.settings.health.start_timeout_ms as Millis;
        for i in instances {
            loop {
                match self.probe(i).await {
                    Event::HealthObserved {
                        probe: Probe::Healthy,
                        ..
                    } => break,
                    Event::InstanceExited { detail, .. } => {
                        return Err(format!("{} exited: {detail}", i.id))
                    }
                    _ if now_ms() >= deadline => {
                        return Err(format!(
                            "{} did not become healthy within {}ms",
                            i.id, d.settings.health.start_timeout_ms
                        ))
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(
                            d.settings.health.startup_interval_ms,
                        ))
                        .await
                    }
                }
            }
        }
        Ok(())
    }

    async fn probe(&self, instance: &InstanceRef) -> Event {
        let h = &self.config.health;
        let url = format!("http://127.0.0.1:{}{}", instance.port, h.path);
        let result = self
            .http
            .get(&url)
            .timeout(Duration::from_millis(h.timeout_ms))
            .send()
            .await;
        let probe = match result {
            Ok(resp) if resp.status().is_success() => Probe::Healthy,
            Ok(resp) => Probe::Unhealthy(format!(
                "GET {} answered HTTP {}",
                h.path,
                resp.status().as_u16()
            )),
            Err(e) if e.is_timeout() => {
                Probe::Unhealthy(format!("GET {} timed out after {}ms", h.path, h.timeout_ms))
            }
            Err(e) => {
                if let Some(detail) = self.target.exited(instance).await {
                    return Event::InstanceExited {
                        instance: instance.id.clone(),
                        detail,
                    };
                }
                Probe::Unreachable(if e.is_connect() {
                    "connection refused".to_owned()
                } else {
                    e.to_string()
                })
            }
        };
        Event::HealthObserved {
            instance: instance.id.clone(),
            probe,
        }
    }

    async fn route(&self, env: &EnvName, pools: Vec<Pool>) -> Result<(), String> {
        let env_config = self.env(env.as_str()).map_err(|e| e.to_string())?;
        let affinity = env_config.sticky.as_ref().map(|s| match s {
            gantry_config::Sticky::Cookie(name) => Affinity::Cookie(name.clone()),
            gantry_config::Sticky::Header(name) => Affinity::Header(name.clone()),
        });
        self.router
            .route(env, env_config.listen, pools, affinity)
            .await
            .map_err(|e| e.to_string())
    }

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

    // ---- restart ----

    /// After a restart: stop instances nobody owns, restart dead ones that
    /// should serve, make sure every router runs, then resume deployments.
    pub async fn recover(self: &Arc<Self>) -> Result<(), ControlError> {
        let active = self.store.active_deployments()?;
        let states = self.store.env_states()?;
        let mut owned: HashSet<String> = HashSet::new();
        for s in &states {
            owned.extend(s.instances.iter().map(|i| i.id.clone()));
        }
        for d in &active {
            owned.extend(
                d.old_instances
                    .iter()
                    .chain(&d.new_instances)
                    .map(|i| i.id.clone()),
            );
        }
        let active_ids: HashSet<DeploymentId> = active.iter().map(|d| d.id).collect();
        let orphans: Vec<InstanceRef> = self
            .target
            .running()
            .await
            .into_iter()
            .filter(|r| !owned.contains(&r.id) && !active_ids.contains(&r.deployment))
            .map(|r| InstanceRef {
                id: r.id,
                port: r.port,
            })
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "stopping instances that no deployment owns"
            );
            let _ = self.target.stop(&orphans).await;
        }
        for s in &states {
            let Some(env) = self.config.environment(s.env.as_str()) else {
                tracing::warn!(env = %s.env, "environment is no longer in the config; leaving it alone");
                continue;
            };
            if let Some(d) = active.iter().find(|d| d.env == s.env) {
                // The deployment decides where traffic goes; keep its router up meanwhile.
                if !self.router.is_running(&s.env).await {
                    let (name, inst) = if d.traffic_on_new {
                        (Some(&d.version), &d.new_instances)
                    } else {
                        (d.previous_version.as_ref(), &d.old_instances)
                    };
                    let _ = self.route(&s.env, pools_for(name, inst)).await;
                }
                continue;
            }
            self.restore_env(env, s).await;
        }
        for d in active {
            tracing::info!(
                deployment = d.id,
                phase = d.phase.as_str(),
                "resuming deployment"
            );
            self.launch(d, Event::Resumed);
        }
        Ok(())
    }

    async fn restore_env(&self, env: &Environment, s: &EnvState) {
        match self.launch_spec(env, s.deployment, &s.version, s.instances.len() as u32) {
            Ok(spec) => {
                for i in &s.instances {
                    if self.target.exited(i).await.is_some() {
                        tracing::warn!(instance = %i.id, "instance was not running; starting it again");
                        if let Err(e) = self.target.restart_instance(&spec, i).await {
                            tracing::error!(instance = %i.id, error = %e, "could not restart instance");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(env = %env.name, error = %e, "cannot restart instances"),
        }
        if !self.router.is_running(&env.name).await {
            if let Err(e) = self
                .route(&env.name, pools_for(Some(&s.version), &s.instances))
                .await
            {
                tracing::error!(env = %env.name, error = %e, "cannot start router");
            }
        }
    }

    pub async fn status(&self) -> Result<Vec<EnvStatus>, ControlError> {
        let states = self.store.env_states()?;
        let active = self.store.active_deployments()?;
        let mut out = Vec::new();
        for env in &self.config.environments {
            let state = states.iter().find(|s| s.env == env.name);
            let mut instances = Vec::new();
            for i in state.map(|s| s.instances.as_slice()).unwrap_or_default() {
                instances.push(InstanceStatus {
                    id: i.id.clone(),
                    port: i.port,
                    running: self.target.exited(i).await.is_none(),
                });
            }
            out.push(EnvStatus {
                name: env.name.to_string(),
                listen: env.listen.to_string(),
                version: state.map(|s| s.version.to_string()),
                since: state.map(|s| s.since),
                instances,
                active_deployment: active.iter().find(|d| d.env == env.name).map(|d| {
                    DeploymentSummary {
                        id: d.id,
                        version: d.version.to_string(),
                        phase: d.phase.as_str().to_owned(),
                    }
                }),
            });
        }
        Ok(out)
    }

    /// Stops every instance and router this controller runs.
    pub async fn stop_workloads(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let running: Vec<InstanceRef> = self
            .target
            .running()
            .await
            .into_iter()
            .map(|r| InstanceRef {
                id: r.id,
                port: r.port,
            })
            .collect();
        let _ = self.target.stop(&running).await;
        for env in &self.config.environments {
            self.router.stop(&env.name).await;
        }
    }
}

/// Names of the stable and canary pools of a canary rollout; distinct even
/// when a release is deployed over itself.
/// The controller's HTTP client. Instances answer its probes and smoke
/// checks: a release must not be able to send the controller elsewhere, so a
/// redirect is an answer, never followed (nor for notifications, whose
/// bodies carry secrets).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static client config is valid")
}

fn pool_names(d: &Deployment) -> (String, String) {
    let stable = d
        .previous_version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "stable".to_owned());
    let canary = d.version.to_string();
    if stable == canary {
        (stable, format!("{canary} (deployment {})", d.id))
    } else {
        (stable, canary)
    }
}

fn upstreams(instances: &[InstanceRef]) -> Vec<std::net::SocketAddr> {
    instances
        .iter()
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], i.port)))
        .collect()
}

fn pools_for(name: Option<&Version>, instances: &[InstanceRef]) -> Vec<Pool> {
    if instances.is_empty() {
        return Vec::new();
    }
    vec![Pool {
        name: name
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".to_owned()),
        weight: 100,
        upstreams: upstreams(instances),
    }]
}

async fn sleep_until(at: Millis) {
    let delay = at - now_ms();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
}
