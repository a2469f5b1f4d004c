//! Forwarding one user request: pick an upstream, rewrite the request for
//! HTTP/1.1 out, retry what is safe to retry, count the outcome.

use super::live::State;
use super::sticky::sticky_key;
use super::{text, Body, UpstreamClient};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONNECTION, HOST, SET_COOKIE};
use hyper::{Request, Response, StatusCode, Uri};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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

pub(super) async fn proxy(
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
    // What the access log needs, taken before the request moves on.
    let mut logged = state.access_log.as_ref().map(|log| {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        (
            log,
            parts.method.clone(),
            path.to_owned(),
            std::time::SystemTime::now(),
        )
    });
    let mut access = |status: u16, upstream: std::net::SocketAddr, took: std::time::Duration| {
        if let Some((log, method, path, at)) = logged.take() {
            let (release, role) = &live.names[pool_index];
            log.record(crate::access_log::AccessRecord {
                at,
                release: release.clone(),
                pool: role,
                method,
                path,
                status,
                duration_us: took.as_micros() as u64,
                upstream,
            });
        }
    };
    let began = std::time::Instant::now();
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
                counters.count_answer(resp.status(), started);
                access(resp.status().as_u16(), upstream, began.elapsed());
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
                counters.count_unanswered();
                tracing::warn!(%upstream, pool = %pool.name, attempt, error = %e, "upstream request failed");
                let retry = (e.is_connect() || safe) && attempt + 1 < attempts;
                if !retry {
                    access(502, upstream, began.elapsed());
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
