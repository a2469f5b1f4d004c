//! Handlers for releases: artifacts registered, shown and re-verified.

use super::*;

pub(super) async fn list_releases(State(s): State<AppState>) -> ApiResult<Response> {
    Ok(Json(s.controller.releases()?).into_response())
}

pub(super) async fn create_release(
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
    let committed_at = header(gantry_api::releases::headers::COMMIT_TIME)?
        .map(|t| {
            gantry_core::time::parse_rfc3339(&t).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("header {}: {e}", gantry_api::releases::headers::COMMIT_TIME),
                )
            })
        })
        .transpose()?;
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
            committed_at,
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

pub(super) fn artifact_too_large() -> ApiError {
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
pub(super) async fn receive_artifact(
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

pub(super) async fn show_release(
    State(s): State<AppState>,
    Path(version): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.controller.release(&version)?).into_response())
}

pub(super) async fn verify_releases(State(s): State<AppState>) -> ApiResult<Response> {
    let results = s.controller.verify_releases().await?;
    Ok(Json(results).into_response())
}
