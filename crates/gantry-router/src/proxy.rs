//! The proxy and its admin API: the workers and listeners that serve them
//! (here), the routing in force (`live`), forwarding a request (`forward`),
//! sticky assignment (`sticky`), per-pool counters (`counters`) and the
//! admin API (`admin`).

mod admin;
mod counters;
mod forward;
mod live;
mod metrics;
mod sticky;

use crate::listener::{Bounds, ConnectionLimits};
use crate::*;
use admin::admin;
use bytes::Bytes;
use counters::WORKER;
use forward::proxy;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use live::{Live, State};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Holds `routing.json` and `admin.json`.
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Bearer token the admin API requires.
    pub admin_token: String,
    /// Timeouts and the connection limit of the public listener (the admin
    /// listener has [`ConnectionLimits::ADMIN`]).
    pub limits: ConnectionLimits,
    /// Where to serve `GET /metrics` (Prometheus text) and nothing else;
    /// `None`: not served. Its own listener, never the admin one, so a
    /// scraper reaches the counts and nothing that changes the routing.
    pub metrics_listen: Option<SocketAddr>,
    /// The environment this router serves, as the metrics' `environment` label.
    pub environment: String,
    /// Where and how long the access log is kept (`access.log` in
    /// `state_dir`); `None`: no access log.
    pub access_log: Option<crate::access_log::AccessLogSettings>,
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut r = text(status, serde_json::to_string(value).unwrap_or_default());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

type UpstreamClient = Client<HttpConnector, Body>;

/// Serves `handler` on `listener` within `bounds`, until the process ends.
async fn accept_loop<F, Fut>(listener: TcpListener, bounds: Bounds, state: Arc<State>, handler: F)
where
    F: Fn(Arc<State>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let (state, handler) = (state.clone(), handler.clone());
        async move { Ok::<_, std::convert::Infallible>(handler(state, req).await) }
    });
    // HTTP/1.1, or HTTP/2 when the client opens with its preface
    // (prior knowledge, as gRPC and h2c clients do).
    crate::listener::serve(
        listener,
        &bounds,
        service,
        std::future::pending(),
        std::time::Duration::ZERO,
    )
    .await;
}

fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// A listening socket that other workers may bind too (SO_REUSEPORT): the
/// kernel spreads connections across them.
fn bind_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves user traffic with one single-threaded worker per core, each with
/// its own listener and its own pool of upstream connections, the way nginx
/// runs its workers: no work stealing, no shared connection pool.
fn start_workers(listeners: Vec<std::net::TcpListener>, state: Arc<State>) {
    // One connection limit over all workers.
    let bounds = Bounds::new(state.options.limits);
    for (n, listener) in listeners.into_iter().enumerate() {
        let (state, bounds) = (state.clone(), bounds.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("router-worker-{n}"))
            .spawn(move || {
                WORKER.with(|w| w.set(n));
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => return tracing::error!(error = %e, "worker runtime failed to start"),
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => {
                            let client = upstream_client();
                            accept_loop(l, bounds, state, move |s, req| {
                                proxy(s, client.clone(), req)
                            })
                            .await
                        }
                        Err(e) => tracing::error!(error = %e, "worker cannot use its listener"),
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a router worker");
        }
    }
}

/// Errors that stop the router from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
}

/// Runs the router until the process ends.
pub async fn serve(options: RouterOptions) -> Result<(), ServeError> {
    let config_path = options.state_dir.join(CONFIG_FILE);
    let state_err = |reason: String| ServeError::State {
        path: config_path.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(&options.state_dir).map_err(|e| state_err(e.to_string()))?;
    // Each user connection may hold an upstream connection too.
    let open_files = crate::listener::raise_open_files_limit();
    let wanted = 2 * options.limits.max_connections as u64 + 256;
    if open_files < wanted {
        tracing::warn!(
            open_files,
            max_connections = options.limits.max_connections,
            "the open files limit may be reached before the connection limit"
        );
    }
    let routing = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| state_err(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Routing::default(),
        Err(e) => return Err(state_err(e.to_string())),
    };
    // One listener per worker, all on the same address; the first fixes the
    // port when the address asks for any (port 0).
    let listen_err = |source| ServeError::Listen {
        addr: options.listen,
        source,
    };
    let first = bind_shared(options.listen).map_err(listen_err)?;
    let bound = first.local_addr().map_err(listen_err)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let mut public = vec![first];
    for _ in 1..workers {
        public.push(bind_shared(bound).map_err(listen_err)?);
    }
    let admin_addr: SocketAddr = "127.0.0.1:0".parse().expect("valid literal");
    let admin_listener =
        TcpListener::bind(admin_addr)
            .await
            .map_err(|source| ServeError::Listen {
                addr: admin_addr,
                source,
            })?;
    let metrics_listener = match options.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen { addr, source })?,
        ),
        None => None,
    };
    let info = AdminInfo {
        metrics: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        pid: std::process::id(),
        admin: admin_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                addr: admin_addr,
                source,
            })?,
        listen: bound,
    };
    let access_log = match options.access_log {
        Some(settings) => Some(
            crate::access_log::AccessLog::start(&options.state_dir, settings)
                .map_err(|e| state_err(format!("cannot open the access log: {e}")))?,
        ),
        None => None,
    };
    let state = Arc::new(State {
        live: RwLock::new(Arc::new(Live {
            routing: Routing::default(),
            counters: Vec::new(),
            authorities: Vec::new(),
            names: Vec::new(),
            total_weight: 0,
        })),
        counters: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
        options: options.clone(),
        access_log,
    });
    // The routing from disk, with its counters.
    let live = Arc::new(state.make_live(routing));
    *state.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    // Announce only once every listener is bound.
    let info_json = serde_json::to_vec(&info).expect("admin info serializes");
    write_atomic(&options.state_dir.join(ADMIN_FILE), &info_json)
        .map_err(|e| state_err(e.to_string()))?;
    tracing::info!(listen = %info.listen, admin = %info.admin, "router serving");
    start_workers(public, state.clone());
    if let Some(listener) = metrics_listener {
        tokio::spawn(accept_loop(
            listener,
            Bounds::new(ConnectionLimits::METRICS),
            state.clone(),
            metrics::metrics,
        ));
    }
    accept_loop(
        admin_listener,
        Bounds::new(ConnectionLimits::ADMIN),
        state,
        admin,
    )
    .await;
    Ok(())
}
