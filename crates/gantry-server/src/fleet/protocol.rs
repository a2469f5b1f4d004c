//! The typed messages between a controller and `gantry host serve`, shared
//! by both ends (framing in `frame.rs`, bounds in `bounds.rs`).
//!
//! The controller sends [`Request`]s (an id and a [`Call`]), the host answers
//! each with a [`Reply`] carrying the same id, in whatever order the work
//! finishes, so several deployment tasks share one channel. A new request
//! is one variant of [`Call`], one arm in `serve.rs`, one method on
//! `HostLink`.
//!
//! Every message is bounded twice: by the frame limit, and by [`Call::check`]
//! (counts and string lengths), which the host applies before acting.

pub use super::bounds;
pub use super::frame::{decode, encode, read_frame, skip, write_frame, FrameError};
use crate::target::{LaunchSpec, RunningInstance};
use gantry_api::PoolStats;
use gantry_config::ArtifactLimits;
use gantry_core::analysis::resources::InstanceUsage;
use gantry_core::machine::{SmokeResult, SmokeSettings};
use gantry_core::{Digest, EnvName, InstanceRef, Version};
use gantry_router::{Affinity, Pool};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The protocol this build speaks; `Hello` names the controller's.
pub const PROTOCOL: u32 = 1;
/// The largest frame either end reads or writes (its JSON, without the length).
pub const MAX_FRAME: usize = 1 << 20;
/// Artifact bytes per upload chunk (base64 in JSON: ~342 KiB a frame).
pub const CHUNK_SIZE: usize = 256 << 10;
/// The largest artifact a host accepts (the controller's upload limit).
pub const MAX_ARTIFACT_BYTES: u64 = 2 << 30;
/// The most log bytes one `Logs` call returns: JSON may escape a control
/// byte as six, and the answer must still fit a frame.
pub const MAX_LOG_BYTES: u64 = 128 << 10;

/// One request from the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the controller, unique among its requests in flight; the
    /// answer carries it back. 0 is reserved for answers to frames that
    /// could not be read (no id to name).
    pub id: u64,
    pub call: Call,
}

/// One answer from the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub answer: Answer,
}

/// What the controller asks. Variants mirror the `Target`,
/// `TrafficRouter` and `MetricProvider` methods, plus what only makes sense
/// over a channel (the greeting, uploads, probes run on the host).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// The first request of a channel; nothing else is served before it.
    Hello(Hello),
    /// Whether the host's artifact store holds this digest (checked by hash).
    HaveArtifact {
        digest: Digest,
    },
    /// One piece of an artifact upload, in order from offset 0; the chunk
    /// that reaches `size` completes it: the host re-hashes the whole and
    /// stores it only when it matches `digest`.
    UploadChunk {
        digest: Digest,
        size: u64,
        offset: u64,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    /// `Target::prepare` from an artifact the host already holds.
    Prepare {
        release: ReleaseSpec,
        limits: ArtifactLimits,
    },
    CheckRelease {
        release: ReleaseSpec,
    },
    EnsureInstances {
        spec: LaunchSpec,
    },
    RestartInstance {
        spec: LaunchSpec,
        instance: InstanceRef,
    },
    Stop {
        instances: Vec<InstanceRef>,
    },
    Exited {
        instance: InstanceRef,
    },
    Running,
    Logs {
        instance: String,
        max_bytes: u64,
    },
    /// `TrafficRouter::route` on the host's own router.
    Route {
        env: EnvName,
        listen: SocketAddr,
        pools: Vec<Pool>,
        affinity: Option<Affinity>,
        /// Where the router serves `GET /metrics`, if anywhere.
        #[serde(default)]
        metrics_listen: Option<SocketAddr>,
    },
    Revive {
        env: EnvName,
        listen: SocketAddr,
        #[serde(default)]
        metrics_listen: Option<SocketAddr>,
    },
    RouterRunning {
        env: EnvName,
    },
    StopRouter {
        env: EnvName,
    },
    /// `MetricProvider::pool_stats` of the host's router.
    Stats {
        env: EnvName,
        slower_than_ms: Vec<f64>,
        /// Each routed pool's latency histogram too, for the controller to
        /// merge across hosts (absent from older controllers: none).
        #[serde(default)]
        histograms: bool,
    },
    /// The controller's health probe, run on the host (instances listen on
    /// its loopback).
    Probe {
        instance: InstanceRef,
        path: String,
        timeout_ms: u64,
    },
    /// The smoke suite against the host's instances, run on the host
    /// (they listen on its loopback; command checks run there too).
    Smoke {
        settings: SmokeSettings,
        instances: Vec<InstanceRef>,
    },
    /// `Target::usage`: CPU and memory of the host's own instances.
    Usage {
        instances: Vec<InstanceRef>,
    },
}

/// The greeting: who asks, with which fencing token, for which data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The controller's identity; a host serves one controller at a time.
    pub controller: String,
    /// The controller's fencing token, raised on each of its starts.
    pub epoch: u64,
    /// The host's data directory as the controller knows it (relative to
    /// the host user's `HOME`, or absolute); must be the one served.
    pub data_dir: String,
    /// How instances are confined (the `[service]` section's part of it).
    pub confinement: HostConfinement,
}

/// `service.run_as` and `service.sandbox`, as the host needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfinement {
    pub run_as: Option<String>,
    pub sandbox: bool,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

impl HostConfinement {
    pub fn from_service(service: &gantry_config::Service) -> HostConfinement {
        HostConfinement {
            run_as: service.run_as.clone(),
            sandbox: service.sandbox.enabled,
            read: service.sandbox.read.clone(),
            write: service.sandbox.write.clone(),
        }
    }
}

/// What the host needs of a release record to unpack and check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    pub version: Version,
    pub digest: Digest,
    pub size: u64,
    /// `tar.gz`, `tar` or `executable`.
    pub kind: String,
}

impl ReleaseSpec {
    pub fn of(release: &gantry_store::ReleaseRecord) -> ReleaseSpec {
        ReleaseSpec {
            version: release.version.clone(),
            digest: release.digest.clone(),
            size: release.size,
            kind: release.artifact_kind.clone(),
        }
    }

    /// A record for the local code, without what only the controller keeps.
    pub fn record(&self) -> gantry_store::ReleaseRecord {
        gantry_store::ReleaseRecord {
            version: self.version.clone(),
            digest: self.digest.clone(),
            size: self.size,
            artifact_kind: self.kind.clone(),
            git_sha: None,
            signature: None,
            signed_by: None,
            created_at: 0,
            created_by: String::new(),
            migrations: Vec::new(),
            committed_at: None,
        }
    }
}

/// What the host answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Welcome(Welcome),
    /// A stale or foreign controller: nothing it asks is done.
    Fenced {
        reason: String,
    },
    /// The request was done; nothing to report.
    Done,
    Have {
        present: bool,
    },
    /// An upload chunk was written; `complete` once the artifact is stored.
    Received {
        received: u64,
        complete: bool,
    },
    Prepared {
        repairs: Vec<String>,
    },
    Release {
        state: ReleaseState,
    },
    Instances {
        instances: Vec<InstanceRef>,
    },
    Exited {
        detail: Option<String>,
    },
    Running {
        instances: Vec<RunningInstance>,
    },
    Logs {
        text: String,
    },
    Revived {
        started: bool,
    },
    RouterRunning {
        running: bool,
    },
    Stats {
        pools: Vec<PoolStats>,
    },
    Probe {
        outcome: ProbeOutcome,
    },
    Smoke {
        results: Vec<SmokeResult>,
    },
    Usage {
        readings: Vec<InstanceUsage>,
    },
    Error(RemoteError),
}

impl Answer {
    /// The variant's name, for errors about unexpected answers.
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Welcome(_) => "welcome",
            Answer::Fenced { .. } => "fenced",
            Answer::Done => "done",
            Answer::Have { .. } => "have",
            Answer::Received { .. } => "received",
            Answer::Prepared { .. } => "prepared",
            Answer::Release { .. } => "release",
            Answer::Instances { .. } => "instances",
            Answer::Exited { .. } => "exited",
            Answer::Running { .. } => "running",
            Answer::Logs { .. } => "logs",
            Answer::Revived { .. } => "revived",
            Answer::RouterRunning { .. } => "router_running",
            Answer::Stats { .. } => "stats",
            Answer::Probe { .. } => "probe",
            Answer::Smoke { .. } => "smoke",
            Answer::Usage { .. } => "usage",
            Answer::Error(_) => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The host's gantry version.
    pub version: String,
    /// The data directory served, absolute.
    pub data_dir: String,
    /// Instances of this data directory running on the host.
    pub running: Vec<RunningInstance>,
    /// Free bytes on the data directory's file system.
    pub free_bytes: u64,
}

/// `Target::check_release` as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum ReleaseState {
    Absent,
    Intact,
    Differs(String),
}

impl ReleaseState {
    pub fn from_check(c: Option<Result<(), String>>) -> ReleaseState {
        match c {
            None => ReleaseState::Absent,
            Some(Ok(())) => ReleaseState::Intact,
            Some(Err(e)) => ReleaseState::Differs(e),
        }
    }

    pub fn into_check(self) -> Option<Result<(), String>> {
        match self {
            ReleaseState::Absent => None,
            ReleaseState::Intact => Some(Ok(())),
            ReleaseState::Differs(e) => Some(Err(e)),
        }
    }
}

/// A probe's result: what the instance answered, or that it is gone.
pub use crate::target::ProbeOutcome;

/// A failure on the host, with the kind of local error it came from so the
/// controller's end can map it back to `TargetError`/`RouteError`/`MetricError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A frame that could not be read, a request out of bounds or out of turn.
    Protocol,
    /// An upload refused (size, order, digest mismatch, disk).
    Upload,
    Unpack,
    Start,
    Stop,
    Io,
    RouteStart,
    RouteRefused,
    Metric,
}

impl Call {
    /// The variant's name, for logs and errors (never the arguments: they
    /// may carry secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Call::Hello(_) => "hello",
            Call::HaveArtifact { .. } => "have_artifact",
            Call::UploadChunk { .. } => "upload_chunk",
            Call::Prepare { .. } => "prepare",
            Call::CheckRelease { .. } => "check_release",
            Call::EnsureInstances { .. } => "ensure_instances",
            Call::RestartInstance { .. } => "restart_instance",
            Call::Stop { .. } => "stop",
            Call::Exited { .. } => "exited",
            Call::Running => "running",
            Call::Logs { .. } => "logs",
            Call::Route { .. } => "route",
            Call::Revive { .. } => "revive",
            Call::RouterRunning { .. } => "router_running",
            Call::StopRouter { .. } => "stop_router",
            Call::Stats { .. } => "stats",
            Call::Probe { .. } => "probe",
            Call::Smoke { .. } => "smoke",
            Call::Usage { .. } => "usage",
        }
    }

    /// Requests that may take long on the host (unpacking, starting and
    /// stopping processes, starting a router): they get the long timeout.
    pub fn is_long(&self) -> bool {
        matches!(
            self,
            Call::Prepare { .. }
                | Call::CheckRelease { .. }
                | Call::EnsureInstances { .. }
                | Call::RestartInstance { .. }
                | Call::Stop { .. }
                | Call::Route { .. }
                | Call::Revive { .. }
                | Call::StopRouter { .. }
                | Call::Probe { .. }
                | Call::Smoke { .. }
        )
    }
}

/// Artifact bytes as base64 in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// An error answer of `kind`.
pub(super) fn error(kind: ErrorKind, message: impl Into<String>) -> Answer {
    Answer::Error(RemoteError {
        kind,
        message: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_upload_chunk_fits_in_a_frame() {
        let r = Request {
            id: u64::MAX,
            call: Call::UploadChunk {
                digest: Digest::try_from("a".repeat(64)).unwrap(),
                size: MAX_ARTIFACT_BYTES,
                offset: 0,
                data: vec![0xff; CHUNK_SIZE],
            },
        };
        let frame = encode(&r).unwrap();
        assert!(frame.len() < MAX_FRAME);
        let back: Request = decode(&frame[4..]).unwrap();
        match back.call {
            Call::UploadChunk { data, .. } => assert_eq!(data, vec![0xff; CHUNK_SIZE]),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn a_secret_in_a_launch_spec_never_shows_in_debug() {
        let spec = LaunchSpec {
            env: EnvName::try_from("production".to_owned()).unwrap(),
            deployment: 1,
            version: Version::new(1, 0, 0),
            count: 1,
            command: "bin/x".into(),
            args: vec![],
            port_env: "PORT".into(),
            vars: std::collections::BTreeMap::from([("TOKEN".to_owned(), "hunter2".to_owned())]),
            hosts: Vec::new(),
        };
        let shown = format!("{:?}", Call::EnsureInstances { spec });
        assert!(shown.contains("TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
