//! Asking a Prometheus server the analysis' queries: one instant query per
//! rule and look, over its HTTP API (`/api/v1/query`).
//!
//! Every way a query can come back without a number is a reading of its
//! own: no series is [`Reading::NoData`]; a PromQL error, an HTTP error, a
//! timeout or an unreachable server is [`Reading::Error`] with the reason.
//! The bearer token goes only into the request header, never into a
//! reason, a log line or a URL.

use gantry_config::{Credential, Prometheus};
use gantry_core::analysis::queries::{Condition, QueryReading, QueryRule, Reading, Tally};
use std::time::Duration;

/// The largest answer read: a rule's query must aggregate to one series.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A Prometheus server's query API.
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    query_url: reqwest::Url,
    token: Option<String>,
}

/// What a query is asked for: the names the placeholders stand for.
#[derive(Debug, Clone)]
pub struct QueryScope<'a> {
    pub env: &'a str,
    pub release: &'a str,
    pub pool: &'a str,
    /// The analysis' look interval, for `rate(…[{interval}])`.
    pub interval_ms: u64,
}

impl PrometheusClient {
    /// A client for `p`; the token reference is read now, so a missing one
    /// is an error at start rather than at the first look.
    pub fn new(p: &Prometheus) -> Result<PrometheusClient, String> {
        let base = reqwest::Url::parse(&p.url)
            .map_err(|e| format!("metrics.prometheus.url: not a URL: {e}"))?;
        let query_url = base
            .join("api/v1/query")
            .map_err(|e| format!("metrics.prometheus.url: {e}"))?;
        let token = match &p.bearer_token {
            None => None,
            Some(Credential::Plain(s)) => Some(s.clone()),
            Some(Credential::Secret(r)) => Some(crate::secret_file::resolve(
                "metrics.prometheus.bearer_token",
                r,
            )?),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(p.timeout_ms))
            .connect_timeout(Duration::from_millis(p.timeout_ms.min(2_000)))
            .build()
            .map_err(|e| format!("metrics.prometheus: cannot build an HTTP client: {e}"))?;
        Ok(PrometheusClient {
            http,
            query_url,
            token,
        })
    }

    /// Every rule's query for `scope`, asked at once. A count rule's
    /// counters are read for the new release (`scope`) and the old one
    /// (`old`; none: no old release serves, its counts are zero).
    pub async fn read_all(
        &self,
        rules: &[QueryRule],
        scope: &QueryScope<'_>,
        old: Option<&QueryScope<'_>>,
    ) -> Vec<QueryReading> {
        let asks = rules.iter().map(|r| async move {
            match &r.condition {
                Condition::Counts(c) => {
                    self.read_counts(r, &c.total, c.successes, scope, old).await
                }
                _ => {
                    let resolved = resolve(&r.query, scope);
                    let reading = self.instant(&resolved).await;
                    QueryReading {
                        rule: r.name.clone(),
                        resolved,
                        reading,
                    }
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// A count rule's four counters (its errors or successes, and its
    /// total, for each release), asked at once. Any of them without a
    /// value makes the whole reading one without, naming that query.
    async fn read_counts(
        &self,
        rule: &QueryRule,
        total: &str,
        successes: bool,
        scope: &QueryScope<'_>,
        old: Option<&QueryScope<'_>>,
    ) -> QueryReading {
        let pair = |scope: &QueryScope<'_>| (resolve(&rule.query, scope), resolve(total, scope));
        let (new_q, old_q) = (pair(scope), old.map(pair));
        let ask = |q: Option<String>| async move {
            match q {
                Some(q) => Some(self.instant(&q).await),
                None => None,
            }
        };
        let (a, b, c, d) = tokio::join!(
            ask(Some(new_q.0.clone())),
            ask(Some(new_q.1.clone())),
            ask(old_q.as_ref().map(|q| q.0.clone())),
            ask(old_q.as_ref().map(|q| q.1.clone())),
        );
        let resolved = format!("{} out of {}", new_q.0, new_q.1);
        let asked = [
            (a, new_q.0.clone()),
            (b, new_q.1.clone()),
            (c, old_q.as_ref().map(|q| q.0.clone()).unwrap_or_default()),
            (d, old_q.as_ref().map(|q| q.1.clone()).unwrap_or_default()),
        ];
        let mut values = [0.0f64; 4];
        for (i, (reading, query)) in asked.into_iter().enumerate() {
            match reading {
                None => {}
                Some(Reading::Value { value }) => values[i] = value,
                Some(Reading::Counts { .. }) => {}
                Some(other) => {
                    return QueryReading {
                        rule: rule.name.clone(),
                        resolved: query,
                        reading: other,
                    }
                }
            }
        }
        // Successes are turned into errors; a total scraped a moment
        // behind its successes is no negative count.
        let tally = |counter: f64, total: f64| Tally {
            errors: if successes {
                (total - counter).max(0.0)
            } else {
                counter
            },
            total,
        };
        QueryReading {
            rule: rule.name.clone(),
            resolved,
            reading: Reading::Counts {
                new: tally(values[0], values[1]),
                old: tally(values[2], values[3]),
            },
        }
    }

    /// One instant query's value.
    pub async fn instant(&self, query: &str) -> Reading {
        let mut req = self
            .http
            .get(self.query_url.clone())
            .query(&[("query", query)]);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Reading::Error {
                    reason: describe(e),
                }
            }
        };
        let status = resp.status();
        let body = match read_bounded(resp).await {
            Ok(b) => b,
            Err(reason) => return Reading::Error { reason },
        };
        parse_answer(status.as_u16(), &body)
    }
}

/// A reqwest error without its URL's query string (which holds the query,
/// harmless, but long) and never a header.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "Prometheus did not answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect to Prometheus".to_owned()
    } else {
        format!("request to Prometheus failed: {}", e.without_url())
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "Prometheus' answer is larger than {MAX_ANSWER_BYTES} bytes; aggregate the query to one series"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(describe(e)),
        }
    }
}

/// Reads Prometheus' answer: one series (or a scalar) is a value, none is
/// no data, several is an error asking for an aggregation.
pub fn parse_answer(status: u16, body: &[u8]) -> Reading {
    let err = |reason: String| Reading::Error { reason };
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return err(format!(
                "Prometheus answered HTTP {status} that is not its JSON API"
            ))
        }
    };
    if v["status"] != "success" {
        let text = v["error"].as_str().unwrap_or("no reason given");
        let text: String = text.chars().take(300).collect();
        return err(format!(
            "Prometheus refused the query (HTTP {status}): {text}"
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([]) => return Reading::NoData,
            Some([one]) => &one["value"],
            Some(many) => {
                return err(format!(
                    "the query returned {} series; aggregate it to one (sum, max, avg …)",
                    many.len()
                ))
            }
            None => return err("Prometheus' vector answer has no result list".to_owned()),
        },
        Some(other) => {
            return err(format!(
                "the query returned a {other}; expected an instant vector or a scalar"
            ))
        }
        None => return err("Prometheus' answer has no resultType".to_owned()),
    };
    match sample[1].as_str().map(str::parse::<f64>) {
        Some(Ok(value)) if value.is_finite() => Reading::Value { value },
        // NaN and ±Inf: a division by zero, say, over no traffic.
        Some(Ok(_)) => Reading::NoData,
        _ => err("Prometheus' sample has no numeric value".to_owned()),
    }
}

/// `query` with its placeholders filled in; values are quoted-string safe.
pub fn resolve(query: &str, scope: &QueryScope<'_>) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let secs = (scope.interval_ms / 1000).max(1);
    query
        .replace("{env}", &esc(scope.env))
        .replace("{release}", &esc(scope.release))
        .replace("{pool}", &esc(scope.pool))
        .replace("{interval}", &format!("{secs}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_values_no_data_or_explained_errors() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"42.5"]}]}}"#;
        assert_eq!(parse_answer(200, ok), Reading::Value { value: 42.5 });
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(parse_answer(200, scalar), Reading::Value { value: 3.0 });
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(200, empty), Reading::NoData);
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse_answer(200, nan), Reading::NoData);
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert!(
            matches!(parse_answer(200, two), Reading::Error { reason } if reason.contains("2 series"))
        );
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(
            matches!(parse_answer(400, bad), Reading::Error { reason } if reason == "Prometheus refused the query (HTTP 400): parse error at char 4")
        );
        assert!(matches!(
            parse_answer(502, b"<html>bad gateway</html>"),
            Reading::Error { .. }
        ));
    }

    #[test]
    fn placeholders_are_filled_and_cannot_break_out_of_a_string() {
        let scope = QueryScope {
            env: "production",
            release: "1.2.0",
            pool: "odd\"pool\\",
            interval_ms: 2_500,
        };
        assert_eq!(
            resolve(
                r#"rate(x{env="{env}",release="{release}",pool="{pool}"}[{interval}])"#,
                &scope
            ),
            r#"rate(x{env="production",release="1.2.0",pool="odd\"pool\\"}[2s])"#
        );
    }
}
