//! The HTTP API under `/api/v1/`. JSON in and out; every error has the
//! shape `{"error": {"code": "...", "message": "..."}}`, mapped here and
//! nowhere else. Every route but `/healthz` needs a bearer token: the
//! controller's own (`admin.token`) or a user's, and each action needs a
//! role that grants it (`permission_for`).

use crate::controller::{ControlError, Controller, NewRelease};
use crate::governance::{Identity, TokenRefusal};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use gantry_core::governance::Permission;
use gantry_core::DeploymentId;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    pub token: Arc<String>,
    pub shutdown: Arc<Notify>,
    /// Bounds how fast refused, unauthenticated requests grow the audit trail.
    pub refusals: Arc<crate::audit::RefusalLimiter>,
}

/// The largest artifact accepted.
pub const MAX_ARTIFACT_BYTES: usize = 2 << 30;
/// The largest evidence report accepted: the parsers' own limit.
pub const MAX_EVIDENCE_BYTES: usize = gantry_core::evidence::MAX_REPORT_BYTES;

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
            ControlError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
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

// Answers that are not a domain type of their own, named so the OpenAPI
// document can describe them.

#[derive(serde::Serialize, schemars::JsonSchema)]
struct DeploymentView {
    #[serde(flatten)]
    deployment: gantry_core::Deployment,
    /// Every verdict, including those given after an emergency change finished.
    approvals: Vec<gantry_core::governance::Approval>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct DeploymentLog {
    deployment: gantry_core::Deployment,
    log: Vec<gantry_store::LogEntry>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct StatusView {
    service: String,
    environments: Vec<crate::controller::EnvStatus>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct ShutdownAnswer {
    shutting_down: bool,
    stopped_workloads: bool,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct AuditAnchor {
    seq: u64,
    hash: String,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct AuditPage {
    /// The last pruned record, which the first kept one links to.
    anchor: Option<AuditAnchor>,
    /// The last record the store handed out: the trail must reach it.
    head: AuditAnchor,
    /// The newest checkpoint the controller signed: the trail must hold it.
    checkpoint: Option<gantry_core::audit::Checkpoint>,
    records: Vec<gantry_core::audit::AuditRecord>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct AuditPublicKey {
    algorithm: &'static str,
    /// The Ed25519 public key that signs checkpoints, hex.
    public_key: String,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct AuditVerdict {
    ok: bool,
    records: usize,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// The first edited, removed or reordered record.
    first_bad_seq: Option<u64>,
    reason: Option<String>,
    /// The newest checkpoint the controller signed, checked too.
    checkpoint_seq: Option<u64>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct GatesView {
    version: String,
    env: String,
    passed: bool,
    gates: Vec<gantry_core::evidence::GateResult>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct RehearsalAnswer {
    rehearsing: String,
    env: String,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct PlanApproved {
    version: String,
    env: String,
    digest: String,
    evidence: i64,
    by: String,
}

pub mod openapi;
mod pages;

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

/// `axum::extract::Path` whose rejections come back in the API's error shape.
struct Path<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("path: {}", r.body_text()),
            )),
        }
    }
}

/// `axum::extract::Query` whose rejections come back in the API's error shape.
struct Query<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("query: {}", r.body_text()),
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
            // The artifact is streamed to disk, bounded there, not buffered.
            put(create_release).get(show_release),
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
        .route("/audit/checkpoint", get(audit_checkpoint))
        .route("/audit/public-key", get(audit_public_key))
        .route("/whoami", get(whoami))
        .route("/users", get(list_users).post(create_user))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/deployments/{id}/approve", post(approve))
        .route("/deployments/{id}/reject", post(reject))
        .route("/approvals", get(pending_approvals))
        .route("/releases/{version}/evidence", get(list_evidence))
        .route(
            "/releases/{version}/evidence/{kind}",
            put(add_evidence).layer(DefaultBodyLimit::max(MAX_EVIDENCE_BYTES)),
        )
        .route("/gates", get(gates))
        .route("/rehearsals", post(start_rehearsal))
        .route("/plans", get(show_plan))
        .route("/plans/approve", post(approve_plan))
        .route("/notifications", get(list_deliveries))
        .route("/events", get(live_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), audit_actions))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; /openapi.json lists what each takes",
            )
        });
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/api/v1", api)
        .merge(metrics)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status_html))
        .route("/", get(dashboard))
        .route("/status.json", get(status_json))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such page: the dashboard is at /, the API under /api/v1",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this page does not take that method",
            )
        })
        .layer(middleware::from_fn(pages::security_headers))
        .with_state(state)
}

/// The most of a JSON request the audit layer reads (a larger one is
/// refused 413), and of an answer (a larger one is passed on unread).
const AUDIT_BODY_LIMIT: usize = 64 * 1024;

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
async fn audit_actions(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
fn acted_on(subject: impl Into<String>) -> Extension<AuditSubject> {
    Extension(AuditSubject(subject.into()))
}

/// Put on an answer when the token could not be checked (the store
/// failed): the audit layer records it even for a read.
#[derive(Clone, Copy, Debug)]
struct CredentialsUnchecked;

/// A body as the audit layer read it.
enum ReadBody {
    /// The whole body, no larger than the limit.
    Whole(axum::body::Bytes),
    /// Not read whole (over the limit, or broken): the same bytes, in
    /// order, still to reach the client, and why it was not read.
    Unread { body: axum::body::Body, why: String },
}

/// Reads `body` whole if it is at most `limit` bytes. A larger one is
/// handed back untouched when its size is known, or with the part read put
/// back in front of the rest, so that it reaches the client byte for byte.
async fn read_at_most(body: axum::body::Body, limit: usize) -> ReadBody {
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

/// Which permission an API route needs. One table, so that what each
/// role may do is readable in one place.
fn permission_for(method: &axum::http::Method, path: &str) -> Permission {
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    if path == "/tokens" && method == axum::http::Method::POST {
        // Anyone may mint a token for themself; `create_token` holds minting
        // for another user to admins.
        Permission::Read
    } else if path.starts_with("/users") || path.starts_with("/tokens") || path == "/shutdown" {
        Permission::Administer
    } else if path.ends_with("/approve") || path.ends_with("/reject") {
        Permission::Approve
    } else if read {
        Permission::Read
    } else {
        Permission::Deploy
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name is case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Resolves the bearer token to an identity, checks the route's
/// permission, and hands the identity to the handler and (through the
/// response) to the audit trail.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
    let needed = permission_for(req.method(), req.uri().path());
    let mut resp = match who.may(needed) {
        Ok(()) => {
            req.extensions_mut().insert(who.clone());
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.extensions_mut().insert(who);
    resp
}

async fn whoami(Extension(who): Extension<Identity>) -> Response {
    Json(who).into_response()
}

async fn list_releases(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.releases()?).into_response())
}

async fn create_release(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
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
    let git_sha = header("x-gantry-git-sha")?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ARTIFACT_BYTES as u64) {
        return Err(artifact_too_large());
    }
    let artifact = receive_artifact(s.controller.blobs(), body).await?;
    let controller = s.controller.clone();
    let (record, created) = tokio::task::spawn_blocking(move || {
        controller.register_release(NewRelease {
            version: &version,
            artifact,
            git_sha,
            signature,
            by: &who.user,
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let status = if created {
        let c = s.controller.clone();
        let version = record.version.clone();
        tokio::spawn(async move { c.auto_deploy_after(None, &version).await });
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let subject = acted_on(format!("release {}", record.version));
    Ok((status, subject, Json(record)).into_response())
}

fn artifact_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "artifact is larger than {}, the most accepted",
            crate::artifact::archive::human_size(MAX_ARTIFACT_BYTES as u64)
        ),
    )
}

/// Streams a request body into the blob store's directory while hashing it,
/// never holding more than a few chunks in memory, and refusing it past
/// [`MAX_ARTIFACT_BYTES`]. A refused or broken upload leaves no file.
async fn receive_artifact(
    blobs: &gantry_store::Blobs,
    body: axum::body::Body,
) -> ApiResult<gantry_store::Staged> {
    use futures_util::StreamExt as _;
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let mut incoming = blobs.incoming().map_err(|e| internal(e.to_string()))?;
    // Disk writes and hashing happen on a blocking thread; the channel's
    // bound keeps a fast client from queueing the body in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            incoming.write(&chunk)?;
        }
        incoming.finish()
    });
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failure = Some(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("request body: {e}"),
                ));
                break;
            }
        };
        received += chunk.len() as u64;
        if received > MAX_ARTIFACT_BYTES as u64 {
            failure = Some(artifact_too_large());
            break;
        }
        if tx.send(chunk).await.is_err() {
            break; // The writer failed; its error is below.
        }
    }
    drop(tx);
    // Wait for the writer either way, so a refused upload's file is gone before we answer.
    let staged = writer
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()));
    match failure {
        Some(e) => Err(e),
        None => staged,
    }
}

async fn show_release(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.release(&version)?).into_response())
}

async fn verify_releases(State(s): State<AppState>) -> ApiResult<Response> {
    let results = s.controller.verify_releases().await?;
    Ok(Json(results).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    env: String,
    version: String,
    /// standard, normal or emergency; by default normal where approvals are
    /// required, standard elsewhere.
    change: Option<String>,
    /// Why the change is made (kept on the deployment and the audit trail).
    reason: Option<String>,
}

async fn create_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<DeployRequest>,
) -> ApiResult<Response> {
    let d = s
        .controller
        .deploy(
            &body.env,
            &body.version,
            &who.user,
            body.change.as_deref(),
            body.reason,
        )
        .await?;
    let subject = acted_on(format!("deployment {}", d.id));
    Ok((StatusCode::CREATED, subject, Json(d)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    env: String,
    to: Option<String>,
}

async fn create_rollback(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<RollbackRequest>,
) -> ApiResult<Response> {
    let d = s
        .controller
        .rollback(&body.env, body.to.as_deref(), &who.user)
        .await?;
    let subject = acted_on(format!("deployment {}", d.id));
    Ok((StatusCode::CREATED, subject, Json(d)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
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
    Ok(Json(s.controller.deployments(env.as_ref(), limit)?).into_response())
}

fn deployment_or_404(s: &AppState, id: DeploymentId) -> ApiResult<gantry_core::Deployment> {
    s.controller.deployment(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("deployment {id} does not exist"),
        )
    })
}

/// The deployment, with every verdict given on it (including those given
/// after an emergency change finished).
async fn show_deployment(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    Ok(Json(DeploymentView {
        deployment: deployment_or_404(&s, id)?,
        approvals: s.controller.approvals(id)?,
    })
    .into_response())
}

async fn deployment_log(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    let d = deployment_or_404(&s, id)?;
    let log = s.controller.deployment_log(id)?;
    Ok(Json(DeploymentLog { deployment: d, log }).into_response())
}

/// A person's request to a running deployment (`abort`, `promote`, `pause`,
/// `resume`), answered 202 with what was asked.
async fn act_on_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((id, action)): Path<(DeploymentId, String)>,
) -> ApiResult<Response> {
    let by = who.user;
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
    let subject = acted_on(format!("deployment {id}"));
    Ok((StatusCode::ACCEPTED, subject, Json(json!({ doing: id }))).into_response())
}

async fn status(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(StatusView {
        service: s.controller.config().service.name.clone(),
        environments: s.controller.status().await?,
    })
    .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
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
        .instance_log(&id, q.bytes.unwrap_or(64 * 1024))
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    Ok(text.into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
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
    Ok(Json(ShutdownAnswer {
        shutting_down: true,
        stopped_workloads: req.stop_workloads,
    })
    .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
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
        .traffic(&env.name, &limits)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "unavailable", e.to_string()))?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// Records after `after`, oldest first, and the anchor of a pruned trail.
async fn list_audit(State(s): State<AppState>, Query(q): Query<AuditQuery>) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let (seq, hash) = s.controller.audit_head()?;
    let records = s.controller.audit_records(q.after, limit)?;
    let anchor = s.controller.audit_anchor()?;
    let checkpoint = s.controller.latest_audit_checkpoint()?;
    Ok(Json(AuditPage {
        anchor: anchor.map(|(seq, hash)| AuditAnchor { seq, hash }),
        head: AuditAnchor { seq, hash },
        checkpoint,
        records,
    })
    .into_response())
}

/// A signed checkpoint of the chain's head now, for an auditor to keep.
async fn audit_checkpoint(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.audit_checkpoint()?).into_response())
}

async fn audit_public_key(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(AuditPublicKey {
        algorithm: "ed25519",
        public_key: s.controller.audit_public_key()?,
    })
    .into_response())
}

/// Verifies the whole stored chain, that it reaches the head the store
/// recorded, and that it holds the newest checkpoint the controller signed;
/// names the first record that breaks it.
async fn verify_audit(State(s): State<AppState>) -> ApiResult<Response> {
    let store = &s.controller;
    let head = store.audit_head()?;
    let anchor = store.audit_anchor()?;
    let checkpoint = store.latest_audit_checkpoint()?;
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
    let trail = gantry_core::audit::Trail {
        records: &all,
        anchor: anchor.as_ref().map(|(q, h)| (*q, h.as_str())),
        head: Some((head.0, &head.1)),
    };
    // A stored checkpoint counts only if the controller's own key signed it.
    let key = gantry_core::audit::parse_public_key(&s.controller.audit_public_key()?)
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let checkpoint_bad = checkpoint.as_ref().and_then(|c| {
        c.check_signature(Some(&key))
            .err()
            .map(|e| gantry_core::audit::ChainBreak {
                seq: c.seq,
                reason: format!("the stored checkpoint of record {}: {e}", c.seq),
            })
    });
    let result = match checkpoint_bad {
        Some(b) => Err(b),
        None => gantry_core::audit::verify_trail(trail, checkpoint.as_ref()),
    };
    let (first_seq, last_seq) = (all.first().map(|r| r.seq), all.last().map(|r| r.seq));
    let checkpoint_seq = checkpoint.as_ref().map(|c| c.seq);
    Ok(Json(match result {
        Ok(v) => AuditVerdict {
            ok: true,
            records: v.records,
            first_seq,
            last_seq,
            first_bad_seq: None,
            reason: None,
            checkpoint_seq,
        },
        Err(b) => AuditVerdict {
            ok: false,
            records: all.len(),
            first_seq,
            last_seq,
            first_bad_seq: Some(b.seq),
            reason: Some(b.reason),
            checkpoint_seq,
        },
    })
    .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    roles: Vec<String>,
}

async fn create_user(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<NewUser>,
) -> ApiResult<Response> {
    let user = s.controller.add_user(&body.name, &body.roles, &who.user)?;
    let subject = acted_on(format!("user {}", user.name));
    Ok((StatusCode::CREATED, subject, Json(user)).into_response())
}

async fn list_users(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.users()?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: String,
    label: Option<String>,
    /// A duration such as "90d"; no expiry if absent.
    expires_in: Option<String>,
}

/// Issues a token. Its secret is in this answer only; the store keeps a hash.
async fn create_token(
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

#[derive(Deserialize, schemars::JsonSchema)]
struct TokenQuery {
    user: Option<String>,
}

async fn list_tokens(
    State(s): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.tokens(q.user.as_deref())?).into_response())
}

async fn revoke_token(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let revoked = s.controller.revoke_token(&id, &who.user)?;
    let subject = acted_on(format!("token {} for {}", revoked.id, revoked.user));
    Ok((subject, Json(revoked)).into_response())
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct VerdictRequest {
    #[serde(default)]
    comment: String,
}

async fn give_verdict(
    s: &AppState,
    who: &Identity,
    id: DeploymentId,
    approved: bool,
    comment: &str,
) -> ApiResult<Response> {
    s.controller.give_verdict(id, who, approved, comment)?;
    let verdict = if approved { "approved" } else { "rejected" };
    Ok((
        StatusCode::ACCEPTED,
        acted_on(format!("deployment {id}")),
        Json(json!({ verdict: id, "by": who.user })),
    )
        .into_response())
}

async fn approve(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<DeploymentId>,
    Body(body): Body<VerdictRequest>,
) -> ApiResult<Response> {
    give_verdict(&s, &who, id, true, &body.comment).await
}

async fn reject(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<DeploymentId>,
    Body(body): Body<VerdictRequest>,
) -> ApiResult<Response> {
    give_verdict(&s, &who, id, false, &body.comment).await
}

/// Deployments waiting for approval and emergency changes still owed theirs.
async fn pending_approvals(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.pending_approvals()?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EvidenceQuery {
    /// The report's file name, kept with it.
    file: Option<String>,
}

async fn add_evidence(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path((version, kind)): Path<(String, String)>,
    Query(q): Query<EvidenceQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let file = q.file.unwrap_or_else(|| format!("{kind}-report"));
    // Parsing a large report is CPU work, and storing it is blocking I/O:
    // neither may hold up an async worker.
    let controller = s.controller.clone();
    let record = tokio::task::spawn_blocking(move || {
        controller.add_evidence(&version, &kind, &file, &body, &who.user)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let subject = acted_on(format!(
        "release {} evidence {} ({})",
        record.version,
        record.kind.as_str(),
        record.file_name
    ));
    Ok((StatusCode::CREATED, subject, Json(record)).into_response())
}

async fn list_evidence(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> ApiResult<Response> {
    let release = s.controller.release(&version)?;
    Ok(Json(s.controller.evidence(&release.version)?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GatesQuery {
    version: String,
    env: String,
}

/// Each gate a release must pass to enter an environment.
async fn gates(State(s): State<AppState>, Query(q): Query<GatesQuery>) -> ApiResult<Response> {
    let env = s.controller.env(&q.env)?.clone();
    let release = s.controller.release(&q.version)?;
    let results = s.controller.gates(&release.version, &env)?;
    Ok(Json(GatesView {
        version: release.version.to_string(),
        env: env.name.to_string(),
        passed: results.iter().all(|g| g.passed),
        gates: results,
    })
    .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RehearsalRequest {
    env: String,
    version: String,
}

/// Starts a rollback rehearsal; its outcome becomes `rehearsal` evidence.
async fn start_rehearsal(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<RehearsalRequest>,
) -> ApiResult<Response> {
    s.controller
        .start_rehearsal(&body.env, &body.version, &who.user)?;
    Ok((
        StatusCode::ACCEPTED,
        acted_on(format!(
            "release {} rehearsed in {}",
            body.version, body.env
        )),
        Json(RehearsalAnswer {
            rehearsing: body.version,
            env: body.env,
        }),
    )
        .into_response())
}

/// The deployment plan of a release for an environment, as Markdown.
async fn show_plan(State(s): State<AppState>, Query(q): Query<GatesQuery>) -> ApiResult<Response> {
    Ok(Json(s.controller.plan(&q.version, &q.env)?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PlanApproval {
    version: String,
    env: String,
    #[serde(default)]
    comment: String,
}

/// Approves the plan as it renders now; it is attached to the release.
async fn approve_plan(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<PlanApproval>,
) -> ApiResult<Response> {
    let (plan, evidence) =
        s.controller
            .approve_plan(&body.version, &body.env, &who.user, &body.comment)?;
    Ok((
        StatusCode::CREATED,
        acted_on(format!("plan of release {} for {}", plan.version, plan.env)),
        Json(PlanApproved {
            version: plan.version,
            env: plan.env,
            digest: plan.digest,
            evidence: evidence.id,
            by: who.user,
        }),
    )
        .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    deployment: Option<DeploymentId>,
    limit: Option<usize>,
}

/// Notification deliveries and their outcomes, newest first.
async fn list_deliveries(
    State(s): State<AppState>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(s.controller.deliveries(q.deployment, limit)?).into_response())
}

/// Server-sent events: every recorded step of every deployment, and every
/// notice, as they happen. A subscriber that falls behind is told how many
/// it missed and goes on.
async fn live_events(State(s): State<AppState>) -> Response {
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

async fn metrics(State(s): State<AppState>) -> ApiResult<Response> {
    let c = s.controller.clone();
    let text = tokio::task::spawn_blocking(move || c.metrics_text())
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

/// The public status page: no token, nothing but states and incidents.
async fn status_json(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.status_page().await?).into_response())
}

async fn status_html(State(s): State<AppState>) -> ApiResult<Response> {
    let page = s.controller.status_page().await?;
    Ok(pages::html(crate::observe::status_html(&page)?))
}

/// The dashboard: one static page (no build step) that signs in with a
/// token and reads everything through this API. The page itself holds no data.
async fn dashboard() -> Response {
    let mut resp = pages::html(include_str!("dashboard.html").to_owned());
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
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
