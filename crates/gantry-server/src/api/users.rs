//! Handlers for users and tokens, and who the caller is.

use gantry_api::{NewToken, NewUser, TokenQuery};

use super::*;

pub(super) async fn whoami(Extension(who): Extension<Identity>) -> Response {
    Json(who).into_response()
}

pub(super) async fn create_user(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<NewUser>,
) -> ApiResult<Response> {
    let user = s.controller.add_user(&body.name, &body.roles, &who.user)?;
    let subject = acted_on(format!("user {}", user.name));
    Ok((StatusCode::CREATED, subject, Json(user)).into_response())
}

pub(super) async fn list_users(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.users()?).into_response())
}

/// Issues a token. Its secret is in this answer only; the store keeps a hash.
pub(super) async fn create_token(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<NewToken>,
) -> ApiResult<Response> {
    let expires = body
        .expires_in
        .as_deref()
        .map(|e| {
            humantime::parse_duration(e)
                .ok()
                .filter(|d| !d.is_zero())
                .map(|d| d.as_millis() as u64)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("expires_in: {e:?} is not a duration such as \"90d\" or \"12h\""),
                    )
                })
        })
        .transpose()?;
    let issued = s
        .controller
        .create_token(&body.user, body.label, expires, &who)?;
    let subject = acted_on(format!("token {} for {}", issued.id, issued.user));
    Ok((StatusCode::CREATED, subject, Json(issued)).into_response())
}

pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.tokens(q.user.as_deref())?).into_response())
}

pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let revoked = s.controller.revoke_token(&id, &who.user)?;
    let subject = acted_on(format!("token {} for {}", revoked.id, revoked.user));
    Ok((subject, Json(revoked)).into_response())
}
