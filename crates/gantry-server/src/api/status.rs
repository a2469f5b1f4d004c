//! Handlers for what runs: status, traffic, instance logs, notifications,
//! live events, metrics, shutdown.

use gantry_api::{
    DeliveryQuery, HostsView, LogQuery, ShutdownAnswer, ShutdownRequest, StatusView, TrafficQuery,
};

use super::*;

// Answers that are not a domain type of their own, named so the OpenAPI
// document can describe them.

pub(super) async fn status(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(StatusView {
        service: s.controller.config().service.name.clone(),
        environments: s.controller.status().await?,
    })
    .into_response())
}

/// The fleet's hosts, each asked now (a host that does not answer within
/// a few seconds is shown unreachable, with when it was last seen).
pub(super) async fn hosts(State(s): State<AppState>) -> ApiResult<Json<HostsView>> {
    Ok(Json(s.controller.hosts().await?))
}

pub(super) async fn instance_log(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let text = s
        .controller
        .instance_log(&id, q.bytes.unwrap_or(64 * 1024))
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    Ok(text.into_response())
}

pub(super) async fn logs(
    State(s): State<AppState>,
    Query(q): Query<gantry_api::LogsQuery>,
) -> ApiResult<Json<gantry_api::LogPage>> {
    Ok(Json(s.controller.logs(&q).await?))
}

/// The controllers sharing the store, the leader, its epoch and lease.
pub(super) async fn cluster(State(s): State<AppState>) -> ApiResult<Json<gantry_api::ClusterView>> {
    Ok(Json(s.controller.cluster_view()?))
}

pub(super) async fn shutdown(
    State(s): State<AppState>,
    Body(req): Body<ShutdownRequest>,
) -> ApiResult<Response> {
    if req.stop_workloads && !s.controller.leads() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this controller follows: the workloads are the leader's to stop; ask the leader (gantry cluster names it), or shut this controller down without --workloads",
        ));
    }
    if req.stop_workloads {
        s.controller.stop_workloads().await;
    }
    s.shutdown.notify_one();
    Ok(Json(ShutdownAnswer {
        shutting_down: true,
        stopped_workloads: req.stop_workloads,
    })
    .into_response())
}

/// What each release pool of an environment served, from its router.
pub(super) async fn traffic(
    State(s): State<AppState>,
    Query(q): Query<TrafficQuery>,
) -> ApiResult<Response> {
    let env = s.controller.env(&q.env)?;
    let limits = gantry_router::parse_latency_limits(q.above_ms.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
    let stats = s
        .controller
        .traffic(&env.name, &limits)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "unavailable", e.to_string()))?;
    Ok(Json(stats).into_response())
}

/// Notification deliveries and their outcomes, newest first.
pub(super) async fn list_deliveries(
    State(s): State<AppState>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(s.controller.deliveries(q.deployment, limit)?).into_response())
}

/// Server-sent events: every recorded step of every deployment, and every
/// notice, as they happen. A subscriber that falls behind is told how many
/// it missed and goes on.
pub(super) async fn live_events(State(s): State<AppState>) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let rx = s.controller.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => {
                let kind = match &e {
                    crate::controller::LiveEvent::Step { .. } => "step",
                    crate::controller::LiveEvent::Notice(_) => "notice",
                };
                let data = serde_json::to_string(&e).unwrap_or_default();
                SseEvent::default().event(kind).data(data)
            }
            Err(RecvError::Lagged(n)) => SseEvent::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(super) async fn metrics(State(s): State<AppState>) -> ApiResult<Response> {
    let c = s.controller.clone();
    let text = tokio::task::spawn_blocking(move || crate::observe::metrics_text(&c))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
