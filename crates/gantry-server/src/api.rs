//! The HTTP API under `/api/v1/`. JSON in and out; every error has the
//! shape `{"error": {"code": "...", "message": "..."}}`, mapped here and
//! nowhere else. Every route but `/healthz` needs a bearer token: the
//! controller's own (`admin.token`) or a user's, and each action needs a
//! role that grants it (the route table, `routes.rs`).
//!
//! Here: the state the handlers share and the router. Beside it: `routes`
//! (the table), `errors` (error shape, extractors), `auth`, `audit_layer`,
//! `openapi`, `pages` (security headers), and the handlers by resource.

use crate::controller::{ControlError, Controller, NewRelease};
use crate::governance::{Authorize, Identity, TokenRefusal};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use gantry_core::governance::Permission;
use gantry_core::DeploymentId;
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

mod audit;
mod audit_layer;
mod auth;
mod dashboard;
mod deployments;
mod errors;
mod evidence;
mod forward;
mod governance;
mod incidents;
pub mod openapi;
mod pages;
mod releases;
mod routes;
mod status;
mod users;

use audit::*;
use audit_layer::*;
use auth::*;
use dashboard::*;
use deployments::*;
use errors::*;
use evidence::*;
use governance::*;
use incidents::*;
use releases::*;
use status::*;
use users::*;

/// The whole HTTP surface, built from the route table (`routes.rs`).
pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    let mut top = Router::new();
    for (path, handlers) in routes::method_routers(&state) {
        match path.strip_prefix("/api/v1") {
            Some(nested) => api = api.route(nested, handlers),
            None => top = top.route(path, handlers),
        }
    }
    let api = api
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
    top.nest("/api/v1", api)
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
