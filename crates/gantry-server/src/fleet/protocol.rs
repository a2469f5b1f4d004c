//! The typed messages between a controller and `gantry host serve`, shared
//! by both ends, and their framing.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON; a
//! length above [`MAX_FRAME`] is refused before anything is read. The
//! controller sends [`Request`]s (an id and a [`Call`]), the host answers
//! each with a [`Reply`] carrying the same id, in whatever order the work
//! finishes, so several deployment tasks share one channel. A new request
//! is one variant of [`Call`], one arm in `serve.rs`, one method on
//! `HostLink`.
//!
//! Every message is bounded twice: by the frame limit, and by [`Call::check`]
//! (counts and string lengths), which the host applies before acting.

use crate::target::{LaunchSpec, RunningInstance};
use gantry_api::PoolStats;
use gantry_core::machine::Probe;
use gantry_core::{DeploymentId, Digest, EnvName, InstanceRef, Version};
use gantry_router::{Affinity, Pool};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// Bounds of what a request may carry, checked by the host before acting.
pub mod bounds {
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
}

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
        limits: WireLimits,
    },
    CheckRelease {
        release: ReleaseSpec,
    },
    EnsureInstances {
        spec: WireLaunchSpec,
    },
    RestartInstance {
        spec: WireLaunchSpec,
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
    },
    Revive {
        env: EnvName,
        listen: SocketAddr,
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
    },
    /// The controller's health probe, run on the host (instances listen on
    /// its loopback).
    Probe {
        instance: InstanceRef,
        path: String,
        timeout_ms: u64,
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
        }
    }
}

/// `ArtifactLimits` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
}

impl From<&gantry_config::ArtifactLimits> for WireLimits {
    fn from(l: &gantry_config::ArtifactLimits) -> WireLimits {
        WireLimits {
            max_unpacked_bytes: l.max_unpacked_bytes,
            max_entries: l.max_entries,
        }
    }
}

impl From<WireLimits> for gantry_config::ArtifactLimits {
    fn from(l: WireLimits) -> gantry_config::ArtifactLimits {
        gantry_config::ArtifactLimits {
            max_unpacked_bytes: l.max_unpacked_bytes,
            max_entries: l.max_entries,
        }
    }
}

/// `LaunchSpec` on the wire. `vars` may hold secrets: the host puts them in
/// the instance's environment only, and `Debug` shows their names.
#[derive(Clone, Serialize, Deserialize)]
pub struct WireLaunchSpec {
    pub env: EnvName,
    pub deployment: DeploymentId,
    pub version: Version,
    pub count: u32,
    pub command: String,
    pub args: Vec<String>,
    pub port_env: String,
    pub vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for WireLaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_spec(), f)
    }
}

impl From<&LaunchSpec> for WireLaunchSpec {
    fn from(s: &LaunchSpec) -> WireLaunchSpec {
        WireLaunchSpec {
            env: s.env.clone(),
            deployment: s.deployment,
            version: s.version.clone(),
            count: s.count,
            command: s.command.clone(),
            args: s.args.clone(),
            port_env: s.port_env.clone(),
            vars: s.vars.clone(),
        }
    }
}

impl WireLaunchSpec {
    pub fn to_spec(&self) -> LaunchSpec {
        LaunchSpec {
            env: self.env.clone(),
            deployment: self.deployment,
            version: self.version.clone(),
            count: self.count,
            command: self.command.clone(),
            args: self.args.clone(),
            port_env: self.port_env.clone(),
            vars: self.vars.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        count("spec.count", self.count as usize, bounds::INSTANCES)?;
        text("spec.command", &self.command, bounds::PATH)?;
        count("spec.args", self.args.len(), bounds::ARGS)?;
        for a in &self.args {
            text("spec.args[]", a, bounds::PATH)?;
        }
        text("spec.port_env", &self.port_env, bounds::NAME)?;
        count("spec.vars", self.vars.len(), bounds::VARS)?;
        for (k, v) in &self.vars {
            text("spec.vars key", k, bounds::NAME)?;
            if v.len() > bounds::VALUE {
                // The name only: the value may be a secret.
                return Err(format!(
                    "spec.vars.{k}: longer than {} bytes",
                    bounds::VALUE
                ));
            }
        }
        Ok(())
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum ProbeOutcome {
    Probe(Probe),
    /// Nothing answered because the process ended (why).
    Exited(String),
}

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
        )
    }

    /// Checks counts and string lengths; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Call::Hello(h) => {
                text("hello.controller", &h.controller, bounds::NAME)?;
                if h.controller.is_empty() {
                    return Err("hello.controller: must not be empty".to_owned());
                }
                text("hello.data_dir", &h.data_dir, bounds::PATH)?;
                if let Some(u) = &h.confinement.run_as {
                    text("hello.confinement.run_as", u, bounds::NAME)?;
                }
                count("hello.confinement.read", h.confinement.read.len(), 64)?;
                count("hello.confinement.write", h.confinement.write.len(), 64)?;
                for p in h.confinement.read.iter().chain(&h.confinement.write) {
                    text("hello.confinement path", &p.to_string_lossy(), bounds::PATH)?;
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
                count("stop.instances", instances.len(), bounds::INSTANCES)?;
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
                count("route.pools", pools.len(), bounds::POOLS)?;
                for p in pools {
                    text("route.pools[].name", &p.name, bounds::NAME)?;
                    count(
                        "route.pools[].upstreams",
                        p.upstreams.len(),
                        bounds::UPSTREAMS,
                    )?;
                }
                match affinity {
                    Some(Affinity::Cookie(n)) | Some(Affinity::Header(n)) => {
                        text("route.affinity", n, bounds::NAME)
                    }
                    None => Ok(()),
                }
            }
            Call::Revive { .. } | Call::RouterRunning { .. } | Call::StopRouter { .. } => Ok(()),
            Call::Stats { slower_than_ms, .. } => {
                count(
                    "stats.slower_than_ms",
                    slower_than_ms.len(),
                    bounds::LATENCY_LIMITS,
                )?;
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
                text("probe.path", path, bounds::PATH)?;
                if !path.starts_with('/') {
                    return Err(format!("probe.path: {path:?} must start with '/'"));
                }
                if *timeout_ms == 0 || *timeout_ms > bounds::PROBE_TIMEOUT_MS {
                    return Err(format!(
                        "probe.timeout_ms: {timeout_ms} is not within 1..={}",
                        bounds::PROBE_TIMEOUT_MS
                    ));
                }
                Ok(())
            }
        }
    }
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
    text(field, &i.id, bounds::NAME)?;
    if i.id.is_empty() || i.id.contains('/') || i.id.contains("..") {
        return Err(format!("{field}: {:?} is not an instance id", i.id));
    }
    Ok(())
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is above the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    /// The JSON did not match the message type. Only the position and the
    /// category are kept: serde's text may quote the frame, which may hold
    /// a secret.
    #[error("frame is not a valid message ({category} error at line {line}, column {column})")]
    Malformed {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("channel closed")]
    Closed,
    #[error("channel I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    fn malformed(e: &serde_json::Error) -> FrameError {
        use serde_json::error::Category;
        FrameError::Malformed {
            category: match e.classify() {
                Category::Io => "i/o",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "truncated",
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

/// A message as one frame: length prefix and JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, message).map_err(|e| FrameError::malformed(&e))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame's JSON (the bytes after the length).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::malformed(&e))
}

/// Reads one frame's JSON. `Closed` at a clean end between frames; a
/// length above the limit is refused before its body is read (the body
/// stays unread: see [`skip`]).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads and discards `len` bytes (the body of a refused frame), so the
/// stream stays in step without holding the body in memory.
pub async fn skip<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<(), FrameError> {
    let skipped = tokio::io::copy(&mut r.take(len as u64), &mut tokio::io::sink()).await?;
    if skipped < len as u64 {
        return Err(FrameError::Closed);
    }
    Ok(())
}

/// Writes one already encoded frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Request {
        Request {
            id: 7,
            call: Call::Hello(Hello {
                protocol: PROTOCOL,
                controller: "c1".into(),
                epoch: 3,
                data_dir: "/srv/gantry".into(),
                confinement: HostConfinement {
                    run_as: None,
                    sandbox: true,
                    read: vec![],
                    write: vec![],
                },
            }),
        }
    }

    #[tokio::test]
    async fn a_frame_round_trips_with_its_big_endian_length() {
        let frame = encode(&hello()).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut r = &frame[..];
        let body = read_frame(&mut r).await.unwrap();
        let back: Request = decode(&body).unwrap();
        assert_eq!(back.id, 7);
        match back.call {
            Call::Hello(h) => assert_eq!(
                h,
                match hello().call {
                    Call::Hello(h) => h,
                    _ => unreachable!(),
                }
            ),
            other => panic!("got {other:?}"),
        }
        // And then a clean end of the stream.
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn a_length_above_the_limit_is_refused_before_its_body_is_read() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let mut r = &bytes[..];
        match read_frame(&mut r).await {
            Err(FrameError::TooLarge { len }) => assert_eq!(len, MAX_FRAME + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Nothing of the body was consumed.
        assert_eq!(r, b"{}");
    }

    #[test]
    fn encoding_refuses_a_message_above_the_limit() {
        let big = Answer::Logs {
            text: "x".repeat(MAX_FRAME + 10),
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_io_error_not_a_message() {
        let frame = encode(&hello()).unwrap();
        let mut r = &frame[..frame.len() - 3];
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Io(_))));
    }

    #[test]
    fn malformed_json_names_the_position_but_never_quotes_the_frame() {
        let body =
            br#"{"id": 1, "call": {"call": "logs", "instance": "x", "max_bytes": "hunter2"}}"#;
        let e = decode::<Request>(body).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("data error at line 1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = decode::<Request>(b"{not json").unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
    }

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
    fn checks_name_the_field_out_of_bounds() {
        let call = Call::Stats {
            env: EnvName::try_from("production".to_owned()).unwrap(),
            slower_than_ms: vec![1.0; bounds::LATENCY_LIMITS + 1],
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
            },
        };
        assert!(call.check().unwrap_err().contains("exited.instance"));
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
    fn a_secret_in_a_launch_spec_never_shows_in_debug() {
        let spec = WireLaunchSpec {
            env: EnvName::try_from("production".to_owned()).unwrap(),
            deployment: 1,
            version: Version::new(1, 0, 0),
            count: 1,
            command: "bin/x".into(),
            args: vec![],
            port_env: "PORT".into(),
            vars: BTreeMap::from([("TOKEN".to_owned(), "hunter2".to_owned())]),
        };
        let shown = format!("{:?}", Call::EnsureInstances { spec });
        assert!(shown.contains("TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
