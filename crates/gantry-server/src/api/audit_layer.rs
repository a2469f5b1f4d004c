//! The audit layer: every action, and every refusal for credentials, on
//! the audit trail, without ever changing an answer.

use super::*;

/// The most of a JSON request the audit layer reads (a larger one is
/// refused 413), and of an answer (a larger one is passed on unread).
pub(super) const AUDIT_BODY_LIMIT: usize = 64 * 1024;

/// Puts every action on the audit trail: each request that changes
/// something (anything but GET and HEAD), whatever its outcome, and every
/// request refused for its credentials or whose token could not be
/// checked. JSON request bodies are kept (the API takes no secrets in
/// them); artifacts are not. A refused request is
/// kept without its body (method, path, reason, peer), and refusals of
/// requests without valid credentials are rate-limited per peer
/// (`RefusalLimiter`), so token-less clients cannot grow the trail at will.
/// The layer never changes an answer: one over [`AUDIT_BODY_LIMIT`] reaches
/// the client as it was, and its record says it was not read. The subject
/// is what the handler names ([`AuditSubject`]), else the path.
pub(super) async fn audit_actions(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    // This layer sits on the router nested under /api/v1, which sees paths without it.
    let path = format!("/api/v1{}", req.uri().path());
    let read_only = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    let json_in = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let git_sha = req
        .headers()
        .get("x-gantry-git-sha")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (req, request_json) = if json_in && !read_only {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, AUDIT_BODY_LIMIT).await {
            Ok(bytes) => {
                let v: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
                (Request::from_parts(parts, axum::body::Body::from(bytes)), v)
            }
            Err(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body is over {AUDIT_BODY_LIMIT} bytes"),
                )
                .into_response()
            }
        }
    } else {
        (req, None)
    };
    let resp = next.run(req).await;
    if resp
        .extensions()
        .get::<super::forward::Forwarded>()
        .is_some()
    {
        return resp; // The leader that acted on it keeps the record.
    }
    let status = resp.status();
    let refused_credentials = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    let unchecked = resp.extensions().get::<CredentialsUnchecked>().is_some();
    if read_only && !refused_credentials && !unchecked {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // The answer is read for the trail only when it is small; a larger one
    // goes to the client as it is, and the record says it was not read.
    let (body, answer, unread) = match read_at_most(body, AUDIT_BODY_LIMIT).await {
        ReadBody::Whole(bytes) => {
            let answer: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            (axum::body::Body::from(bytes), answer, None)
        }
        ReadBody::Unread { body, why } => (body, None, Some(why)),
    };
    let who = parts.extensions.get::<Identity>();
    let at = crate::controller::now_ms();
    if status == StatusCode::UNAUTHORIZED && who.is_none() {
        let ip = peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let limiter = &state.refusals;
        if let crate::audit::RefusalVerdict::Count { first } =
            limiter.admit(ip, std::time::Instant::now(), at)
        {
            if first {
                let (limiter, c) = (limiter.clone(), state.controller.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(limiter.limits().window).await;
                    c.flush_refusals(&limiter, ip, crate::controller::now_ms());
                });
            }
            return Response::from_parts(parts, body);
        }
    }
    let outcome = if status.is_success() {
        "done"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    };
    // What the handler says it acted on; the path when it names nothing
    // (errors, and routes whose path says it all).
    let subject = parts
        .extensions
        .get::<AuditSubject>()
        .map_or_else(|| path.clone(), |s| s.0.clone());
    let error = answer.as_ref().and_then(|a| a.pointer("/error/message"));
    let token = who.and_then(|w| w.token.as_deref());
    let mut detail = if refused_credentials || unchecked {
        // Not the body: what was refused, why, and from where is enough.
        json!({
            "error": error,
            "peer": peer.map(|p| p.to_string()),
            "token": token,
        })
    } else {
        json!({
            "request": request_json,
            "git_sha": git_sha,
            "error": error,
            "version": answer.as_ref().and_then(|a| a.get("version")),
            "env": answer.as_ref().and_then(|a| a.get("env")),
            "token": token,
        })
    };
    if let Some(why) = unread {
        detail["answer"] = json!(why);
    }
    let entry = gantry_core::audit::AuditEntry {
        at,
        actor: who.map_or_else(|| "anonymous".to_owned(), |who| who.user.clone()),
        action: format!("{method} {path}"),
        subject,
        outcome: format!("{outcome} {}", status.as_u16()),
        detail: detail.to_string(),
    };
    if let Err(e) = state.controller.append_audit(entry) {
        tracing::error!(error = %e, "cannot write the audit record");
    }
    Response::from_parts(parts, body)
}

/// What a handler acted on, put on its answer for the audit trail
/// ("deployment 7", "release 1.2.0 evidence unit"), so the trail need not
/// guess it from the answer's fields.
#[derive(Clone, Debug)]
pub struct AuditSubject(pub String);

/// The answer part that names what a handler acted on.
pub(super) fn acted_on(subject: impl Into<String>) -> Extension<AuditSubject> {
    Extension(AuditSubject(subject.into()))
}

/// Put on an answer when the token could not be checked (the store
/// failed): the audit layer records it even for a read.
#[derive(Clone, Copy, Debug)]
pub(super) struct CredentialsUnchecked;

/// A body as the audit layer read it.
pub(super) enum ReadBody {
    /// The whole body, no larger than the limit.
    Whole(axum::body::Bytes),
    /// Not read whole (over the limit, or broken): the same bytes, in
    /// order, still to reach the client, and why it was not read.
    Unread { body: axum::body::Body, why: String },
}

/// Reads `body` whole if it is at most `limit` bytes. A larger one is
/// handed back untouched when its size is known, or with the part read put
/// back in front of the rest, so that it reaches the client byte for byte.
pub(super) async fn read_at_most(body: axum::body::Body, limit: usize) -> ReadBody {
    use axum::body::HttpBody as _;
    use futures_util::StreamExt as _;
    if body.size_hint().lower() > limit as u64 {
        let why = format!("over {limit} bytes, passed to the client unread");
        return ReadBody::Unread { body, why };
    }
    let mut stream = body.into_data_stream();
    let mut read: Vec<axum::body::Bytes> = Vec::new();
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let (chunk, why) = match chunk {
            Ok(chunk) => {
                len += chunk.len();
                read.push(chunk);
                if len <= limit {
                    continue;
                }
                (
                    None,
                    format!("over {limit} bytes, passed to the client unread"),
                )
            }
            Err(e) => {
                let why = format!("broken after {len} bytes: {e}");
                (Some(e), why)
            }
        };
        let head = futures_util::stream::iter(read.into_iter().map(Ok));
        let body = match chunk {
            None => axum::body::Body::from_stream(head.chain(stream)),
            Some(e) => axum::body::Body::from_stream(
                head.chain(futures_util::stream::once(async move { Err(e) })),
            ),
        };
        return ReadBody::Unread { body, why };
    }
    ReadBody::Whole(read.concat().into())
}

#[cfg(test)]
mod tests {
    use super::{read_at_most, ReadBody};
    use axum::body::{Body, Bytes};

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let items: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(items))
    }

    async fn bytes_of(body: Body) -> Result<Bytes, axum::Error> {
        axum::body::to_bytes(body, usize::MAX).await
    }

    #[tokio::test]
    async fn a_streamed_body_within_the_limit_is_read_whole() {
        match read_at_most(chunks(&[b"ab", b"cd"]), 4).await {
            ReadBody::Whole(b) => assert_eq!(&b[..], b"abcd"),
            ReadBody::Unread { why, .. } => panic!("unread: {why}"),
        }
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_passes_on_byte_for_byte() {
        match read_at_most(chunks(&[b"ab", b"cd", b"ef", b"gh"]), 3).await {
            ReadBody::Unread { body, why } => {
                assert!(why.contains("over 3 bytes"), "{why}");
                assert_eq!(&bytes_of(body).await.unwrap()[..], b"abcdefgh");
            }
            ReadBody::Whole(b) => panic!("read whole: {b:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_of_known_size_over_the_limit_is_not_read_at_all() {
        let body = Body::from(vec![7u8; 10]);
        match read_at_most(body, 9).await {
            ReadBody::Unread { body, .. } => {
                use axum::body::HttpBody as _;
                assert_eq!(body.size_hint().exact(), Some(10), "its length is kept");
                assert_eq!(bytes_of(body).await.unwrap().len(), 10);
            }
            ReadBody::Whole(b) => panic!("read whole: {b:?}"),
        }
    }

    #[tokio::test]
    async fn a_broken_body_stays_broken_after_what_was_read() {
        let items: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("peer went away")),
        ];
        let body = Body::from_stream(futures_util::stream::iter(items));
        match read_at_most(body, 100).await {
            ReadBody::Unread { body, why } => {
                assert!(why.contains("broken after 2 bytes"), "{why}");
                let err = bytes_of(body).await.unwrap_err();
                assert!(err.to_string().contains("peer went away"), "{err}");
            }
            ReadBody::Whole(b) => panic!("read whole: {b:?}"),
        }
    }
}
