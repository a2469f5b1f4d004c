//! The proxy and its admin API.

use crate::listener::{Bounds, ConnectionLimits};
use crate::*;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, HOST, SET_COOKIE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;
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
}

struct PoolCounters {
    requests: AtomicU64,
    /// 5xx answers and attempts that got no answer.
    errors: AtomicU64,
    /// 4xx answers.
    client_errors: AtomicU64,
    /// Microseconds to the response head; HDR, 3 significant digits. One
    /// shard per worker so workers never wait on each other; merged on read.
    latency: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
}

/// Histogram shards per pool: workers beyond this share shards.
const SHARDS: usize = 16;

thread_local! {
    /// This thread's worker number, which picks its histogram shard.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn new_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits; longer answers are clamped to 1 h.
    // (An auto-resizing histogram would clamp everything: saturating_record does not resize.)
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

impl PoolCounters {
    fn new() -> PoolCounters {
        PoolCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    fn record_latency(&self, started: std::time::Instant) {
        let micros = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let shard = WORKER.with(|w| w.get()) % SHARDS;
        self.latency[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros.max(1));
    }

    fn stats(&self, name: &str, limits_ms: &[f64]) -> PoolStats {
        let mut h = new_histogram();
        for shard in &self.latency {
            // Same bounds everywhere, so adding cannot fail.
            let _ = h.add(&*shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let ms = |us: u64| us as f64 / 1000.0;
        PoolStats {
            name: name.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            slower_than: limits_ms
                .iter()
                .map(|&limit_ms| {
                    let limit_us = (limit_ms * 1000.0).max(0.0) as u64;
                    // Values within the histogram's precision of the limit count as not slower.
                    let at_most = h.count_between(0, limit_us);
                    SlowerThan {
                        limit_ms,
                        requests: h.len().saturating_sub(at_most),
                    }
                })
                .collect(),
        }
    }
}

struct State {
    /// The routing in force with each pool's counters, swapped whole.
    live: RwLock<Arc<Live>>,
    /// Counters by pool name, kept across routings so figures keep adding up.
    counters: Mutex<Vec<(String, Arc<PoolCounters>)>>,
    next: AtomicU64,
    options: RouterOptions,
}

/// Hop-by-hop headers, which a proxy must not forward (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// A routing ready to serve: pools with their counters and the total weight.
struct Live {
    routing: Routing,
    counters: Vec<Arc<PoolCounters>>,
    /// Each pool's upstreams as URI authorities, made once per routing.
    authorities: Vec<Vec<hyper::http::uri::Authority>>,
    total_weight: u64,
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

impl State {
    fn counters(&self, pool: &str) -> Arc<PoolCounters> {
        let mut all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = all.iter().find(|(n, _)| n == pool) {
            return c.clone();
        }
        let c = Arc::new(PoolCounters::new());
        all.push((pool.to_owned(), c.clone()));
        c
    }

    fn make_live(&self, routing: Routing) -> Live {
        let counters = routing
            .pools
            .iter()
            .map(|p| self.counters(&p.name))
            .collect();
        let total_weight = routing.pools.iter().map(|p| p.weight as u64).sum();
        let authorities = routing
            .pools
            .iter()
            .map(|p| {
                p.upstreams
                    .iter()
                    .map(|u| {
                        u.to_string()
                            .parse()
                            .expect("a socket address is a valid authority")
                    })
                    .collect()
            })
            .collect();
        Live {
            routing,
            counters,
            authorities,
            total_weight,
        }
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Picks a pool by weight and an upstream in it, round robin: indexes
    /// into the given snapshot, which the request keeps to its end. With a
    /// sticky key the pool follows from the key's hash instead of the turn.
    fn pick(&self, live: Arc<Live>, sticky: Option<u64>) -> Option<(Arc<Live>, usize, usize)> {
        if live.total_weight == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut slot = match sticky {
            // A point on a fixed scale, so it lands in the same pool while
            // that pool's share of the total does not shrink.
            Some(h) => {
                ((h % STICKY_SCALE) as u128 * live.total_weight as u128 / STICKY_SCALE as u128)
                    as u64
            }
            None => n % live.total_weight,
        };
        let mut found = None;
        for (i, pool) in live.routing.pools.iter().enumerate() {
            if slot < pool.weight as u64 {
                found = Some((i, (n / live.total_weight) as usize % pool.upstreams.len()));
                break;
            }
            slot -= pool.weight as u64;
        }
        let (pool, upstream) = found?;
        Some((live, pool, upstream))
    }

    fn apply(&self, routing: Routing) -> Result<(), String> {
        routing.validate().map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec_pretty(&routing).map_err(|e| e.to_string())?;
        // On disk first: a router restarted after this answer serves the same.
        write_atomic(&self.options.state_dir.join(CONFIG_FILE), &bytes)
            .map_err(|e| e.to_string())?;
        let live = Arc::new(self.make_live(routing));
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        Ok(())
    }
}

type UpstreamClient = Client<HttpConnector, Body>;

const STICKY_SCALE: u64 = 1 << 32;

/// FNV-1a with a final mix: a stable hash (the same in every router process
/// and version), so a user's key maps to the same point after a restart.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The value of cookie `name` in a request's Cookie headers.
fn cookie_value<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// A new random session id for a sticky cookie.
fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// The sticky key of a request, and the cookie to set when the router made one up.
fn sticky_key(live: &Live, headers: &hyper::HeaderMap) -> (Option<u64>, Option<String>) {
    match &live.routing.affinity {
        None => (None, None),
        Some(Affinity::Header(name)) => (
            headers
                .get(name.as_str())
                .map(|v| stable_hash(v.as_bytes())),
            None,
        ),
        Some(Affinity::Cookie(name)) => match cookie_value(headers, name) {
            Some(v) => (Some(stable_hash(v.as_bytes())), None),
            None => {
                let id = new_session_id();
                (
                    Some(stable_hash(id.as_bytes())),
                    Some(format!("{name}={id}; Path=/; HttpOnly; SameSite=Lax")),
                )
            }
        },
    }
}

async fn proxy(
    state: Arc<State>,
    client: UpstreamClient,
    req: Request<Incoming>,
) -> Response<Body> {
    let live = state.live();
    let (sticky, set_cookie) = sticky_key(&live, req.headers());
    let Some((live, pool_index, first)) = state.pick(live, sticky) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no release is serving this environment\n",
        );
    };
    let pool = &live.routing.pools[pool_index];
    let counters = &live.counters[pool_index];
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    // HTTP/2 carries the host as the URI's authority; upstreams speak
    // HTTP/1.1 and want it as a Host header.
    if !parts.headers.contains_key(HOST) {
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, a);
        }
    }
    if let Some(h) = parts.headers.get(HOST).cloned() {
        parts.headers.insert("x-forwarded-host", h);
    }
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // A request without a body can be sent to another upstream when its
    // first one could not be connected to (nothing reached it). A safe
    // method (GET, HEAD, OPTIONS) is also retried when the connection broke
    // before any answer, as happens with an instance that dies while its
    // listening socket still accepts.
    let replayable = body.is_end_stream();
    let safe = matches!(
        parts.method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    );
    let attempts = if replayable {
        pool.upstreams.len().clamp(1, 4)
    } else {
        1
    };
    let mut body = Some(body);
    for attempt in 0..attempts {
        let upstream = pool.upstreams[(first + attempt) % pool.upstreams.len()];
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority =
            live.authorities[pool_index][(first + attempt) % pool.upstreams.len()].clone();
        let uri = match Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(_) => return text(StatusCode::BAD_REQUEST, "bad request target\n"),
        };
        // Keep the original parts only while another attempt may need them.
        let mut p = if attempt + 1 < attempts {
            parts.clone()
        } else {
            std::mem::replace(&mut parts, Request::new(()).into_parts().0)
        };
        p.uri = uri;
        let b = match body.take() {
            Some(b) => b.boxed(),
            None => Empty::new().map_err(|never| match never {}).boxed(),
        };
        let started = std::time::Instant::now();
        match client.request(Request::from_parts(p, b)).await {
            Ok(resp) => {
                counters.record_latency(started);
                if resp.status().is_server_error() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                } else if resp.status().is_client_error() {
                    counters.client_errors.fetch_add(1, Ordering::Relaxed);
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                rparts.version = client_version;
                if let Some(c) = set_cookie
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                {
                    rparts.headers.append(SET_COOKIE, c);
                }
                return Response::from_parts(rparts, rbody.boxed());
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%upstream, pool = %pool.name, attempt, error = %e, "upstream request failed");
                let retry = (e.is_connect() || safe) && attempt + 1 < attempts;
                if !retry {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!("upstream {upstream} failed: {e}\n"),
                    );
                }
            }
        }
    }
    text(StatusCode::BAD_GATEWAY, "no upstream could be reached\n")
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Headers named by Connection are hop-by-hop too; most requests have none.
    if headers.contains_key(CONNECTION) {
        let named: Vec<String> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .collect();
        for h in &named {
            headers.remove(h.as_str());
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

async fn admin(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    // The scheme's name is case-insensitive (RFC 6750 §2.1).
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer")
                && bool::from(
                    token
                        .trim_start_matches(' ')
                        .as_bytes()
                        .ct_eq(state.options.admin_token.as_bytes()),
                )
        });
    if !authorized {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong admin token\n");
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/routing") => json(StatusCode::OK, &state.live().routing),
        ("PUT", "/routing") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("cannot read body: {e}\n")),
            };
            let routing: Routing = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid routing: {e}\n")),
            };
            match state.apply(routing) {
                Ok(()) => json(StatusCode::OK, &state.live().routing),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("routing refused: {e}\n")),
            }
        }
        ("GET", "/stats") => {
            let limits = match parse_limits(req.uri().query()) {
                Ok(l) => l,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            let all = state.counters.lock().unwrap_or_else(|p| p.into_inner());
            let stats: Vec<PoolStats> =
                all.iter().map(|(name, c)| c.stats(name, &limits)).collect();
            json(StatusCode::OK, &stats)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `above_ms=120,60.5` → [120.0, 60.5].
fn parse_limits(query: Option<&str>) -> Result<Vec<f64>, String> {
    let list = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("above_ms="))
        .unwrap_or("");
    crate::parse_latency_limits(list).map_err(|e| format!("{e}\n"))
}

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
    let info = AdminInfo {
        pid: std::process::id(),
        admin: admin_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                addr: admin_addr,
                source,
            })?,
        listen: bound,
    };
    let state = Arc::new(State {
        live: RwLock::new(Arc::new(Live {
            routing: Routing::default(),
            counters: Vec::new(),
            authorities: Vec::new(),
            total_weight: 0,
        })),
        counters: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
        options: options.clone(),
    });
    // The routing from disk, with its counters.
    let live = Arc::new(state.make_live(routing));
    *state.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    // Announce only once both listeners are bound.
    let info_json = serde_json::to_vec(&info).expect("admin info serializes");
    write_atomic(&options.state_dir.join(ADMIN_FILE), &info_json)
        .map_err(|e| state_err(e.to_string()))?;
    tracing::info!(listen = %info.listen, admin = %info.admin, "router serving");
    start_workers(public, state.clone());
    accept_loop(
        admin_listener,
        Bounds::new(ConnectionLimits::ADMIN),
        state,
        admin,
    )
    .await;
    Ok(())
}
