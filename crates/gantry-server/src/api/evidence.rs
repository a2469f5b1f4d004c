//! Handlers for the evidence attached to releases (test, security and
//! coverage reports).

use gantry_api::EvidenceQuery;

use super::*;

pub(super) async fn add_evidence(
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

pub(super) async fn list_evidence(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> ApiResult<Response> {
    let release = s.controller.release(&version)?;
    Ok(Json(s.controller.evidence(&release.version)?).into_response())
}
