//! The HTTP API under `/api/v1/`. JSON in and out; every error has the
//! shape `{"error": {"code": "...", "message": "..."}}`, mapped here and
//! nowhere else. Every route but `/healthz` needs the bearer token.

use crate::controller::{ControlError, Controller, NewRelease};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use gantry_core::DeploymentId;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    pub token: Arc<String>,
    pub shutdown: Arc<Notify>,
}

/// The largest artifact accepted.
pub const MAX_ARTIFACT_BYTES: usize = 2 << 30;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, code) = match &e {
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<gantry_store::StoreError> for ApiError {
    fn from(e: gantry_store::StoreError) -> Self {
        ControlError::from(e).into()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections (bad JSON, unknown or missing fields, wrong
/// content type) come back in the API's error shape.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("request body: {}", rejection.body_text()),
            )),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/releases", get(list_releases))
        .route("/releases/verify", post(verify_releases))
        .route(
            "/releases/{version}",
            put(create_release)
                .get(show_release)
                .layer(DefaultBodyLimit::max(MAX_ARTIFACT_BYTES)),
        )
        .route(
            "/deployments",
            post(create_deployment).get(list_deployments),
        )
        .route("/deployments/{id}", get(show_deployment))
        .route("/deployments/{id}/log", get(deployment_log))
        .route("/deployments/{id}/{action}", post(act_on_deployment))
        .route("/rollbacks", post(create_rollback))
        .route("/status", get(status))
        .route("/traffic", get(traffic))
        .route("/instances/{id}/log", get(instance_log))
        .route("/shutdown", post(shutdown))
        .route("/audit", get(list_audit))
        .route("/audit/verify", get(verify_audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), audit_actions))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Request and error bodies kept on the audit trail are cut at this size.
const AUDIT_BODY_LIMIT: usize = 64 * 1024;

/// Puts every action on the audit trail: each request that changes
/// something (anything but GET and HEAD), whatever its outcome, and every
/// request refused for its credentials. JSON request bodies are kept (the
/// API takes no secrets in them); artifacts are not.
async fn audit_actions(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
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
    let status = resp.status();
    let refused_credentials = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    if read_only && !refused_credentials {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, AUDIT_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let answer: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let outcome = if status.is_success() {
        "done"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    };
    let subject = answer
        .as_ref()
        .and_then(|a| a.get("id"))
        .and_then(|id| id.as_i64())
        .map_or_else(|| path.clone(), |id| format!("deployment {id}"));
    let detail = json!({
        "request": request_json,
        "git_sha": git_sha,
        "error": answer.as_ref().and_then(|a| a.pointer("/error/message")),
        "version": answer.as_ref().and_then(|a| a.get("version")),
        "env": answer.as_ref().and_then(|a| a.get("env")),
    });
    let entry = gantry_core::audit::AuditEntry {
        at: crate::controller::now_ms(),
        actor: if refused_credentials {
            "anonymous"
        } else {
            ACTOR
        }
        .to_owned(),
        action: format!("{method} {path}"),
        subject,
        outcome: format!("{outcome} {}", status.as_u16()),
        detail: detail.to_string(),
    };
    if let Err(e) = state.controller.store.append_audit(entry) {
        tracing::error!(error = %e, "cannot write the audit record");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(state.token.as_bytes())) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// The acting identity. One admin token for now; users and roles come with governance.
const ACTOR: &str = "admin";

async fn list_releases(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.store.releases()?).into_response())
}

async fn create_release(
    State(s): State<AppState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let header = |name: &str| -> ApiResult<Option<String>> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("header {name} is not text"),
                    )
                })
            })
            .transpose()
    };
    let signature = header("x-gantry-signature")?
        .map(|b64| {
            crate::artifact::decode_b64(&b64).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("header x-gantry-signature: {e}"),
                )
            })
        })
        .transpose()?;
    let controller = s.controller.clone();
    let git_sha = header("x-gantry-git-sha")?;
    let (record, created) = tokio::task::spawn_blocking(move || {
        controller.register_release(NewRelease {
            version: &version,
            bytes: &body,
            git_sha,
            signature,
            by: ACTOR,
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)).into_response())
}

async fn show_release(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.release(&version)?).into_response())
}

async fn verify_releases(State(s): State<AppState>) -> ApiResult<Response> {
    let c = s.controller.clone();
    let results = tokio::task::spawn_blocking(move || c.verify_releases())
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(results).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    env: String,
    version: String,
}

async fn create_deployment(
    State(s): State<AppState>,
    Body(body): Body<DeployRequest>,
) -> ApiResult<Response> {
    let d = s.controller.deploy(&body.env, &body.version, ACTOR).await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    env: String,
    to: Option<String>,
}

async fn create_rollback(
    State(s): State<AppState>,
    Body(body): Body<RollbackRequest>,
) -> ApiResult<Response> {
    let d = s
        .controller
        .rollback(&body.env, body.to.as_deref(), ACTOR)
        .await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    env: Option<String>,
    limit: Option<usize>,
}

async fn list_deployments(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let env = match &q.env {
        Some(e) => Some(s.controller.env(e)?.name.clone()),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).min(1000);
    Ok(Json(s.controller.store.deployments(env.as_ref(), limit)?).into_response())
}

fn deployment_or_404(s: &AppState, id: DeploymentId) -> ApiResult<gantry_core::Deployment> {
    s.controller.store.deployment(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("deployment {id} does not exist"),
        )
    })
}

async fn show_deployment(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    Ok(Json(deployment_or_404(&s, id)?).into_response())
}

async fn deployment_log(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    let d = deployment_or_404(&s, id)?;
    let log = s.controller.store.log(id)?;
    Ok(Json(json!({"deployment": d, "log": log})).into_response())
}

/// A person's request to a running deployment (`abort`, `promote`, `pause`,
/// `resume`), answered 202 with what was asked.
async fn act_on_deployment(
    State(s): State<AppState>,
    Path((id, action)): Path<(DeploymentId, String)>,
) -> ApiResult<Response> {
    let by = ACTOR.to_owned();
    let (event, doing) = match action.as_str() {
        "abort" => (gantry_core::Event::AbortRequested { by }, "aborting"),
        "promote" => (gantry_core::Event::PromoteRequested { by }, "promoting"),
        "pause" => (gantry_core::Event::PauseRequested { by }, "pausing"),
        "resume" => (gantry_core::Event::ResumeRequested { by }, "resuming"),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no action {other:?} on a deployment; known: abort, promote, pause, resume"
                ),
            ))
        }
    };
    s.controller.request(id, event)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ doing: id }))).into_response())
}

async fn status(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(json!({"service": s.controller.config.service.name, "environments": s.controller.status().await?}))
        .into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    bytes: Option<u64>,
}

async fn instance_log(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let text = s
        .controller
        .target
        .logs(&id, q.bytes.unwrap_or(64 * 1024))
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    Ok(text.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownRequest {
    #[serde(default)]
    stop_workloads: bool,
}

async fn shutdown(
    State(s): State<AppState>,
    Body(req): Body<ShutdownRequest>,
) -> ApiResult<Response> {
    if req.stop_workloads {
        s.controller.stop_workloads().await;
    }
    s.shutdown.notify_one();
    Ok(
        Json(json!({"shutting_down": true, "stopped_workloads": req.stop_workloads}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct TrafficQuery {
    env: String,
    /// Comma-separated latency limits in milliseconds.
    above_ms: Option<String>,
}

/// What each release pool of an environment served, from its router.
async fn traffic(State(s): State<AppState>, Query(q): Query<TrafficQuery>) -> ApiResult<Response> {
    let env = s.controller.env(&q.env)?;
    let limits = gantry_router::parse_latency_limits(q.above_ms.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
    let stats = s
        .controller
        .metrics
        .pool_stats(&env.name, &limits)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "unavailable", e.to_string()))?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// Records after `after`, oldest first, and the anchor of a pruned trail.
async fn list_audit(State(s): State<AppState>, Query(q): Query<AuditQuery>) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let records = s.controller.store.audit_records(q.after, limit)?;
    let anchor = s.controller.store.audit_anchor()?;
    Ok(Json(json!({
        "anchor": anchor.map(|(seq, hash)| json!({"seq": seq, "hash": hash})),
        "records": records,
    }))
    .into_response())
}

/// Verifies the whole stored chain; names the first record that breaks it.
async fn verify_audit(State(s): State<AppState>) -> ApiResult<Response> {
    let store = &s.controller.store;
    let anchor = store.audit_anchor()?;
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .map_or(0, |r: &gantry_core::audit::AuditRecord| r.seq);
        let page = store.audit_records(after, 10_000)?;
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    let result = gantry_core::audit::verify(&all, anchor.as_ref().map(|(q, h)| (*q, h.as_str())));
    Ok(Json(match result {
        Ok(n) => json!({"ok": true, "records": n, "first_seq": all.first().map(|r| r.seq), "last_seq": all.last().map(|r| r.seq)}),
        Err(b) => json!({"ok": false, "records": all.len(), "first_bad_seq": b.seq, "reason": b.reason}),
    })
    .into_response())
}
