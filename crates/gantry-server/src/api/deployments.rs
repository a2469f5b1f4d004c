//! Handlers for deployments and rollbacks: start, list, show, act on.

use super::*;

// Answers that are not a domain type of their own, named so the OpenAPI
// document can describe them.

#[derive(serde::Serialize, schemars::JsonSchema)]
pub(super) struct DeploymentView {
    #[serde(flatten)]
    deployment: gantry_core::Deployment,
    /// Every verdict, including those given after an emergency change finished.
    approvals: Vec<gantry_core::governance::Approval>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub(super) struct DeploymentLog {
    deployment: gantry_core::Deployment,
    log: Vec<gantry_store::LogEntry>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployRequest {
    env: String,
    version: String,
    /// standard, normal or emergency; by default normal where approvals are
    /// required, standard elsewhere.
    change: Option<String>,
    /// Why the change is made (kept on the deployment and the audit trail).
    reason: Option<String>,
}

pub(super) async fn create_deployment(
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
pub(super) struct RollbackRequest {
    env: String,
    to: Option<String>,
}

pub(super) async fn create_rollback(
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
pub(super) struct ListQuery {
    env: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_deployments(
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

pub(super) fn deployment_or_404(
    s: &AppState,
    id: DeploymentId,
) -> ApiResult<gantry_core::Deployment> {
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
pub(super) async fn show_deployment(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    Ok(Json(DeploymentView {
        deployment: deployment_or_404(&s, id)?,
        approvals: s.controller.approvals(id)?,
    })
    .into_response())
}

pub(super) async fn deployment_log(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
) -> ApiResult<Response> {
    let d = deployment_or_404(&s, id)?;
    let log = s.controller.deployment_log(id)?;
    Ok(Json(DeploymentLog { deployment: d, log }).into_response())
}

/// A person's request to a running deployment (`abort`, `promote`, `pause`,
/// `resume`), answered 202 with what was asked.
pub(super) async fn act_on_deployment(
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
