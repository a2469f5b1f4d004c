//! Writes sent to a follower go to the leader. A follower serves every read
//! itself (the state is in the shared database); a request that acts (any
//! method but GET, and the live event stream, which only the leader's drive
//! loops feed) is forwarded to the leader's advertised URL as it came:
//! method, path and query, body (streamed, bounded by the largest artifact
//! the API takes), headers with the Authorization (the token is checked
//! here first, and by the leader again). The leader's answer goes back as
//! it is, and the leader puts the action on the audit trail.
//!
//! Why forward rather than store the request for the leader: the leader
//! alone knows what runs (routers, instances, hosts), so admission (a free
//! listen address, a busy environment) and requests to running deployments
//! (promote, abort: events for its drive loops) are decided there, and the
//! caller gets the leader's real answer at once (the new deployment's id,
//! or why it was refused), exactly as from a lone controller.
//!
//! While no leader can take it (a dead leader's lease has not expired yet,
//! or the new one is still recovering), the request waits, bounded by
//! `Controller::leader_wait`; the leader is connected to before anything of
//! the request is sent, so a leader that is gone costs a retry, not the
//! request. A leader that fails after the request was sent gives a 502: the
//! request may or may not have been applied.

use super::*;
use axum::http::{header, HeaderName, HeaderValue, Uri};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

/// Set on a forwarded request, naming the follower that sent it: the
/// controller that receives it never forwards it again (it waits to lead).
pub(super) const FORWARDED_BY: &str = "x-gantry-forwarded-by";

/// On the answer of a forwarded request: the leader has put it on the
/// audit trail, so the follower's audit layer leaves it out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Forwarded;

/// How long the leader may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the leader may take to answer (after the request, an upload of
/// the largest artifact included, was sent).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Headers of one connection, not of the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The layer on every route the table marks `at_leader`, inside the
/// permission check: handles the request here when this controller leads,
/// else forwards it to the leader (or waits for one, bounded).
pub(super) async fn to_leader(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let c = state.controller.clone();
    if c.leads() {
        return next.run(req).await;
    }
    let relayed = req.headers().contains_key(FORWARDED_BY);
    let waited = Instant::now();
    let deadline = waited + c.leader_wait();
    loop {
        if c.leads() {
            return next.run(req).await;
        }
        if !relayed {
            if let Some(url) = c.leader_url() {
                match connect(&url).await {
                    Ok(sender) => return relay(sender, req, &url, &c.identity().id).await,
                    Err(e) => {
                        tracing::debug!(leader = %url, error = %e, "the leader does not answer yet")
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            let mut resp = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                format!(
                    "no controller could act on this request within {}s (the last leader's lease has not run out, or the next leader is still recovering); nothing was applied: try again",
                    waited.elapsed().as_secs()
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        c.role_change(Duration::from_millis(100)).await;
    }
}

type Sender = hyper::client::conn::http1::SendRequest<axum::body::Body>;

/// An HTTP/1.1 connection to the leader, made before anything is sent.
async fn connect(url: &str) -> Result<Sender, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} names no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((authority.host(), port)),
    )
    .await
    .map_err(|_| format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` to the leader at `url` and hands back its answer.
async fn relay(mut sender: Sender, req: Request, url: &str, me: &str) -> Response {
    let (mut parts, body) = req.into_parts();
    // The layer sits on routes nested under /api/v1 (the table holds every
    // forwarded route there), which see their paths without it.
    let path = format!(
        "/api/v1{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    parts.uri = path.parse().unwrap_or_default();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    if let Some(host) = url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .and_then(|a| HeaderValue::from_str(&a).ok())
    {
        parts.headers.insert(header::HOST, host);
    }
    if let Ok(by) = HeaderValue::from_str(me) {
        parts
            .headers
            .insert(HeaderName::from_static(FORWARDED_BY), by);
    }
    parts.extensions = Default::default();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, MAX_ARTIFACT_BYTES));
    let out = Request::from_parts(parts, body);
    let failed = |why: String, status: StatusCode| {
        ApiError::new(
            status,
            "leader_failed",
            format!("the leader at {url} {why}; the request may or may not have been applied: check before trying again"),
        )
        .into_response()
    };
    let mut resp = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(out)).await {
        Ok(Ok(resp)) => resp.map(axum::body::Body::new),
        Ok(Err(e)) => {
            return failed(
                format!("failed while answering ({e})"),
                StatusCode::BAD_GATEWAY,
            )
        }
        Err(_) => {
            return failed(
                format!("did not answer within {}s", ANSWER_TIMEOUT.as_secs()),
                StatusCode::GATEWAY_TIMEOUT,
            )
        }
    };
    for name in HOP_BY_HOP {
        resp.headers_mut().remove(*name);
    }
    resp.extensions_mut().insert(Forwarded);
    resp
}
