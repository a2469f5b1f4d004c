//! Serving HTTP connections within bounds, for every listener Gantry opens
//! (the router's public and admin listeners and the controller's API).
//!
//! hyper serves a connection for as long as the client keeps it open, and
//! reads a request head for as long as the client takes to send it. Here:
//!
//! - the first bytes (which tell HTTP/1 from an HTTP/2 preface) and every
//!   HTTP/1 request head must arrive within [`ConnectionLimits::header_timeout`],
//!   counted from when the connection is ready for them (just opened, or its
//!   previous answer sent), so an HTTP/1 keep-alive connection waits at most
//!   that long for its next request;
//! - a connection with no request in flight (an answer's body counts until
//!   it is sent) is closed after [`ConnectionLimits::idle_timeout`]: idle
//!   HTTP/2 connections, and HTTP/2 clients that trickle header frames;
//! - at most [`ConnectionLimits::max_connections`] are served at once. Over
//!   the limit a connection waits (accepted, or in the kernel's accept
//!   queue) until one closes instead of being refused, so a burst is served
//!   late rather than failed.
//!
//! Request bodies and slow readers of answers are not timed: a request in
//! flight may legitimately stream for a long time (server-sent events,
//! uploads); the connection limit bounds what they can hold.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// How long and how many connections a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for the first bytes and for each HTTP/1 request head.
    pub header_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// For a listener open to users: nginx-like times, and room for many
    /// keep-alive clients (each also holds an upstream connection, so keep
    /// this under half the process's file descriptor limit).
    pub const PUBLIC: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 4096,
    };
    /// For a metrics listener a few Prometheus servers scrape: short
    /// times, few connections (a scrape is one small GET).
    pub const METRICS: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_connections: 16,
    };
    /// For a loopback admin listener that one controller talks to.
    pub const ADMIN: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 64,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::PUBLIC
    }
}

/// The limits of one or more listeners that share one connection limit
/// (the router's workers each accept on their own socket).
#[derive(Debug, Clone)]
pub struct Bounds {
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
}

impl Bounds {
    pub fn new(limits: ConnectionLimits) -> Bounds {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Bounds {
            limits: ConnectionLimits {
                max_connections: max,
                ..limits
            },
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }
}

/// Raises this process's soft limit of open files to its hard limit (as Go
/// programs do at start), so that the connection limit, not the
/// descriptor table, is what bounds a listener; answers the soft limit.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// How long a connection asked to close (idle, or shutting down) may take
/// to finish what it is doing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a connection has in flight, and since when it has had nothing.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(since))
    }
}

/// A request in flight: counted until its answer's body is done or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted as in flight.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `service` on every connection `listener` accepts, within
/// `bounds`, until `shutdown` resolves; then stops accepting, asks open
/// connections to finish and waits for them, at most `drain`.
pub async fn serve<S, B>(
    listener: TcpListener,
    bounds: &Bounds,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_per_peer(listener, bounds, move |_| service.clone(), shutdown, drain).await;
}

/// [`serve`], with a service made for each connection from its peer's
/// address (the controller records who sent a refused request).
pub async fn serve_per_peer<F, S, B>(
    listener: TcpListener,
    bounds: &Bounds,
    make_service: F,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    F: Fn(Option<std::net::SocketAddr>) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (limits, slots) = (bounds.limits, &bounds.slots);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, slots) => accepted,
        };
        let Some((stream, slot)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(stream.peer_addr().ok());
        let stopped = stopped.clone();
        tokio::spawn(async move {
            serve_connection(stream, limits, service, stopped).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot: all slots back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, slots.acquire_many(all)).await;
}

/// The next connection, once a slot is free for it. Accepted first, then
/// held until a slot frees: a worker never reserves a slot that another
/// worker's queued connection could use, and each worker holds at most one
/// connection waiting (the rest wait in the kernel's accept queue).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    match listener.accept().await {
        Ok((stream, _)) => {
            let slot = slots.clone().acquire_owned().await.ok()?;
            Some((stream, slot))
        }
        Err(e) => {
            // Out of file descriptors and the like: do not spin on it.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Which protocol a client speaks, from its first bytes: the HTTP/2
/// preface (prior knowledge, as gRPC and h2c clients send) or not.
/// `None` when the client closed or took longer than `timeout`.
async fn sniff_http2(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 24];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        // A partial preface: peeking again would return at once, so wait a little.
        tokio::time::sleep_until(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(5)),
        )
        .await;
    }
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    limits: ConnectionLimits,
    service: S,
    mut stopped: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http2 = tokio::select! {
        sniffed = sniff_http2(&stream, limits.header_timeout) => match sniffed {
            Some(h2) => h2,
            None => return,
        },
        _ = stopped.wait_for(|s| *s) => return,
    };
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        in_flight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
    });
    let tracked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let in_flight = InFlight::begin(&activity);
            let answer = service.call(req);
            async move {
                answer.await.map(|resp| {
                    resp.map(|inner| TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    })
                })
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings find peers that vanished without closing.
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = if http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(stream), tracked);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(limits.idle_timeout));
    let closing = loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => {
                if activity.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    break "idle";
                }
            }
            _ = stopped.wait_for(|s| *s) => break "shutting down",
        }
    };
    tracing::debug!(reason = closing, "closing a connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}
