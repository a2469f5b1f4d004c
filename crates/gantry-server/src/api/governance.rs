//! Handlers for governance: verdicts on deployments, pending approvals,
//! gates, rehearsals and plans.

use gantry_api::{
    GatesQuery, GatesView, PlanApproval, PlanApproved, RehearsalAnswer, RehearsalRequest,
    VerdictGiven, VerdictRequest,
};

use super::*;

pub(super) async fn give_verdict(
    s: &AppState,
    who: &Identity,
    id: DeploymentId,
    approved: bool,
    comment: &str,
) -> ApiResult<Response> {
    s.controller.give_verdict(id, who, approved, comment)?;
    let verdict = VerdictGiven {
        approved: approved.then_some(id),
        rejected: (!approved).then_some(id),
        by: who.user.clone(),
    };
    Ok((
        StatusCode::ACCEPTED,
        acted_on(format!("deployment {id}")),
        Json(verdict),
    )
        .into_response())
}

pub(super) async fn approve_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<DeploymentId>,
    Body(body): Body<VerdictRequest>,
) -> ApiResult<Response> {
    give_verdict(&s, &who, id, true, &body.comment).await
}

pub(super) async fn reject_deployment(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<DeploymentId>,
    Body(body): Body<VerdictRequest>,
) -> ApiResult<Response> {
    give_verdict(&s, &who, id, false, &body.comment).await
}

/// Deployments waiting for approval and emergency changes still owed theirs.
pub(super) async fn pending_approvals(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.pending_approvals()?).into_response())
}

/// Each gate a release must pass to enter an environment.
pub(super) async fn gates(
    State(s): State<AppState>,
    Query(q): Query<GatesQuery>,
) -> ApiResult<Response> {
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

/// Starts a rollback rehearsal; its outcome becomes `rehearsal` evidence.
pub(super) async fn start_rehearsal(
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
pub(super) async fn show_plan(
    State(s): State<AppState>,
    Query(q): Query<GatesQuery>,
) -> ApiResult<Response> {
    Ok(Json(crate::plan::plan(&s.controller, &q.version, &q.env)?).into_response())
}

/// Approves the plan as it renders now; it is attached to the release.
pub(super) async fn approve_plan(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Body(body): Body<PlanApproval>,
) -> ApiResult<Response> {
    let (plan, evidence) = crate::plan::approve_plan(
        &s.controller,
        &body.version,
        &body.env,
        &who.user,
        &body.comment,
    )?;
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
