//! Handlers for deployments and rollbacks: start, list, show, act on.

use gantry_api::{
    Action, ActionTaken, DeployRequest, DeploymentLog, DeploymentView, ListQuery, RollbackRequest,
};

use super::*;

// Answers that are not a domain type of their own, named so the OpenAPI
// document can describe them.

pub(super) async fn create_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<DeployRequest>,
) -> ApiResult<Response> {
    let moment = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                gantry_core::time::parse_rfc3339(s)
                    .map_err(|e| ControlError::Invalid(format!("{field}: {e}")))
            })
            .transpose()
    };
    let schedule = match (moment("at", &body.at)?, moment("until", &body.until)?) {
        (Some(at), until) => Some(gantry_core::governance::Schedule { at, until }),
        (None, Some(_)) => {
            return Err(ControlError::Invalid(
                "until: a window's end needs its start (at)".to_owned(),
            )
            .into())
        }
        (None, None) => None,
    };
    let d = s
        .controller
        .deploy(
            &body.env,
            &body.version,
            &who.user,
            body.change.as_deref(),
            body.reason,
            schedule,
        )
        .await?;
    let subject = acted_on(format!("deployment {}", d.id));
    Ok((StatusCode::CREATED, subject, Json(d)).into_response())
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
        closure: s.controller.closure(id)?,
    })
    .into_response())
}

pub(super) async fn add_deployment_evidence(
    State(s): State<AppState>,
    Path(id): Path<DeploymentId>,
    Query(q): Query<gantry_api::EvidenceUpload>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let controller = s.controller.clone();
    let name = q.name.clone();
    let file =
        tokio::task::spawn_blocking(move || controller.add_deployment_evidence(id, &name, &body))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    let subject = acted_on(format!(
        "deployment {id} evidence {} ({})",
        file.name, file.digest
    ));
    Ok((StatusCode::CREATED, subject, Json(file)).into_response())
}

pub(super) async fn close_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<DeploymentId>,
    Body(req): Body<gantry_api::CloseDeployment>,
) -> ApiResult<Response> {
    let closure = s.controller.close_deployment(id, req, &who.user)?;
    let subject = acted_on(format!("deployment {id} closed ({})", closure.status));
    Ok((StatusCode::CREATED, subject, Json(closure)).into_response())
}

pub(super) async fn deployment_evidence(
    State(s): State<AppState>,
    Path((id, digest)): Path<(DeploymentId, String)>,
) -> ApiResult<Response> {
    let bytes = s.controller.deployment_evidence(id, &digest)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
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
    let Some(action) = Action::parse(&action) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action {action:?} on a deployment; known: abort, promote, pause, resume"),
        ));
    };
    let by = who.user;
    let event = match action {
        Action::Abort => gantry_core::Event::AbortRequested { by },
        Action::Promote => gantry_core::Event::PromoteRequested { by },
        Action::Pause => gantry_core::Event::PauseRequested { by },
        Action::Resume => gantry_core::Event::ResumeRequested { by },
    };
    s.controller.request(id, event)?;
    let subject = acted_on(format!("deployment {id}"));
    Ok((
        StatusCode::ACCEPTED,
        subject,
        Json(ActionTaken::new(action, id)),
    )
        .into_response())
}
