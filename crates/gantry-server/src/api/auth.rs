//! Who is asking: the bearer token resolved to an identity, and the
//! permission the route table names for the route checked against it.

use super::*;

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name is case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
pub(super) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Resolves the bearer token to an identity, checks the permission the
/// route table names for the route, and hands the identity to the handler
/// and (through the response) to the audit trail.
pub(super) async fn authenticate(
    State(routes::Guard { state, needs }): State<routes::Guard>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send `Authorization: Bearer <token>`",
        )
        .into_response();
    };
    let who = match state.controller.identify(presented, &state.token) {
        Ok(who) => who,
        // The token may be good: the controller cannot tell now. Its
        // fault, not the client's; the cause goes to the log, not the client.
        Err(TokenRefusal::Store(e)) => {
            tracing::error!(error = %e, "cannot check a bearer token");
            let mut resp = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot check the bearer token now: the controller's store failed (see its log)",
            )
            .into_response();
            resp.extensions_mut().insert(CredentialsUnchecked);
            return resp;
        }
        Err(e) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
                .into_response()
        }
    };
    let mut resp = match who.may(needs) {
        Ok(()) => {
            req.extensions_mut().insert(who.clone());
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.extensions_mut().insert(who);
    resp
}
