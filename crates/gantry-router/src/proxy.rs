//! The proxy and its admin API.

use crate::*;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

struct PoolCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Microseconds to the response head; HDR, 3 significant digits.
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl PoolCounters {
    fn new() -> PoolCounters {
        PoolCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            // 1 µs to 1 h at 3 significant digits; longer answers are clamped to 1 h.
            // (An auto-resizing histogram would clamp everything: saturating_record does not resize.)
            latency: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static bounds are valid"),
            ),
        }
    }

    fn record_latency(&self, started: std::time::Instant) {
        let micros = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros.max(1));
    }

    fn stats(&self, name: &str, limits_ms: &[f64]) -> PoolStats {
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        PoolStats {
            name: name.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
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
    routing: RwLock<Arc<Routing>>,
    counters: Mutex<Vec<(String, Arc<PoolCounters>)>>,
    next: AtomicU64,
    client: Client<HttpConnector, Body>,
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

    /// Picks a pool by weight and an upstream in it, round robin.
    fn pick(&self) -> Option<(String, SocketAddr)> {
        let routing = self
            .routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let total: u64 = routing.pools.iter().map(|p| p.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut slot = n % total;
        for pool in &routing.pools {
            if slot < pool.weight as u64 {
                let upstream = pool.upstreams[(n / total) as usize % pool.upstreams.len()];
                return Some((pool.name.clone(), upstream));
            }
            slot -= pool.weight as u64;
        }
        None
    }

    fn pool_size(&self, pool: &str) -> usize {
        let routing = self
            .routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        routing
            .pools
            .iter()
            .find(|p| p.name == pool)
            .map_or(0, |p| p.upstreams.len())
    }

    /// The upstream after `current` in its pool, if the pool has another.
    fn next_upstream(&self, pool: &str, current: SocketAddr) -> Option<SocketAddr> {
        let routing = self
            .routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let p = routing.pools.iter().find(|p| p.name == pool)?;
        let i = p.upstreams.iter().position(|u| *u == current)?;
        (p.upstreams.len() > 1).then(|| p.upstreams[(i + 1) % p.upstreams.len()])
    }

    fn apply(&self, routing: Routing) -> Result<(), String> {
        routing.validate().map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec_pretty(&routing).map_err(|e| e.to_string())?;
        // On disk first: a router restarted after this answer serves the same.
        write_atomic(&self.options.state_dir.join(CONFIG_FILE), &bytes)
            .map_err(|e| e.to_string())?;
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routing);
        Ok(())
    }
}

async fn proxy(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let Some((pool, upstream)) = state.pick() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no release is serving this environment\n",
        );
    };
    let (mut parts, body) = req.into_parts();
    if let Some(h) = parts.headers.get(HOST).cloned() {
        parts.headers.insert("x-forwarded-host", h);
    }
    strip_hop_by_hop(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
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
    let mut body = Some(body);
    let mut upstream = upstream;
    let attempts = if replayable {
        state.pool_size(&pool).clamp(1, 4)
    } else {
        1
    };
    for attempt in 1..=attempts {
        let counters = state.counters(&pool);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let uri: Uri = match format!("http://{upstream}{path}").parse() {
            Ok(u) => u,
            Err(_) => return text(StatusCode::BAD_REQUEST, "bad request target\n"),
        };
        let mut p = parts.clone();
        p.uri = uri;
        let b = match body.take() {
            Some(b) => b.boxed(),
            None => Empty::new().map_err(|never| match never {}).boxed(),
        };
        let started = std::time::Instant::now();
        match state.client.request(Request::from_parts(p, b)).await {
            Ok(resp) => {
                counters.record_latency(started);
                if resp.status().is_server_error() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                return Response::from_parts(rparts, rbody.boxed());
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%upstream, pool, attempt, error = %e, "upstream request failed");
                match state.next_upstream(&pool, upstream) {
                    Some(next) if (e.is_connect() || safe) && attempt < attempts => upstream = next,
                    _ => {
                        return text(
                            StatusCode::BAD_GATEWAY,
                            format!("upstream {upstream} failed: {e}\n"),
                        )
                    }
                }
            }
        }
    }
    text(StatusCode::BAD_GATEWAY, "no upstream could be reached\n")
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(h);
    }
}

async fn admin(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let expected = format!("Bearer {}", state.options.admin_token);
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()));
    if !authorized {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong admin token\n");
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/routing") => {
            let routing = state
                .routing
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            json(StatusCode::OK, &*routing)
        }
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
                Ok(()) => json(
                    StatusCode::OK,
                    &*state
                        .routing
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                ),
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
    let Some(list) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("above_ms="))
    else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("above_ms: {s:?} is not a number of milliseconds\n")),
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn accept_loop<F, Fut>(listener: TcpListener, state: Arc<State>, handler: F)
where
    F: Fn(Arc<State>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(state, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
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
    let routing = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| state_err(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Routing::default(),
        Err(e) => return Err(state_err(e.to_string())),
    };
    let public = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
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
        listen: public.local_addr().map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?,
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector);
    let state = Arc::new(State {
        routing: RwLock::new(Arc::new(routing)),
        counters: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
        client,
        options: options.clone(),
    });
    // Announce only once both listeners are bound.
    let info_json = serde_json::to_vec(&info).expect("admin info serializes");
    write_atomic(&options.state_dir.join(ADMIN_FILE), &info_json)
        .map_err(|e| state_err(e.to_string()))?;
    tracing::info!(listen = %info.listen, admin = %info.admin, "router serving");
    tokio::spawn(accept_loop(admin_listener, state.clone(), admin));
    accept_loop(public, state, proxy).await;
    Ok(())
}
