//! Handlers for incidents: list, show, close.

use gantry_api::{CloseIncident, DoraQuery, IncidentQuery, MigrationsQuery};

use super::*;

pub(super) async fn list_incidents(
    State(s): State<AppState>,
    Query(q): Query<IncidentQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.controller.incidents(q.env.as_deref(), q.open, limit)?).into_response())
}

pub(super) async fn list_migrations(
    State(s): State<AppState>,
    Query(q): Query<MigrationsQuery>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.applied_migrations(&q.env)?).into_response())
}

pub(super) async fn show_incident(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.incident(id)?).into_response())
}

pub(super) async fn close_incident(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<i64>,
    Body(body): Body<CloseIncident>,
) -> ApiResult<Response> {
    let incident = s
        .controller
        .close_incident(id, &who.user, &body.summary, &body.follow_up)?;
    let subject = acted_on(format!("incident {id}"));
    Ok((subject, Json(incident)).into_response())
}

/// At most ten years back.
const MAX_DORA_PERIOD_MS: u64 = 3650 * 86_400_000;

pub(super) async fn dora(
    State(s): State<AppState>,
    Query(q): Query<DoraQuery>,
) -> ApiResult<Response> {
    let since = match q.since.as_deref() {
        None => 30 * 86_400_000,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() && d.as_millis() <= u128::from(MAX_DORA_PERIOD_MS) => {
                d.as_millis() as u64
            }
            Ok(_) => {
                return Err(ControlError::Invalid(format!(
                    "since: {text:?} is outside 1ms to 3650 days"
                ))
                .into())
            }
            Err(_) => {
                return Err(ControlError::Invalid(format!(
                    "since: {text:?} is not a duration; expected e.g. \"90d\" or \"2w\""
                ))
                .into())
            }
        },
    };
    Ok(Json(s.controller.dora(&q.env, since)?).into_response())
}

pub(super) async fn drift(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.drift().await?).into_response())
}

pub(super) async fn converge(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.converge(&who.user).await?).into_response())
}
