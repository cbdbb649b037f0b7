//! `POST /sandboxes/{id}/fork` (and `/v2`): a snapshot of the running
//! sandbox, then `count` sandboxes started from it at once, each with the
//! source's settings, its memory and its files; the source runs on with
//! its id and end time. The snapshot is removed once the forks started
//! (their disks keep the layer they run over).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::sandboxes::{create_sandbox, owned_sandbox};
use super::snapshots::{remove_snapshot, take_snapshot};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::model::NewSandbox;
use crate::state::AppState;
use crate::store::SandboxRecord;

/// E2B's bounds on `count`.
const MAX_FORKS: i64 = 100;

/// `SandboxForkRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkRequest {
    pub timeout: Option<i64>,
    pub count: Option<i64>,
}

/// What each fork is created with: the source's settings, from the
/// snapshot `template_id`.
fn fork_of(
    record: &SandboxRecord,
    template_id: &str,
    timeout: Option<i64>,
) -> ApiResult<NewSandbox> {
    let body = json!({
        "templateID": template_id,
        "timeout": timeout,
        "autoPause": record.auto_pause,
        "autoPauseMemory": record.auto_pause_memory,
        "autoResume": {"enabled": record.auto_resume_secs.is_some()},
        "secure": record.envd_access_token.is_some(),
        "allow_internet_access": record.allow_internet,
        "network": record.network,
        "metadata": record.metadata,
    });
    serde_json::from_value(body).map_err(|e| ApiError::Internal(format!("a fork's settings: {e}")))
}

pub async fn fork(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<ForkRequest>,
) -> ApiResult<(StatusCode, Json<Vec<Value>>)> {
    let count = body.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(ApiError::BadRequest(format!(
            "count must be between 1 and {MAX_FORKS}, got {count}"
        )));
    }
    app.config.timeout(body.timeout)?;
    let record = owned_sandbox(&app, &caller, &id).await?;
    // A client that gives up does not stop it halfway: every fork started
    // gets its row, and the snapshot goes.
    let task = tokio::spawn(async move {
        let snapshot = take_snapshot(&app, &record, None).await?;
        let template = app.store.template(&snapshot.snapshot_id).await;
        let template = match template {
            Ok(Some(template)) => template,
            Ok(None) => return Err(ApiError::Internal("the fork's snapshot vanished".into())),
            Err(error) => return Err(error.into()),
        };
        let started = match fork_of(&record, &snapshot.snapshot_id, body.timeout) {
            Ok(new) => {
                futures::future::join_all(
                    (0..count).map(|_| create_sandbox(&app, &caller, new.clone())),
                )
                .await
            }
            Err(error) => vec![Err(error)],
        };
        // Whatever became of the forks, the snapshot goes.
        if let Err(error) = remove_snapshot(&app, &template).await {
            tracing::warn!(%error, "removing a fork's snapshot failed");
        }
        let forks: Vec<Value> = started
            .into_iter()
            .map(|result| match result {
                Ok(created) => json!({ "sandbox": created }),
                Err(error) => json!({
                    "error": {"code": error.status().as_u16(), "message": error.client_message()}
                }),
            })
            .collect();
        Ok::<_, ApiError>(forks)
    });
    let forks = task
        .await
        .map_err(|e| ApiError::Internal(format!("the fork task failed: {e}")))??;
    Ok((StatusCode::CREATED, Json(forks)))
}
