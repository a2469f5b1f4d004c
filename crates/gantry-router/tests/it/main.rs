//! The router against real upstream HTTP servers on loopback.

use bytes::Bytes;
use gantry_router::listener::ConnectionLimits;
use gantry_router::{AdminInfo, Affinity, Pool, RouterOptions, Routing, ADMIN_FILE};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

mod prometheus;

/// An upstream that answers every request with `name`.
async fn upstream(name: &'static str) -> SocketAddr {
    slow_upstream(name, 0).await
}

/// An upstream that answers with `name` after `delay_ms`.
async fn slow_upstream(name: &'static str, delay_ms: u64) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn start_router(dir: &Path) -> AdminInfo {
    start_router_with(dir, ConnectionLimits::PUBLIC).await
}

async fn start_router_with(dir: &Path, limits: ConnectionLimits) -> AdminInfo {
    let _ = std::fs::remove_file(dir.join(ADMIN_FILE));
    let options = RouterOptions {
        state_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: "t0ken".into(),
        limits,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        environment: "production".into(),
        access_log: Some(gantry_router::access_log::AccessLogSettings::STANDARD),
    };
    tokio::spawn(gantry_router::serve(options));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(bytes) = std::fs::read(dir.join(ADMIN_FILE)) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        assert!(Instant::now() < deadline, "router did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn put_routing(info: &AdminInfo, token: &str, routing: &Routing) -> u16 {
    let req = Request::put(format!("http://{}/routing", info.admin))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(serde_json::to_vec(routing).unwrap())))
        .unwrap();
    client().request(req).await.unwrap().status().as_u16()
}

fn routing(generation: u64, pools: Vec<(&str, u32, Vec<SocketAddr>)>) -> Routing {
    Routing {
        generation,
        pools: pools
            .into_iter()
            .map(|(name, weight, upstreams)| Pool {
                name: name.into(),
                weight,
                upstreams,
            })
            .collect(),
        affinity: None,
    }
}

#[tokio::test]
async fn traffic_is_split_by_weight_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    assert_eq!(get(info.listen, "/").await.0, 503, "no routing yet");
    let (a, b) = (upstream("stable").await, upstream("canary").await);
    let r = routing(1, vec![("stable", 3, vec![a]), ("canary", 1, vec![b])]);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    let mut canary = 0;
    for _ in 0..400 {
        let (status, body) = get(info.listen, "/").await;
        assert_eq!(status, 200);
        canary += usize::from(body == "canary");
    }
    assert_eq!(canary, 100, "weight 1 of 4 gets exactly a quarter");
    // The access log has one line per request, with the pool that served it.
    let log = dir.path().join(gantry_router::access_log::ACCESS_LOG);
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 400 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 400 lines written",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 400, "the 503 before any routing is no pool's");
    let of = |role: &str| lines.iter().filter(|l| l["pool"] == role).count();
    assert_eq!((of("stable"), of("canary")), (300, 100));
    let l = lines.iter().find(|l| l["pool"] == "canary").unwrap();
    assert_eq!(
        (
            l["release"].as_str(),
            l["method"].as_str(),
            l["path"].as_str(),
            l["status"].as_u64()
        ),
        (Some("canary"), Some("GET"), Some("/"), Some(200))
    );
    assert_eq!(l["upstream"], b.to_string());
}

#[tokio::test]
async fn admin_needs_the_token_and_refuses_bad_routing() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let a = upstream("a").await;
    assert_eq!(
        put_routing(&info, "wrong", &routing(1, vec![("a", 1, vec![a])])).await,
        401
    );
    assert_eq!(
        put_routing(&info, "t0ken", &routing(1, vec![("a", 1, vec![])])).await,
        400,
        "weight without upstreams"
    );
    assert_eq!(
        get(info.listen, "/").await.0,
        503,
        "refused routings change nothing"
    );
}

#[tokio::test]
async fn the_last_routing_survives_a_router_restart() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let a = upstream("persisted").await;
    assert_eq!(
        put_routing(&info, "t0ken", &routing(7, vec![("a", 1, vec![a])])).await,
        200
    );
    // A second router started from the same state directory serves the same.
    let again = start_router(dir.path()).await;
    assert_ne!(again.listen, info.listen);
    assert_eq!(
        get(again.listen, "/x?y=1").await,
        (200, "persisted".to_owned())
    );
}

#[tokio::test]
async fn a_dead_upstream_is_skipped_for_requests_without_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let live = upstream("live").await;
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed again: nothing listens there
    assert_eq!(
        put_routing(
            &info,
            "t0ken",
            &routing(1, vec![("p", 1, vec![dead, live])])
        )
        .await,
        200
    );
    for _ in 0..20 {
        assert_eq!(get(info.listen, "/").await, (200, "live".to_owned()));
    }
}

async fn stats(info: &AdminInfo, query: &str) -> (u16, String) {
    let req = Request::get(format!("http://{}/stats{query}", info.admin))
        .header("authorization", "Bearer t0ken")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn latency_is_recorded_per_pool_and_counted_against_limits() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let (fast, slow) = (upstream("fast").await, slow_upstream("slow", 60).await);
    let r = routing(1, vec![("fast", 1, vec![fast]), ("slow", 1, vec![slow])]);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    for _ in 0..20 {
        assert_eq!(get(info.listen, "/").await.0, 200);
    }
    let (status, body) = stats(&info, "?above_ms=30,1000").await;
    assert_eq!(status, 200, "{body}");
    let pools: Vec<gantry_router::PoolStats> = serde_json::from_str(&body).unwrap();
    let pool = |n: &str| pools.iter().find(|p| p.name == n).unwrap().clone();
    let (f, s) = (pool("fast"), pool("slow"));
    assert_eq!((f.requests, s.requests), (10, 10));
    assert_eq!(f.slower_than[0].requests, 0, "{f:?}");
    assert_eq!(
        s.slower_than[0].requests, 10,
        "every slow answer took over 30 ms: {s:?}"
    );
    assert_eq!(s.slower_than[1].requests, 0, "none took a second: {s:?}");
    assert!(s.p50_ms >= 60.0 && f.p99_ms < 30.0, "{s:?} {f:?}");
    assert_eq!(stats(&info, "?above_ms=soon").await.0, 400);
}

/// An upstream that answers `/status/N` with status N and anything else with 200.
async fn status_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let status = req
                            .uri()
                            .path()
                            .strip_prefix("/status/")
                            .and_then(|s| s.parse::<u16>().ok())
                            .unwrap_or(200);
                        let mut resp = Response::new(Full::new(Bytes::from("answer")));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn client_errors_are_counted_per_pool_apart_from_errors() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let answering = status_upstream().await;
    let r = routing(1, vec![("p", 1, vec![answering])]);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    let mut sent = Vec::new();
    for path in [
        "/",
        "/status/404",
        "/status/404",
        "/status/410",
        "/status/429",
    ]
    .into_iter()
    .chain(["/status/500", "/status/503", "/status/302", "/"])
    {
        sent.push(get(info.listen, path).await.0);
    }
    assert_eq!(sent, [200, 404, 404, 410, 429, 500, 503, 302, 200]);
    let (status, body) = stats(&info, "").await;
    assert_eq!(status, 200, "{body}");
    let pools: Vec<gantry_router::PoolStats> = serde_json::from_str(&body).unwrap();
    let p = pools.iter().find(|p| p.name == "p").unwrap();
    assert_eq!(
        (p.requests, p.errors, p.client_errors),
        (9, 2, 4),
        "4xx apart from 5xx: {p:?}"
    );
    assert!(
        body.contains("\"client_errors\":4"),
        "in the /stats JSON: {body}"
    );
}

/// A router splitting 90/10 between "stable" and "canary", with `affinity`.
async fn sticky_routing_setup(affinity: Affinity) -> (tempfile::TempDir, AdminInfo) {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    let (a, b) = (upstream("stable").await, upstream("canary").await);
    let mut r = routing(1, vec![("stable", 90, vec![a]), ("canary", 10, vec![b])]);
    r.affinity = Some(affinity);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    (dir, info)
}

async fn get_with(addr: SocketAddr, header: (&str, &str)) -> (String, Option<String>) {
    let req = Request::get(format!("http://{addr}/"))
        .header(header.0, header.1)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8_lossy(&body).into_owned(), cookie)
}

#[tokio::test]
async fn a_sticky_header_keeps_each_user_on_one_release_as_the_canary_grows() {
    let (_dir, info) = sticky_routing_setup(Affinity::Header("x-user".into())).await;
    let mut first = Vec::new();
    for user in 0..200 {
        let id = format!("user-{user}");
        let (pool, _) = get_with(info.listen, ("x-user", &id)).await;
        for _ in 0..3 {
            assert_eq!(
                get_with(info.listen, ("x-user", &id)).await.0,
                pool,
                "{id} moved"
            );
        }
        first.push(pool);
    }
    let on_canary = first.iter().filter(|p| *p == "canary").count();
    assert!(
        (5..=40).contains(&on_canary),
        "about 10% of 200 users: {on_canary}"
    );
    // The canary grows to 50%: everyone on it stays, others join.
    let (a, b) = (upstream("stable").await, upstream("canary").await);
    let mut r = routing(2, vec![("stable", 50, vec![a]), ("canary", 50, vec![b])]);
    r.affinity = Some(Affinity::Header("x-user".into()));
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    let mut now_on_canary = 0;
    for (user, before) in first.iter().enumerate() {
        let (pool, _) = get_with(info.listen, ("x-user", &format!("user-{user}"))).await;
        if before == "canary" {
            assert_eq!(pool, "canary", "user-{user} left the canary as it grew");
        }
        now_on_canary += usize::from(pool == "canary");
    }
    assert!(
        now_on_canary > on_canary && (60..=140).contains(&now_on_canary),
        "{now_on_canary}"
    );
}

#[tokio::test]
async fn a_sticky_cookie_is_set_once_and_then_followed() {
    let (_dir, info) = sticky_routing_setup(Affinity::Cookie("gantry_session".into())).await;
    let mut seen_canary = false;
    for _ in 0..60 {
        let (pool, cookie) = get_with(info.listen, ("accept", "*/*")).await;
        let cookie = cookie.expect("a new user gets a session cookie");
        assert!(
            cookie.starts_with("gantry_session=") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_owned();
        for _ in 0..3 {
            let (again, set) =
                get_with(info.listen, ("cookie", &format!("theme=dark; {pair}"))).await;
            assert_eq!(again, pool, "the cookie keeps the user on {pool}");
            assert!(set.is_none(), "no new cookie for a known user");
        }
        seen_canary |= pool == "canary";
    }
    assert!(seen_canary, "some of 60 new users land on the 10% canary");
}

#[tokio::test]
async fn http2_clients_are_served_and_forwarded_as_http1() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    // An upstream that reports the version and Host it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .map(|h| h.to_str().unwrap().to_owned());
                        let text = format!("{:?} {}", req.version(), host.unwrap_or_default());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    assert_eq!(
        put_routing(&info, "t0ken", &routing(1, vec![("a", 1, vec![up])])).await,
        200
    );
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    for n in 0..20 {
        let req = Request::get(format!("http://{}/item/{n}", info.listen))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = h2
            .request(req)
            .await
            .expect("h2 request through the router");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("HTTP/1.1 {}", info.listen)
        );
    }
}

/// Sends `opening`, then one more header line every `every`, until the
/// server closes the connection; answers how long that took, or `None` if
/// it was still open at `deadline`.
async fn trickle(
    addr: SocketAddr,
    opening: &[u8],
    every: Duration,
    deadline: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(opening).await.unwrap();
    let mut n = 0;
    while started.elapsed() < deadline {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            // Closed (or reset): done. Whatever it answered first, it then closes.
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {
                n += 1;
                if s.write_all(format!("x-slow-{n}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

const TEST_LIMITS: ConnectionLimits = ConnectionLimits {
    header_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(3),
    max_connections: 3,
};

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router_with(dir.path(), TEST_LIMITS).await;
    let a = upstream("a").await;
    assert_eq!(
        put_routing(&info, "t0ken", &routing(1, vec![("a", 1, vec![a])])).await,
        200
    );
    let second = Duration::from_secs(1);
    let bound = TEST_LIMITS.header_timeout + Duration::from_secs(2);
    let probes = [
        // A header line a second: the head never completes.
        (
            "trickled headers",
            &b"GET / HTTP/1.1\r\nhost: x\r\n"[..],
            bound,
        ),
        // Connected, then nothing at all.
        ("a silent client", &b""[..], bound),
        // A partial HTTP/2 preface.
        ("half a preface", &b"PRI * HTTP/2.0\r\n"[..], bound),
        // A whole preface, then no request: idle HTTP/2.
        (
            "an idle HTTP/2 connection",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"[..],
            TEST_LIMITS.idle_timeout + Duration::from_secs(2),
        ),
    ];
    // All at once, each on its own task.
    let running: Vec<_> = probes
        .iter()
        .map(|(_, opening, bound)| {
            let (opening, deadline) = (opening.to_vec(), *bound + Duration::from_secs(10));
            tokio::spawn(async move { trickle(info.listen, &opening, second, deadline).await })
        })
        .collect();
    for ((what, _, bound), probe) in probes.iter().zip(running) {
        let took = probe.await.unwrap();
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {bound:?} + 10s"));
        assert!(took <= *bound, "{what}: closed only after {took:?}");
    }
    // An HTTP/1 keep-alive connection waits for its next request no longer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(info.listen).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(bound + Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "keep-alive connection still open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() <= bound,
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn over_the_connection_limit_a_request_waits_until_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router_with(dir.path(), TEST_LIMITS).await;
    let slow = slow_upstream("slow", 2500).await;
    let r = routing(1, vec![("slow", 1, vec![slow])]);
    assert_eq!(put_routing(&info, "t0ken", &r).await, 200);
    // Every slot held by a request in flight...
    let held: Vec<_> = (0..TEST_LIMITS.max_connections)
        .map(|_| tokio::spawn(async move { get(info.listen, "/").await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = stats(&info, "").await;
        let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
        if pools[0]["requests"].as_u64() == Some(TEST_LIMITS.max_connections as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held requests never arrived: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...so one more is not served yet,
    let waiting = tokio::spawn(async move { get(info.listen, "/").await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, body) = stats(&info, "").await;
    let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        pools[0]["requests"].as_u64(),
        Some(TEST_LIMITS.max_connections as u64),
        "a request was taken past the connection limit"
    );
    assert!(!waiting.is_finished());
    // and is served once a held one is done.
    let answer = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(answer, (200, "slow".to_owned()));
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn the_admin_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let info = start_router(dir.path()).await;
    for (auth, want) in [
        ("Bearer t0ken", 200),
        ("bearer t0ken", 200),
        ("BEARER t0ken", 200),
        ("Basic t0ken", 401),
        ("bearer wrong", 401),
    ] {
        let req = Request::get(format!("http://{}/routing", info.admin))
            .header("authorization", auth)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let status = client().request(req).await.unwrap().status().as_u16();
        assert_eq!(status, want, "{auth}");
    }
}

/// Two routers standing for two fleet hosts serve the same pool: one fast
/// and busy, one slow and quiet. Their histograms, asked for with
/// `histogram=1`, merge into the fleet's P99, which is the fast one's, where
/// the highest of the two P99s would be the slow one's.
#[tokio::test]
async fn histograms_from_two_routers_merge_into_the_fleets_percentiles() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        start_router(dir_a.path()).await,
        start_router(dir_b.path()).await,
    );
    let (fast, slow) = (upstream("fast").await, slow_upstream("slow", 60).await);
    assert_eq!(
        put_routing(&a, "t0ken", &routing(1, vec![("2.0.0", 1, vec![fast])])).await,
        200
    );
    assert_eq!(
        put_routing(&b, "t0ken", &routing(1, vec![("2.0.0", 1, vec![slow])])).await,
        200
    );
    for _ in 0..150 {
        assert_eq!(get(a.listen, "/").await.0, 200);
    }
    assert_eq!(get(b.listen, "/").await.0, 200);

    let read = |body: String| -> gantry_router::PoolStats {
        let mut pools: Vec<gantry_router::PoolStats> = serde_json::from_str(&body).unwrap();
        assert_eq!(pools.len(), 1, "{body}");
        pools.remove(0)
    };
    let (_, plain) = stats(&a, "").await;
    assert!(
        read(plain).latency_histogram.is_none(),
        "no histogram unless asked"
    );
    let (sa, sb) = (
        read(stats(&a, "?histogram=1").await.1),
        read(stats(&b, "?above_ms=10&histogram=1").await.1),
    );
    let (ha, hb) = (
        sa.latency_histogram.clone().unwrap(),
        sb.latency_histogram.clone().unwrap(),
    );
    assert_eq!((ha.total(), hb.total()), (150, 1));
    assert!(sb.p99_ms >= 60.0, "the slow host's own P99: {sb:?}");
    let merged = gantry_router::latency::merge([&ha, &hb]).unwrap();
    let p99_ms = merged.value_at_quantile(0.99) as f64 / 1000.0;
    assert!(
        p99_ms < 30.0 && p99_ms <= sa.p99_ms.max(0.001) * 1.01 + 1.0,
        "fleet P99 {p99_ms} ms, fast host's {} ms",
        sa.p99_ms
    );
    assert_eq!(merged.len(), 151);

    // A pool no longer routed keeps its counts but sends no histogram.
    assert_eq!(
        put_routing(&a, "t0ken", &routing(2, vec![("3.0.0", 1, vec![fast])])).await,
        200
    );
    let (_, body) = stats(&a, "?histogram=1").await;
    let pools: Vec<gantry_router::PoolStats> = serde_json::from_str(&body).unwrap();
    let old = pools.iter().find(|p| p.name == "2.0.0").unwrap();
    assert_eq!((old.requests, old.latency_histogram.is_none()), (150, true));
}
