//! The router's counters in the Prometheus text exposition format (0.0.4),
//! served on their own listener (`--metrics-listen`) that answers only
//! `GET /metrics`: a user's Prometheus scrapes it without any way into the
//! admin API, which stays on loopback behind its token.
//!
//! Per pool: requests by status class, and the latency histogram with fixed
//! buckets from 1 ms to 10 s, each counted from the HDR histogram
//! (`count_between`), so `histogram_quantile` over them is as exact as the
//! buckets allow and the counts agree with `/stats` to HDR precision.

use super::counters::Snapshot;
use super::live::State;
use super::{text, Body};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::fmt::Write;
use std::sync::Arc;

/// Upper bounds of the latency buckets, in seconds: P50 and P99 between
/// two bounds are interpolated, so they are spaced 1-2-5 per decade.
pub(crate) const LATENCY_BUCKETS_S: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub(super) async fn metrics(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(
        Full::new(Bytes::from(render(&state)))
            .map_err(|never| match never {})
            .boxed(),
    );
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// A label value with `\`, `"` and line feeds escaped, as the format asks.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The exposition text of every pool this router has counted.
pub(super) fn render(state: &State) -> String {
    let live = state.live();
    let pools: Vec<(String, Snapshot, u32)> = {
        let all = state.counters.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(name, c)| {
                let weight = live
                    .routing
                    .pools
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or(0, |p| p.weight);
                (name.clone(), c.snapshot(), weight)
            })
            .collect()
    };
    let env = escape(&state.options.environment);
    let labels: Vec<String> = pools
        .iter()
        .map(|(name, _, _)| {
            format!(
                r#"environment="{env}",release="{}",pool="{}""#,
                escape(name),
                super::live::role(&live.routing.pools, name)
            )
        })
        .collect();
    let mut out = String::with_capacity(1024 + pools.len() * 2048);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP gantry_router_requests_total Requests sent to a pool's upstreams (each attempt), by the answer's status class; \"none\": no answer.");
    let _ = writeln!(out, "# TYPE gantry_router_requests_total counter");
    for ((_, s, _), l) in pools.iter().zip(&labels) {
        for (class, n) in STATUS_CLASSES.iter().zip(s.answers) {
            let _ = writeln!(
                out,
                r#"gantry_router_requests_total{{{l},code="{class}"}} {n}"#
            );
        }
        let _ = writeln!(
            out,
            r#"gantry_router_requests_total{{{l},code="none"}} {}"#,
            s.unanswered
        );
    }
    let _ = writeln!(out, "# HELP gantry_router_request_duration_seconds Time from sending a request upstream to its response head, answered requests.");
    let _ = writeln!(
        out,
        "# TYPE gantry_router_request_duration_seconds histogram"
    );
    for ((_, s, _), l) in pools.iter().zip(&labels) {
        let h = &s.latency;
        for le in LATENCY_BUCKETS_S {
            let at_most = h.count_between(0, (le * 1e6) as u64);
            let _ = writeln!(
                out,
                r#"gantry_router_request_duration_seconds_bucket{{{l},le="{le}"}} {at_most}"#
            );
        }
        let _ = writeln!(
            out,
            r#"gantry_router_request_duration_seconds_bucket{{{l},le="+Inf"}} {}"#,
            h.len()
        );
        let _ = writeln!(
            out,
            "gantry_router_request_duration_seconds_sum{{{l}}} {}",
            s.latency_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "gantry_router_request_duration_seconds_count{{{l}}} {}",
            h.len()
        );
    }
    let _ = writeln!(out, "# HELP gantry_router_pool_weight The pool's relative weight in the routing in force (0: no new requests).");
    let _ = writeln!(out, "# TYPE gantry_router_pool_weight gauge");
    for ((_, _, weight), l) in pools.iter().zip(&labels) {
        let _ = writeln!(out, "gantry_router_pool_weight{{{l}}} {weight}");
    }
    let _ = writeln!(
        out,
        "# HELP gantry_router_routing_generation The generation of the routing in force."
    );
    let _ = writeln!(out, "# TYPE gantry_router_routing_generation gauge");
    let _ = writeln!(
        out,
        r#"gantry_router_routing_generation{{environment="{env}"}} {}"#,
        live.routing.generation
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
