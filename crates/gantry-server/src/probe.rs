//! The health probe's HTTP part, shared by the controller (instances beside
//! it) and `gantry host serve` (instances on a fleet host's loopback).

use gantry_core::machine::Probe;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on the instance at `addr`: healthy on a 2xx answer, unhealthy
/// on another answer or a timeout, unreachable when nothing answered (the
/// caller then asks the target whether the process is gone).
pub async fn http_probe(
    http: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Probe {
    let url = format!("http://{addr}{path}");
    match http.get(&url).timeout(timeout).send().await {
        Ok(resp) if resp.status().is_success() => Probe::Healthy,
        Ok(resp) => Probe::Unhealthy(format!(
            "GET {path} answered HTTP {}",
            resp.status().as_u16()
        )),
        Err(e) if e.is_timeout() => Probe::Unhealthy(format!(
            "GET {path} timed out after {}ms",
            timeout.as_millis()
        )),
        Err(e) => Probe::Unreachable(if e.is_connect() {
            "connection refused".to_owned()
        } else {
            e.to_string()
        }),
    }
}

/// The controller's HTTP client. Instances answer its probes and smoke
/// checks: a release must not be able to send the controller elsewhere, so a
/// redirect is an answer, never followed (nor for notifications, whose
/// bodies carry secrets).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static client config is valid")
}

/// Where an instance answers (probes, smoke checks, the router's upstreams).
/// On a fleet host this is the host's own loopback: only code running on
/// that host (`gantry host serve`) uses it there.
pub fn instance_addr(instance: &gantry_core::InstanceRef) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], instance.port))
}
