//! The admin API the controller calls: the routing (read, replace) and the
//! pools' figures, behind a bearer token compared in constant time.

use super::live::State;
use super::{json, text, Body};
use crate::{PoolStats, Routing};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub(super) async fn admin(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
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
            let histograms = wants_histograms(req.uri().query());
            // Histograms only for the pools routed now (what an analysis
            // judges), so the answer stays bounded however many releases
            // this router has served.
            let routed = state.live();
            let all = state.counters.lock().unwrap_or_else(|p| p.into_inner());
            let stats: Vec<PoolStats> = all
                .iter()
                .map(|(name, c)| {
                    let histogram =
                        histograms && routed.routing.pools.iter().any(|p| &p.name == name);
                    c.stats(name, &limits, histogram)
                })
                .collect();
            json(StatusCode::OK, &stats)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `histogram=1` (or `true`): each routed pool's latency histogram too.
fn wants_histograms(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|kv| kv == "histogram=1" || kv == "histogram=true")
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
