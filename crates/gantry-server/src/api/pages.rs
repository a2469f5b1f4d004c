//! What the browser-facing pages (the dashboard, the status page) get on
//! the way out: a Content-Security-Policy that allows exactly their own
//! inline script and style blocks (by SHA-256, computed from the page
//! itself, so editing a page cannot leave a stale hash), and headers that
//! keep every answer out of frames, content sniffing and referrers.

use axum::extract::Request;
use axum::http::header::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// `'sha256-…'` sources of every `<tag>…</tag>` block in `html`.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        out.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    out
}

/// The policy for `html`: its own inline scripts and styles, API calls to
/// this origin, nothing else; never framed.
pub fn content_security_policy(html: &str) -> String {
    let sources = |tag| {
        let hashes = inline_hashes(html, tag);
        if hashes.is_empty() {
            "'none'".to_owned()
        } else {
            hashes.join(" ")
        }
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sources("script"),
        sources("style"),
    )
}

/// An HTML page with its Content-Security-Policy.
pub fn html(page: String) -> Response {
    let policy = content_security_policy(&page);
    let mut resp = axum::response::Html(page).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// On every answer: not to be framed, sniffed or leak its URL as a referrer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    for (name, value) in [
        (axum::http::header::X_FRAME_OPTIONS, "DENY"),
        (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (axum::http::header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry::<HeaderName>(name)
            .or_insert(HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_hashes_each_inline_block() {
        let page = "<style>a{}</style><script>run()</script><script>more()</script>";
        let csp = content_security_policy(page);
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
        };
        assert!(csp.contains(&format!(
            "script-src 'sha256-{}' 'sha256-{}';",
            b64("run()"),
            b64("more()")
        )));
        assert!(csp.contains(&format!("style-src 'sha256-{}';", b64("a{}"))));
        assert!(content_security_policy("<p>plain</p>").contains("script-src 'none'"));
    }
}
