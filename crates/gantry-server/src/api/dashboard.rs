//! The browser-facing pages: the dashboard and the public status page.

use super::*;

/// The public status page: no token, nothing but states and incidents.
pub(super) async fn status_json(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(crate::observe::status_page(&s.controller).await?).into_response())
}

pub(super) async fn status_html(State(s): State<AppState>) -> ApiResult<Response> {
    let page = crate::observe::status_page(&s.controller).await?;
    Ok(pages::html(crate::observe::status_html(&page)?))
}

/// The dashboard: one static page (no build step) that signs in with a
/// token and reads everything through this API. The page itself holds no data.
pub(super) async fn dashboard() -> Response {
    let mut resp = pages::html(include_str!("../dashboard.html").to_owned());
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}
