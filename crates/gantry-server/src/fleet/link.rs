//! The controller's end of the fleet channel: [`HostLink`], one typed async
//! method per request, over any byte stream (an SSH channel's stdin and
//! stdout, or a local child's pipes).
//!
//! Requests are written in the order they are made and answered in any
//! order; each waits for its own answer with a timeout. When the channel
//! dies (the host exits, SSH drops, a frame is unreadable) every request
//! still waiting is answered with [`LinkError::Closed`] at once, and every
//! later one too: nothing hangs.

use super::protocol::{
    self, Answer, Call, ErrorKind, FrameError, Hello, ProbeOutcome, ReleaseSpec, RemoteError,
    Reply, Request, Welcome, CHUNK_SIZE,
};
use crate::routing::{MetricError, RouteError};
use crate::target::{LaunchSpec, RunningInstance, TargetError};
use gantry_api::PoolStats;
use gantry_config::ArtifactLimits;
use gantry_core::analysis::resources::InstanceUsage;
use gantry_core::machine::{SmokeResult, SmokeSettings};
use gantry_core::{Digest, EnvName, InstanceRef};
use gantry_router::{Affinity, Pool};
use gantry_store::ReleaseRecord;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("channel to the host is closed: {0}")]
    Closed(String),
    #[error("host did not answer {call} within {after_ms}ms")]
    Timeout { call: &'static str, after_ms: u64 },
    #[error("host refused this controller: {0}")]
    Fenced(String),
    #[error("host: {0}")]
    Remote(RemoteError),
    #[error("host answered {call} with {answer}")]
    Unexpected {
        call: &'static str,
        answer: &'static str,
    },
    #[error("cannot send {call}: {reason}")]
    Send { call: &'static str, reason: String },
    #[error("artifact {path}: {reason}")]
    Artifact { path: String, reason: String },
    /// An answer out of bounds (`bounds.rs`); names the field.
    #[error("host answered out of bounds: {0}")]
    Invalid(String),
}

impl LinkError {
    /// The host's error kind, if the host answered with an error.
    pub fn remote_kind(&self) -> Option<ErrorKind> {
        match self {
            LinkError::Remote(r) => Some(r.kind),
            _ => None,
        }
    }

    pub fn into_route_error(self, env: &EnvName) -> RouteError {
        match self.remote_kind() {
            Some(ErrorKind::RouteRefused) => RouteError::Refused {
                env: env.to_string(),
                reason: self.to_string(),
            },
            _ => RouteError::Start {
                env: env.to_string(),
                reason: self.to_string(),
            },
        }
    }

    pub fn into_metric_error(self, env: &EnvName) -> MetricError {
        MetricError {
            env: env.to_string(),
            reason: self.to_string(),
        }
    }
}

impl From<LinkError> for TargetError {
    fn from(e: LinkError) -> TargetError {
        TargetError::Io(e.to_string())
    }
}

/// What a probe's answer may take beyond the probe's own timeout.
const PROBE_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct LinkOptions {
    /// How long a quick request (a query, an upload chunk) waits for its answer.
    pub timeout: Duration,
    /// How long a slow one waits (unpacking, starting or stopping processes
    /// or a router, a probe).
    pub long_timeout: Duration,
    /// Upload chunks sent ahead of their answers.
    pub upload_window: usize,
}

impl Default for LinkOptions {
    fn default() -> LinkOptions {
        LinkOptions {
            timeout: Duration::from_secs(15),
            long_timeout: Duration::from_secs(120),
            upload_window: 4,
        }
    }
}

/// What preparing a release on a host did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What the host had to repair (for the deployment log).
    pub repairs: Vec<String>,
    /// Artifact bytes sent: 0 when the host already had it.
    pub uploaded_bytes: u64,
}

type Waiter = oneshot::Sender<Result<Answer, LinkError>>;

#[derive(Default)]
struct Waiters {
    /// Why the channel is closed, once it is.
    closed: Option<String>,
    waiting: HashMap<u64, Waiter>,
    /// When the host last answered anything (wall clock, ms): what
    /// `gantry hosts` shows as "last seen".
    last_answer: Option<gantry_core::Millis>,
}

type Shared = Arc<Mutex<Waiters>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Waiters> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks the channel closed and answers everyone waiting.
fn close(shared: &Shared, reason: String) {
    let waiting = {
        let mut w = lock(shared);
        if w.closed.is_none() {
            w.closed = Some(reason.clone());
        }
        std::mem::take(&mut w.waiting)
    };
    for (_, tx) in waiting {
        let _ = tx.send(Err(LinkError::Closed(reason.clone())));
    }
}

/// A channel to one host, greeted and admitted.
pub struct HostLink {
    out: mpsc::Sender<Vec<u8>>,
    shared: Shared,
    next_id: AtomicU64,
    options: LinkOptions,
    welcome: Welcome,
}

/// A request sent and not yet answered; dropped, it stops waiting.
struct Pending {
    id: u64,
    call: &'static str,
    timeout: Duration,
    rx: oneshot::Receiver<Result<Answer, LinkError>>,
    shared: Shared,
}

impl Pending {
    async fn answer(mut self) -> Result<Answer, LinkError> {
        let answer = match tokio::time::timeout(self.timeout, &mut self.rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(LinkError::Closed("the channel's reader stopped".to_owned())),
            Err(_) => Err(LinkError::Timeout {
                call: self.call,
                after_ms: self.timeout.as_millis() as u64,
            }),
        }?;
        match answer {
            Answer::Fenced { reason } => Err(LinkError::Fenced(reason)),
            Answer::Error(e) => Err(LinkError::Remote(e)),
            answer => Ok(answer),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.shared).waiting.remove(&self.id);
    }
}

impl HostLink {
    /// Starts the channel over `reader`/`writer` and greets the host.
    /// `Fenced` if the host refuses this controller or epoch.
    pub async fn connect<R, W>(
        reader: R,
        writer: W,
        hello: Hello,
        options: LinkOptions,
    ) -> Result<HostLink, LinkError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared: Shared = Arc::default();
        let (out, mut frames) = mpsc::channel::<Vec<u8>>(64);
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            let mut writer = writer;
            while let Some(frame) = frames.recv().await {
                if let Err(e) = protocol::write_frame(&mut writer, &frame).await {
                    close(&writer_shared, format!("cannot write to the host: {e}"));
                    return;
                }
            }
            // Every sender gone: the link was dropped; the writer closes
            // here, and the host ends when it reads the end.
        });
        let reader_shared = shared.clone();
        tokio::spawn(async move {
            let mut reader = reader;
            let reason = loop {
                let body = match protocol::read_frame(&mut reader).await {
                    Ok(body) => body,
                    Err(FrameError::Closed) => break "the host closed it".to_owned(),
                    Err(e) => break e.to_string(),
                };
                let reply: Reply = match protocol::decode(&body) {
                    Ok(r) => r,
                    Err(e) => break format!("unreadable answer from the host: {e}"),
                };
                if reply.id == 0 {
                    tracing::warn!(answer = ?reply.answer, "host answered a frame it could not read");
                    continue;
                }
                let waiter = {
                    let mut w = lock(&reader_shared);
                    w.last_answer = Some(crate::clock::now_ms());
                    w.waiting.remove(&reply.id)
                };
                if let Some(tx) = waiter {
                    let _ = tx.send(Ok(reply.answer));
                }
            };
            close(&reader_shared, reason);
        });
        let mut link = HostLink {
            out,
            shared,
            next_id: AtomicU64::new(1),
            options,
            welcome: Welcome {
                version: String::new(),
                data_dir: String::new(),
                running: Vec::new(),
                free_bytes: 0,
            },
        };
        match link.call(Call::Hello(hello)).await? {
            Answer::Welcome(w) => {
                link.welcome = w;
                Ok(link)
            }
            other => Err(LinkError::Unexpected {
                call: "hello",
                answer: other.name(),
            }),
        }
    }

    /// What the host said when it admitted this controller.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// When the host last answered a request on this channel.
    pub fn last_answer(&self) -> Option<gantry_core::Millis> {
        lock(&self.shared).last_answer
    }

    /// Why the channel is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        lock(&self.shared).closed.clone()
    }

    async fn send(&self, call: Call) -> Result<Pending, LinkError> {
        let name = call.name();
        // A probe or a smoke suite is as long as its own timeout, plus the
        // way there and back (a host gone quiet fails it, not the whole
        // step); `long_timeout` caps every call.
        let margin = self.options.timeout.min(PROBE_MARGIN);
        let timeout = match &call {
            Call::Probe { timeout_ms, .. } => {
                (Duration::from_millis(*timeout_ms) + margin).min(self.options.long_timeout)
            }
            Call::Smoke { settings, .. } => {
                (Duration::from_millis(settings.timeout_ms) + margin).min(self.options.long_timeout)
            }
            call if call.is_long() => self.options.long_timeout,
            _ => self.options.timeout,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = protocol::encode(&Request { id, call }).map_err(|e| LinkError::Send {
            call: name,
            reason: e.to_string(),
        })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut w = lock(&self.shared);
            if let Some(reason) = &w.closed {
                return Err(LinkError::Closed(reason.clone()));
            }
            w.waiting.insert(id, tx);
        }
        let pending = Pending {
            id,
            call: name,
            timeout,
            rx,
            shared: self.shared.clone(),
        };
        if self.out.send(frame).await.is_err() {
            let reason = self
                .closed()
                .unwrap_or_else(|| "its writer stopped".to_owned());
            return Err(LinkError::Closed(reason));
        }
        Ok(pending)
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, call: Call) -> Result<Answer, LinkError> {
        self.send(call).await?.answer().await
    }

    pub async fn have_artifact(&self, digest: &Digest) -> Result<bool, LinkError> {
        match self
            .call(Call::HaveArtifact {
                digest: digest.clone(),
            })
            .await?
        {
            Answer::Have { present } => Ok(present),
            other => unexpected("have_artifact", other),
        }
    }

    /// Sends one chunk of an upload; `(received, complete)`.
    pub async fn upload_chunk(
        &self,
        digest: &Digest,
        size: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(u64, bool), LinkError> {
        let call = Call::UploadChunk {
            digest: digest.clone(),
            size,
            offset,
            data,
        };
        match self.call(call).await? {
            Answer::Received { received, complete } => Ok((received, complete)),
            other => unexpected("upload_chunk", other),
        }
    }

    /// Uploads the file at `path` as the artifact `digest`, a window of
    /// chunks ahead of their answers; the host stores it only if its bytes
    /// hash to `digest`. Returns the bytes sent.
    pub async fn upload(&self, path: &Path, digest: &Digest) -> Result<u64, LinkError> {
        let art_err = |reason: String| LinkError::Artifact {
            path: path.display().to_string(),
            reason,
        };
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| art_err(e.to_string()))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| art_err(e.to_string()))?
            .len();
        let mut in_flight = std::collections::VecDeque::new();
        let mut offset = 0u64;
        let mut complete = false;
        loop {
            let want = (size - offset).min(CHUNK_SIZE as u64) as usize;
            let mut data = vec![0u8; want];
            file.read_exact(&mut data)
                .await
                .map_err(|e| art_err(format!("cannot read it at offset {offset}: {e}")))?;
            let pending = self
                .send(Call::UploadChunk {
                    digest: digest.clone(),
                    size,
                    offset,
                    data,
                })
                .await?;
            in_flight.push_back(pending);
            offset += want as u64;
            let last = offset >= size;
            while in_flight.len() >= self.options.upload_window.max(1)
                || (last && !in_flight.is_empty())
            {
                if let Some(p) = in_flight.pop_front() {
                    match p.answer().await? {
                        Answer::Received { complete: c, .. } => complete = c,
                        other => return unexpected("upload_chunk", other),
                    }
                }
            }
            if last {
                break;
            }
        }
        if !complete {
            return Err(LinkError::Remote(RemoteError {
                kind: ErrorKind::Upload,
                message: format!("upload of artifact {digest} ended without the host storing it"),
            }));
        }
        Ok(size)
    }

    /// Unpacks a release from an artifact the host holds.
    pub async fn prepare_release(
        &self,
        release: ReleaseSpec,
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, LinkError> {
        let call = Call::Prepare {
            release,
            limits: *limits,
        };
        match self.call(call).await? {
            Answer::Prepared { repairs } => Ok(repairs),
            other => unexpected("prepare", other),
        }
    }

    /// `Target::prepare` on the host: uploads the artifact unless the host
    /// already has it (by digest), then unpacks it there.
    pub async fn prepare(
        &self,
        release: &ReleaseRecord,
        artifact: &Path,
        limits: &ArtifactLimits,
    ) -> Result<Prepared, LinkError> {
        let uploaded_bytes = if self.have_artifact(&release.digest).await? {
            0
        } else {
            self.upload(artifact, &release.digest).await?
        };
        let repairs = self
            .prepare_release(ReleaseSpec::of(release), limits)
            .await?;
        Ok(Prepared {
            repairs,
            uploaded_bytes,
        })
    }

    pub async fn check_release(
        &self,
        release: &ReleaseRecord,
    ) -> Result<Option<Result<(), String>>, LinkError> {
        match self
            .call(Call::CheckRelease {
                release: ReleaseSpec::of(release),
            })
            .await?
        {
            Answer::Release { state } => Ok(state.into_check()),
            other => unexpected("check_release", other),
        }
    }

    pub async fn ensure_instances(&self, spec: &LaunchSpec) -> Result<Vec<InstanceRef>, LinkError> {
        match self
            .call(Call::EnsureInstances { spec: spec.clone() })
            .await?
        {
            Answer::Instances { instances } => Ok(instances),
            other => unexpected("ensure_instances", other),
        }
    }

    pub async fn restart_instance(
        &self,
        spec: &LaunchSpec,
        instance: &InstanceRef,
    ) -> Result<(), LinkError> {
        let call = Call::RestartInstance {
            spec: spec.clone(),
            instance: instance.clone(),
        };
        done("restart_instance", self.call(call).await?)
    }

    pub async fn stop(&self, instances: &[InstanceRef]) -> Result<(), LinkError> {
        let call = Call::Stop {
            instances: instances.to_vec(),
        };
        done("stop", self.call(call).await?)
    }

    pub async fn exited(&self, instance: &InstanceRef) -> Result<Option<String>, LinkError> {
        match self
            .call(Call::Exited {
                instance: instance.clone(),
            })
            .await?
        {
            Answer::Exited { detail } => Ok(detail),
            other => unexpected("exited", other),
        }
    }

    pub async fn running(&self) -> Result<Vec<RunningInstance>, LinkError> {
        match self.call(Call::Running).await? {
            Answer::Running { instances } => Ok(instances),
            other => unexpected("running", other),
        }
    }

    /// The last `max_bytes` (at most `protocol::MAX_LOG_BYTES`) of an instance's output.
    pub async fn logs(&self, instance_id: &str, max_bytes: u64) -> Result<String, LinkError> {
        let call = Call::Logs {
            instance: instance_id.to_owned(),
            max_bytes: max_bytes.min(protocol::MAX_LOG_BYTES),
        };
        match self.call(call).await? {
            Answer::Logs { text } => Ok(text),
            other => unexpected("logs", other),
        }
    }

    pub async fn route(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        pools: Vec<Pool>,
        affinity: Option<Affinity>,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<(), LinkError> {
        let call = Call::Route {
            env: env.clone(),
            listen,
            pools,
            affinity,
            metrics_listen,
        };
        done("route", self.call(call).await?)
    }

    pub async fn revive(
        &self,
        env: &EnvName,
        listen: SocketAddr,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<bool, LinkError> {
        match self
            .call(Call::Revive {
                env: env.clone(),
                listen,
                metrics_listen,
            })
            .await?
        {
            Answer::Revived { started } => Ok(started),
            other => unexpected("revive", other),
        }
    }

    pub async fn router_running(&self, env: &EnvName) -> Result<bool, LinkError> {
        match self.call(Call::RouterRunning { env: env.clone() }).await? {
            Answer::RouterRunning { running } => Ok(running),
            other => unexpected("router_running", other),
        }
    }

    pub async fn stop_router(&self, env: &EnvName) -> Result<(), LinkError> {
        done(
            "stop_router",
            self.call(Call::StopRouter { env: env.clone() }).await?,
        )
    }

    pub async fn pool_stats(
        &self,
        env: &EnvName,
        slower_than_ms: &[f64],
    ) -> Result<Vec<PoolStats>, LinkError> {
        let call = Call::Stats {
            env: env.clone(),
            slower_than_ms: slower_than_ms.to_vec(),
            histograms: true,
        };
        match self.call(call).await? {
            Answer::Stats { pools } => {
                super::bounds::check_stats(&pools).map_err(LinkError::Invalid)?;
                Ok(pools)
            }
            other => unexpected("stats", other),
        }
    }

    /// The health probe, run on the host against the instance's loopback port.
    pub async fn probe(
        &self,
        instance: &InstanceRef,
        path: &str,
        timeout: Duration,
    ) -> Result<ProbeOutcome, LinkError> {
        let call = Call::Probe {
            instance: instance.clone(),
            path: path.to_owned(),
            timeout_ms: (timeout.as_millis() as u64).max(1),
        };
        match self.call(call).await? {
            Answer::Probe { outcome } => Ok(outcome),
            other => unexpected("probe", other),
        }
    }
}

impl HostLink {
    /// The smoke suite, run on the host against its own instances.
    pub async fn smoke(
        &self,
        settings: &SmokeSettings,
        instances: &[InstanceRef],
    ) -> Result<Vec<SmokeResult>, LinkError> {
        let call = Call::Smoke {
            settings: settings.clone(),
            instances: instances.to_vec(),
        };
        match self.call(call).await? {
            Answer::Smoke { results } => Ok(results),
            other => unexpected("smoke", other),
        }
    }

    /// CPU and memory of the host's instances, read on the host.
    pub async fn usage(&self, instances: &[InstanceRef]) -> Result<Vec<InstanceUsage>, LinkError> {
        let call = Call::Usage {
            instances: instances.to_vec(),
        };
        match self.call(call).await? {
            Answer::Usage { readings } => Ok(readings),
            other => unexpected("usage", other),
        }
    }
}

fn unexpected<T>(call: &'static str, answer: Answer) -> Result<T, LinkError> {
    Err(LinkError::Unexpected {
        call,
        answer: answer.name(),
    })
}

fn done(call: &'static str, answer: Answer) -> Result<(), LinkError> {
    match answer {
        Answer::Done => Ok(()),
        other => unexpected(call, other),
    }
}
