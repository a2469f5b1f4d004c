//! `gantry host serve --stdio`: the host's end of the fleet channel.
//!
//! A thin dispatcher over the local code: a [`LocalTarget`] on the host's
//! data directory (so instances are confined and adopted exactly as beside
//! a controller, and the marker, a digest of the data directory, keeps two
//! hosts sharing one process table apart) and a [`ProcessRouter`] for the
//! host's router. Requests run concurrently (bounded) and are answered as
//! they finish; upload chunks are handled in arrival order.
//!
//! Fencing (`fence.rs`): `<data_dir>/epoch` holds the controller id and the highest
//! epoch seen, written durably before `Welcome`. A lower epoch or another
//! controller is answered `Fenced`, and every later request of a session is
//! checked against the file again, so a controller that has been superseded
//! while connected is refused from its next request on.

use super::fence::{admit, fenced_reason, read_fence, Admission, Fence};
use super::protocol::error;
use super::protocol::{
    self, Answer, Call, ErrorKind, FrameError, Hello, ProbeOutcome, ReleaseState, Reply, Request,
    Welcome, PROTOCOL,
};
use super::upload::{free_bytes, Uploads};
use crate::confine::Confinement;
use crate::routing::{ProcessRouter, RouteError, TrafficRouter};
use crate::target::{LocalTarget, Target, TargetError};
use gantry_core::{Digest, InstanceRef};
use gantry_store::Blobs;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};

/// Requests carried out at once; the reader waits for a slot beyond it.
const MAX_IN_FLIGHT: usize = 64;
/// How long requests still running get when the channel closes.
const DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data directory served (made if missing).
    pub data_dir: PathBuf,
    /// The gantry executable: the instances' confinement launcher and the
    /// host's `gantry router`.
    pub exe: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("cannot write to the channel: {0}")]
    Channel(FrameError),
}

/// What one accepted `Hello` sets up.
struct Session {
    fence: Fence,
    data_dir: PathBuf,
    target: LocalTarget,
    router: ProcessRouter,
    blobs: Blobs,
    /// Releases this session verified and unpacked: a later prepare of the
    /// same one (a rollback's) does not hash the artifact and tree again.
    /// Instances cannot write a release directory (read-only, confined), so
    /// what could change it also could change this process.
    prepared: std::sync::Mutex<HashSet<(String, String)>>,
    /// Artifacts this session hashed whole: received by its upload (hashed
    /// as the bytes were written) or checked by `HaveArtifact`/`Prepare`.
    /// Asked again (every prepare asks; a 50-host rollback of a 50 MB
    /// release hashed 2.5 GB across the fleet to answer), the answer is the
    /// file's presence, not another hash. A new channel (a controller
    /// restart, a reconnection) hashes again.
    verified: std::sync::Mutex<HashSet<Digest>>,
}

/// Serves requests from `reader`, answering on `writer`, until `reader`
/// ends. Instances and routers it started keep running after it returns.
pub async fn serve<R, W>(reader: R, writer: W, options: ServeOptions) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let data_err = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| ServeError::DataDir {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    // As the controller: what the host side creates is its own alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&options.data_dir).map_err(data_err(&options.data_dir))?;
    let data_dir = options
        .data_dir
        .canonicalize()
        .map_err(data_err(&options.data_dir))?;
    tracing::info!(data_dir = %data_dir.display(), "host serving on stdio");

    let (tx, mut rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer_task = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(reply) = rx.recv().await {
            let frame = protocol::encode(&reply).or_else(|e| {
                // An answer too large for a frame becomes an error the
                // waiting request can read.
                protocol::encode(&Reply {
                    id: reply.id,
                    answer: error(ErrorKind::Protocol, format!("answer not sent: {e}")),
                })
            });
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an answer");
                    continue;
                }
            };
            protocol::write_frame(&mut writer, &frame).await?;
        }
        Ok::<(), FrameError>(())
    });

    let mut host = Host {
        data_dir,
        exe: options.exe,
        session: None,
        uploads: Uploads::default(),
        tx: tx.clone(),
        slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        tasks: tokio::task::JoinSet::new(),
    };
    let mut reader = reader;
    loop {
        let body = match protocol::read_frame(&mut reader).await {
            Ok(body) => body,
            Err(FrameError::TooLarge { len }) => {
                tracing::warn!(len, "refused a frame above the limit");
                host.reply(
                    0,
                    error(
                        ErrorKind::Protocol,
                        FrameError::TooLarge { len }.to_string(),
                    ),
                )
                .await;
                if protocol::skip(&mut reader, len).await.is_err() {
                    break;
                }
                continue;
            }
            Err(FrameError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "channel ended");
                break;
            }
        };
        match protocol::decode::<Request>(&body) {
            Ok(request) => host.take(request).await,
            Err(e) => {
                // Answer the request it was meant to be if its id is readable,
                // so the controller's side does not wait for its timeout.
                #[derive(Deserialize)]
                struct IdOnly {
                    id: u64,
                }
                let id = protocol::decode::<IdOnly>(&body).map_or(0, |r| r.id);
                tracing::warn!(id, error = %e, "refused a malformed request");
                host.reply(id, error(ErrorKind::Protocol, e.to_string()))
                    .await;
            }
        }
    }
    tracing::info!("channel closed; finishing requests in flight");
    let _ = tokio::time::timeout(DRAIN, async {
        while host.tasks.join_next().await.is_some() {}
    })
    .await;
    drop(host);
    drop(tx);
    match writer_task.await {
        Ok(Ok(())) => Ok(()),
        // The controller went away first: nothing to answer to.
        Ok(Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Ok(Err(e)) => Err(ServeError::Channel(e)),
        Err(e) => Err(ServeError::Channel(FrameError::Io(std::io::Error::other(
            e,
        )))),
    }
}

struct Host {
    data_dir: PathBuf,
    exe: PathBuf,
    session: Option<Arc<Session>>,
    uploads: Uploads,
    tx: mpsc::Sender<Reply>,
    slots: Arc<Semaphore>,
    tasks: tokio::task::JoinSet<()>,
}

impl Host {
    async fn reply(&self, id: u64, answer: Answer) {
        let _ = self.tx.send(Reply { id, answer }).await;
    }

    /// Takes one request: the greeting and upload chunks in order, the rest
    /// on their own tasks.
    async fn take(&mut self, Request { id, call }: Request) {
        tracing::debug!(id, call = call.name(), "request");
        if let Err(why) = call.check() {
            return self.reply(id, error(ErrorKind::Protocol, why)).await;
        }
        if let Call::Hello(hello) = call {
            let answer = self.hello(hello).await;
            return self.reply(id, answer).await;
        }
        let Some(session) = self.session.clone() else {
            return self
                .reply(
                    id,
                    error(
                        ErrorKind::Protocol,
                        format!("{} before hello: greet the host first", call.name()),
                    ),
                )
                .await;
        };
        if let Some(reason) = session.fenced() {
            return self.reply(id, Answer::Fenced { reason }).await;
        }
        if let Call::UploadChunk {
            digest,
            size,
            offset,
            data,
        } = call
        {
            let answer = self
                .uploads
                .chunk(
                    &session.blobs,
                    &session.data_dir,
                    digest.clone(),
                    size,
                    offset,
                    data,
                )
                .await;
            if matches!(answer, Answer::Received { complete: true, .. }) {
                session.verified_lock().insert(digest);
            }
            return self.reply(id, answer).await;
        }
        // Bounded: the reader waits here for a slot, which slows the
        // controller down rather than queueing without end.
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let answer = session.answer(call).await;
            let _ = tx.send(Reply { id, answer }).await;
            drop(permit);
        });
        // Keep finished tasks from piling up.
        while self.tasks.try_join_next().is_some() {}
    }

    async fn hello(&mut self, hello: Hello) -> Answer {
        if hello.protocol != PROTOCOL {
            return error(
                ErrorKind::Protocol,
                format!(
                    "protocol {} is not spoken here: this host ({} {}) speaks protocol {PROTOCOL}",
                    hello.protocol,
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION")
                ),
            );
        }
        let asked = resolve_data_dir(&hello.data_dir);
        if asked != self.data_dir {
            return error(
                ErrorKind::Protocol,
                format!(
                    "hello.data_dir {} is not the data directory served here ({})",
                    asked.display(),
                    self.data_dir.display()
                ),
            );
        }
        let fence = Fence {
            controller: hello.controller.clone(),
            epoch: hello.epoch,
        };
        let dir = self.data_dir.clone();
        let f = fence.clone();
        let admitted = tokio::task::spawn_blocking(move || admit(&dir, &f))
            .await
            .unwrap_or_else(|e| Err(Admission::Failed(e.to_string())));
        match admitted {
            Ok(()) => {}
            Err(Admission::Fenced(reason)) => {
                tracing::warn!(controller = %fence.controller, epoch = fence.epoch, "{reason}");
                self.session = None;
                return Answer::Fenced { reason };
            }
            Err(Admission::Failed(reason)) => return error(ErrorKind::Io, reason),
        }
        let sandbox = gantry_config::Sandbox {
            enabled: hello.confinement.sandbox,
            read: hello.confinement.read.clone(),
            write: hello.confinement.write.clone(),
        };
        let confinement = match Confinement::plan_for(
            self.exe.clone(),
            hello.confinement.run_as.as_deref(),
            &sandbox,
        ) {
            Ok((c, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                c
            }
            Err(e) => return error(ErrorKind::Start, format!("cannot confine instances: {e}")),
        };
        let setup = || -> Result<Session, String> {
            crate::data_dir::tighten(&self.data_dir, confinement.switches_user())
                .map_err(|e| format!("data directory {}: {e}", self.data_dir.display()))?;
            let token =
                crate::secret_file::load_or_create_token(&self.data_dir.join("router.token"))
                    .map_err(|e| format!("router token: {e}"))?;
            let blobs = Blobs::open(self.data_dir.join("artifacts")).map_err(|e| e.to_string())?;
            Ok(Session {
                fence: fence.clone(),
                data_dir: self.data_dir.clone(),
                target: LocalTarget::new(&self.data_dir, confinement.clone()),
                router: ProcessRouter::new(&self.data_dir, self.exe.clone(), token),
                blobs,
                prepared: Default::default(),
                verified: Default::default(),
            })
        };
        let session = match setup() {
            Ok(s) => Arc::new(s),
            Err(reason) => return error(ErrorKind::Io, reason),
        };
        tracing::info!(controller = %fence.controller, epoch = fence.epoch, "controller admitted");
        let running = session.target.running().await;
        self.session = Some(session);
        Answer::Welcome(Welcome {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_dir: self.data_dir.display().to_string(),
            running,
            free_bytes: free_bytes(&self.data_dir),
        })
    }
}

impl Session {
    fn prepared_lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verified_lock(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the stored artifact is `digest`'s: hashed once per session,
    /// then only looked for (see `verified`).
    async fn artifact_verified(&self, digest: &Digest) -> Result<(), gantry_store::BlobError> {
        if self.verified_lock().contains(digest) {
            if self.blobs.path(digest).is_file() {
                return Ok(());
            }
            self.verified_lock().remove(digest);
        }
        let blobs = self.blobs.clone();
        let d = digest.clone();
        let result = tokio::task::spawn_blocking(move || blobs.verify(&d))
            .await
            .unwrap_or_else(|e| {
                Err(gantry_store::BlobError::Io {
                    path: self.blobs.path(digest).display().to_string(),
                    source: std::io::Error::other(e),
                })
            });
        if result.is_ok() {
            self.verified_lock().insert(digest.clone());
        }
        result
    }

    /// Why this session may no longer act, if a newer or other controller
    /// has been admitted since.
    fn fenced(&self) -> Option<String> {
        match read_fence(&self.data_dir) {
            Ok(Some(stored)) if stored == self.fence => None,
            Ok(Some(stored)) => Some(fenced_reason(&stored, &self.fence)),
            Ok(None) => Some("the host's fencing file is gone: greet it again".to_owned()),
            Err(e) => Some(format!("cannot read the host's fencing file: {e}")),
        }
    }

    async fn answer(&self, call: Call) -> Answer {
        match call {
            // Handled in order by the reader.
            Call::Hello(_) | Call::UploadChunk { .. } => {
                error(ErrorKind::Protocol, format!("{} out of turn", call.name()))
            }
            Call::HaveArtifact { digest } => Answer::Have {
                present: have(&self.blobs, &digest, self.artifact_verified(&digest).await),
            },
            Call::Prepare { release, limits } => {
                let key = (release.version.to_string(), release.digest.to_string());
                if self.prepared_lock().contains(&key) {
                    return Answer::Prepared {
                        repairs: Vec::new(),
                    };
                }
                if let Err(why) = self.artifact_verified(&release.digest).await {
                    return error(
                        ErrorKind::Unpack,
                        format!("cannot prepare release {}: {why}", release.version),
                    );
                }
                let artifact = self.blobs.path(&release.digest);
                match self
                    .target
                    .unpack(&release.record(), &artifact, &limits)
                    .await
                {
                    Ok(repairs) => {
                        self.prepared_lock().insert(key);
                        Answer::Prepared { repairs }
                    }
                    Err(e) => target_error(e),
                }
            }
            Call::CheckRelease { release } => Answer::Release {
                state: ReleaseState::from_check(self.target.check_release(&release.record()).await),
            },
            Call::EnsureInstances { spec } => match self
                .target
                .ensure_instances(&spec)
                .await
                .map(|s| s.instances)
            {
                Ok(instances) => Answer::Instances { instances },
                Err(e) => target_error(e),
            },
            Call::RestartInstance { spec, instance } => {
                match self.target.restart_instance(&spec, &instance).await {
                    Ok(()) => Answer::Done,
                    Err(e) => target_error(e),
                }
            }
            Call::Stop { instances } => match self.target.stop(&instances).await {
                Ok(()) => Answer::Done,
                Err(e) => target_error(e),
            },
            Call::Exited { instance } => Answer::Exited {
                detail: self.target.exited(&instance).await,
            },
            Call::Running => Answer::Running {
                instances: self.target.running().await,
            },
            Call::Logs {
                instance,
                max_bytes,
            } => match self.target.logs(&instance, max_bytes).await {
                Ok(text) => Answer::Logs { text },
                Err(e) => target_error(e),
            },
            Call::Route {
                env,
                listen,
                pools,
                affinity,
                metrics_listen,
            } => {
                self.router.set_metrics_listen(&env, metrics_listen);
                match self.router.route_pools(&env, listen, pools, affinity).await {
                    Ok(()) => Answer::Done,
                    Err(e) => route_error(e),
                }
            }
            Call::Revive {
                env,
                listen,
                metrics_listen,
            } => {
                self.router.set_metrics_listen(&env, metrics_listen);
                match self.router.revive(&env, listen).await {
                    Ok(started) => Answer::Revived { started },
                    Err(e) => route_error(e),
                }
            }
            Call::RouterRunning { env } => Answer::RouterRunning {
                running: self.router.is_running(&env).await,
            },
            Call::StopRouter { env } => {
                self.router.stop(&env).await;
                Answer::Done
            }
            Call::Stats {
                env,
                slower_than_ms,
                histograms,
            } => match self.router.stats(&env, &slower_than_ms, histograms).await {
                Ok(pools) => Answer::Stats { pools },
                Err(e) => error(ErrorKind::Metric, e.to_string()),
            },
            Call::Probe {
                instance,
                path,
                timeout_ms,
            } => Answer::Probe {
                outcome: self.probe(&instance, &path, timeout_ms).await,
            },
            Call::Smoke {
                settings,
                instances,
            } => Answer::Smoke {
                results: self.target.smoke(&settings, &instances).await,
            },
            Call::Usage { instances } => Answer::Usage {
                readings: self.target.usage(&instances).await,
            },
        }
    }

    async fn probe(&self, instance: &InstanceRef, path: &str, timeout_ms: u64) -> ProbeOutcome {
        let timeout = Duration::from_millis(timeout_ms);
        self.target.probe(instance, path, timeout).await
    }
}

fn target_error(e: TargetError) -> Answer {
    let kind = match &e {
        TargetError::Unpack { .. } => ErrorKind::Unpack,
        TargetError::Start { .. } => ErrorKind::Start,
        TargetError::Stop { .. } => ErrorKind::Stop,
        TargetError::Io(_) => ErrorKind::Io,
    };
    error(kind, e.to_string())
}

fn route_error(e: RouteError) -> Answer {
    let kind = match &e {
        RouteError::Start { .. } => ErrorKind::RouteStart,
        RouteError::Refused { .. } => ErrorKind::RouteRefused,
    };
    error(kind, e.to_string())
}

/// Whether the artifact is stored and hashes to its name (`verified`); a
/// corrupt copy is removed so the controller sends it again.
fn have(blobs: &Blobs, digest: &Digest, verified: Result<(), gantry_store::BlobError>) -> bool {
    match verified {
        Ok(()) => true,
        Err(gantry_store::BlobError::Mismatch { .. }) => {
            tracing::warn!(digest = %digest, "stored artifact is corrupt; removing it");
            let _ = std::fs::remove_file(blobs.path(digest));
            false
        }
        Err(_) => false,
    }
}

/// A data directory named in `Hello`: relative ones are under the host
/// user's `HOME`, as the SSH launcher resolves them.
fn resolve_data_dir(asked: &str) -> PathBuf {
    let path = Path::new(asked);
    let path = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(path)
    };
    path.canonicalize().unwrap_or(path)
}
