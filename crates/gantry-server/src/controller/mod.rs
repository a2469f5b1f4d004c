//! The controller: turns requests into deployments and drives each one by
//! feeding the pure state machine and carrying out its effects.
//!
//! The order is always: step the machine, persist the event and new state,
//! then run the effects. A controller killed anywhere in between finds the
//! deployment in the store on restart and resumes it (`Event::Resumed`
//! makes the machine re-emit what its phase still needs).

use crate::routing::{MetricProvider, TrafficRouter};
use crate::target::Target;
use gantry_config::{Config, Environment};
use gantry_core::{DeploymentId, Event, Version};
use gantry_store::{Blobs, ReleaseRecord, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

mod access;
mod audit;
mod drift;
mod drive;
mod effects;
mod governance;
mod hashed;
mod hosts;
mod incidents;
mod leadership;
mod migrations;
mod notices;
mod output;
mod queries;
mod recovery;
mod rehearsal;
mod releases;
mod views;
mod watchdog;

pub use crate::clock::now_ms;
pub use crate::error::ControlError;
pub use incidents::{MAX_CLOSE_EVIDENCE, MAX_CLOSE_EVIDENCE_BYTES};
pub use leadership::{ClusterOptions, LeaderTasks};
pub use releases::{NewRelease, VerifyResult, MAX_SIGNATURE_LEN, MAX_VERSION_LEN};
pub use views::{DeploymentSummary, EnvStatus, InstanceStatus, LiveEvent};

/// The deployment controller. Its parts (store, blobs, target, router,
/// metrics, config) are private: the API asks it by name (see `queries.rs`),
/// so a second implementation of a seam changes nothing above it.
///
/// ```compile_fail
/// fn reach(c: &gantry_server::Controller) {
///     let _ = &c.store; // private: use a named method
/// }
/// ```
///
/// ```compile_fail
/// fn reach(c: &gantry_server::Controller) {
///     let _ = &c.config; // private: `c.config()` reads it
/// }
/// ```
pub struct Controller {
    store: Arc<dyn Store>,
    blobs: Blobs,
    target: Arc<dyn Target>,
    router: Arc<dyn TrafficRouter>,
    metrics: Arc<dyn MetricProvider>,
    config: Arc<Config>,
    inboxes: Mutex<HashMap<DeploymentId, mpsc::UnboundedSender<Event>>>,
    http: reqwest::Client,
    /// Live deployment events for server-sent-event subscribers.
    events: tokio::sync::broadcast::Sender<LiveEvent>,
    /// Wakes the notification dispatcher.
    dispatch: Arc<tokio::sync::Notify>,
    /// Set once workloads are being stopped on purpose: no router revival.
    stopping: std::sync::atomic::AtomicBool,
    /// Signs audit checkpoints; loaded from `audit.key` at start.
    audit_key: std::sync::OnceLock<gantry_core::audit::SigningKey>,
    /// Lines for a deployment's log that an effect produced besides its
    /// event; the drive loop records them with that event.
    notes: Mutex<HashMap<DeploymentId, Vec<String>>>,
    /// The periodic drift check's latest findings, for the status page
    /// (which must not check the disk on every request).
    last_drift: Mutex<Vec<gantry_api::DriftFinding>>,
    /// How `GET /hosts` sees the fleet; unset when the config has no hosts.
    host_observer: std::sync::OnceLock<Arc<dyn crate::fleet::HostObserver>>,
    /// The analysis' metric queries' server (`[metrics.prometheus]`), or
    /// why it cannot be asked (a token reference that does not resolve).
    prometheus: Option<Result<crate::prometheus::PrometheusClient, String>>,
    /// Artifacts hashed since this start and unchanged since.
    hashed: hashed::HashedOnce,
    /// Whether this controller leads, and the term its tasks run in.
    leadership: leadership::Leadership,
    /// When this controller process started.
    started_at: gantry_core::Millis,
    /// The data directory.
    data_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// With PostgreSQL: the blobs every controller can read (local ones are a cache).
    shared_blobs: std::sync::OnceLock<Arc<dyn gantry_store::SharedBlobs>>,
}

impl Controller {
    /// The data directory (set at start; else where the blobs' `artifacts/sha256` is).
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        match self.data_dir.get() {
            Some(dir) => dir.clone(),
            None => self
                .blobs
                .dir()
                .ancestors()
                .nth(2)
                .map(std::path::PathBuf::from)
                .unwrap_or_default(),
        }
    }

    /// Where the controller keeps its files: backups, routers' access logs.
    pub fn set_data_dir(&self, dir: &std::path::Path) {
        let _ = self.data_dir.set(dir.to_owned());
    }

    /// Keeps blobs in the shared database too (several controllers).
    pub fn set_shared_blobs(&self, shared: Arc<dyn gantry_store::SharedBlobs>) {
        let _ = self.shared_blobs.set(shared);
    }

    /// After a blob is stored here: kept in the shared database too, so
    /// every controller can read it. An error refuses what stored it.
    pub(crate) fn share_blob(&self, digest: &gantry_core::Digest) -> Result<(), ControlError> {
        match self.shared_blobs.get() {
            Some(shared) => shared
                .upload_blob(&self.blobs, digest)
                .map_err(|e| ControlError::Internal(format!("cannot share blob {digest}: {e}"))),
            None => Ok(()),
        }
    }

    /// Where blob `digest` is on this machine, fetched (verified) from the
    /// shared database first when this controller never had it.
    pub(crate) fn local_blob(
        &self,
        digest: &gantry_core::Digest,
    ) -> Result<std::path::PathBuf, String> {
        let path = self.blobs.path(digest);
        if path.exists() {
            return Ok(path);
        }
        let Some(shared) = self.shared_blobs.get() else {
            return Err(format!(
                "artifact sha256 {digest} is missing from this controller's data directory"
            ));
        };
        match shared.download_blob(&self.blobs, digest) {
            Ok(true) => {
                tracing::info!(%digest, "blob fetched from the shared database");
                Ok(path)
            }
            Ok(false) => Err(format!("artifact sha256 {digest} is in neither this controller's data directory nor the database")),
            Err(e) => Err(format!("cannot fetch artifact sha256 {digest} from the database: {e}")),
        }
    }

    /// [`Controller::local_blob`] from async code: a blob already here is
    /// answered at once; a fetch blocks in place (the controller's runtime
    /// has several workers).
    pub(crate) fn local_blob_in_place(
        &self,
        digest: &gantry_core::Digest,
    ) -> Result<std::path::PathBuf, String> {
        if self.blobs.contains(digest) {
            return Ok(self.blobs.path(digest));
        }
        tokio::task::block_in_place(|| self.local_blob(digest))
    }

    pub fn new(
        store: Arc<dyn Store>,
        blobs: Blobs,
        target: Arc<dyn Target>,
        router: Arc<dyn TrafficRouter>,
        metrics: Arc<dyn MetricProvider>,
        config: Arc<Config>,
    ) -> Arc<Controller> {
        let http = crate::probe::http_client();
        let prometheus = config
            .metrics
            .prometheus
            .as_ref()
            .map(crate::prometheus::PrometheusClient::new);
        Arc::new(Controller {
            prometheus,
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
            last_drift: Mutex::default(),
            host_observer: std::sync::OnceLock::new(),
            hashed: Default::default(),
            leadership: Default::default(),
            started_at: now_ms(),
            data_dir: std::sync::OnceLock::new(),
            shared_blobs: std::sync::OnceLock::new(),
        })
    }

    /// Installs the key that signs audit checkpoints (once; later calls are ignored).
    pub fn set_audit_key(&self, key: gantry_core::audit::SigningKey) {
        let _ = self.audit_key.set(key);
    }

    /// Gives the controller its view of the fleet's hosts (once; later
    /// calls are ignored). Without it, `hosts()` lists the config only.
    pub fn set_host_observer(&self, observer: Arc<dyn crate::fleet::HostObserver>) {
        let _ = self.host_observer.set(observer);
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
}

#[cfg(test)]
mod tests {
    /// A struct's methods live with the struct: every `impl Controller` is
    /// under `controller/`; the rest of the crate uses its public methods.
    #[test]
    fn every_impl_of_the_controller_lives_under_controller() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    rust_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let outside: Vec<String> = files
            .iter()
            .filter(|f| !f.starts_with(src.join("controller")))
            .filter(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .any(|l| l.trim_start().starts_with("impl Controller"))
            })
            .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
            .collect();
        assert!(files.len() > 20, "{files:?}");
        assert_eq!(outside, Vec::<String>::new());
    }
}
