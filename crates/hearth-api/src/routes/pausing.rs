//! Pausing and resuming sandboxes: `POST /sandboxes/{id}/pause`, the
//! deprecated `POST /sandboxes/{id}/resume`, and the resume that a connect
//! to a paused sandbox does. A paused sandbox keeps its id, its envd access
//! token, its processes, memory and files on its node's disk; no VM runs
//! and it has no end time until it is resumed.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hearth_proto::orchestrator::{SandboxPauseRequest, SandboxResumeRequest, StopReason};
use serde::Deserialize;

use super::sandboxes::{NODE_GRACE, created, forget, owned_sandbox, proto_time};
use crate::config::millis;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::model::SandboxCreated;
use crate::nodes::{Node, call_within};
use crate::state::AppState;
use crate::store::{SandboxRecord, now_ms};

/// A pause writes the guest's RAM to disk and compares it with its
/// template's; a resume reads back what differs.
const PAUSE_DEADLINE: Duration = Duration::from_secs(300);

/// `SandboxPauseRequest`. Its `requireHealthyGuest` asks for nothing here:
/// hearth's pause saves the VM whatever its guest does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseSandbox {
    /// `false`: keep only the filesystem (resume boots the guest again).
    pub memory: Option<bool>,
}

/// The deprecated `ResumedSandbox`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeSandbox {
    pub timeout: Option<i64>,
    pub auto_pause: Option<bool>,
}

/// Pauses `sandbox_id` on `node` (only its filesystem unless `memory`):
/// `true` when it paused now, `false` when it was paused already.
pub async fn pause_on_node(
    node: &Node,
    sandbox_id: &str,
    memory: bool,
    reason: StopReason,
) -> Result<bool, tonic::Status> {
    let request = call_within(
        SandboxPauseRequest {
            sandbox_id: sandbox_id.to_owned(),
            filesystem_only: !memory,
            reason: reason.into(),
        },
        PAUSE_DEADLINE,
    );
    match node.sandboxes().pause(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(false),
        Err(status) => Err(status),
    }
}

/// `POST /sandboxes/{id}/pause`: 204, 409 when it is paused already.
/// `memory: false` keeps only its filesystem (a resume boots it again).
pub async fn pause(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PauseSandbox>,
) -> ApiResult<StatusCode> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let conflict = format!("sandbox {id} is already paused");
    let already = move || ApiError::Conflict(conflict.clone());
    if record.paused {
        return Err(already());
    }
    room_to_keep(&app, &record.team_id).await?;
    let memory = body.memory != Some(false);
    // In a task of its own: a client that gives up does not leave the node
    // paused and the row running.
    let task = tokio::spawn(async move {
        let node = app.nodes.get(&record.node)?;
        match pause_on_node(node, &id, memory, StopReason::Requested).await {
            Ok(true) => {}
            Ok(false) => return Err(already()),
            Err(status) if status.code() == tonic::Code::NotFound => {
                forget(&app, &id).await?;
                return Err(ApiError::sandbox_not_found(&id));
            }
            Err(status) => return Err(status.into()),
        }
        app.upstream.forget(&id);
        if !app.store.mark_paused(&id, memory).await? {
            // Killed (or paused by another request) meanwhile.
            return Err(already());
        }
        tracing::info!(sandbox = %id, memory, "sandbox paused");
        Ok(StatusCode::NO_CONTENT)
    });
    task.await
        .map_err(|e| ApiError::Internal(format!("the pause task failed: {e}")))?
}

/// Refuses (429) when the team keeps its maximum of paused sandboxes and
/// snapshots. Two requests at once may both pass: the limit bounds disk
/// use, it is not an exact count.
pub async fn room_to_keep(app: &AppState, team_id: &str) -> ApiResult<()> {
    let max = app.config.team_max_kept;
    let kept = app.store.count_kept(team_id).await?;
    if kept >= max {
        return Err(ApiError::TooManyRequests(format!(
            "your team keeps its maximum of {max} paused sandboxes and snapshots: \
             kill paused sandboxes or delete snapshots first"
        )));
    }
    Ok(())
}

/// What [`resume_paused`] found.
pub enum Resumed {
    /// It was paused and runs again now.
    Now(SandboxRecord),
    /// It was running (another request resumed it first).
    Running(SandboxRecord),
}

/// Resumes `sandbox_id` if it is paused, until `timeout` seconds from now
/// (the configured default when `None`). Resumes of one sandbox take turns,
/// and a resume counts against its team's `max_sandboxes` as a create does.
/// It runs in a task of its own: a caller that gives up (a proxied client
/// that hangs up) does not cut it off between the node and the row.
pub async fn resume_paused(
    app: &Arc<AppState>,
    sandbox_id: &str,
    max_sandboxes: i64,
    timeout: Option<i64>,
    fresh_boot: bool,
) -> ApiResult<Resumed> {
    let (app, sandbox_id) = (app.clone(), sandbox_id.to_owned());
    tokio::spawn(
        async move { resume_now(&app, &sandbox_id, max_sandboxes, timeout, fresh_boot).await },
    )
    .await
    .map_err(|e| ApiError::Internal(format!("the resume task failed: {e}")))?
}

async fn resume_now(
    app: &AppState,
    sandbox_id: &str,
    max_sandboxes: i64,
    timeout: Option<i64>,
    fresh_boot: bool,
) -> ApiResult<Resumed> {
    let timeout = app.config.timeout(timeout)?;
    let _turn = app.resumes.turn(sandbox_id).await;
    let Some(record) = app.store.sandbox(sandbox_id).await? else {
        return Err(ApiError::sandbox_not_found(sandbox_id));
    };
    if !record.paused {
        return Ok(Resumed::Running(record));
    }
    let admitted = app
        .starting
        .admit(
            &record.team_id,
            max_sandboxes,
            app.store.count_sandboxes_of(&record.team_id),
        )
        .await?;
    let end_at = now_ms() + millis(timeout);
    let node = app.nodes.get(&record.node)?;
    let request = call_within(
        SandboxResumeRequest {
            sandbox_id: record.sandbox_id.clone(),
            end_time: Some(proto_time(end_at + millis(NODE_GRACE))),
            fresh_boot,
        },
        PAUSE_DEADLINE,
    );
    let resumed = match node.sandboxes().resume(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            forget(app, sandbox_id).await?;
            return Err(ApiError::sandbox_not_found(sandbox_id));
        }
        Err(status) => return Err(status.into()),
    };
    let marked = admitted
        .finish(
            app.store
                .mark_resumed(sandbox_id, &resumed.host_address, end_at),
        )
        .await?;
    if !marked {
        return Err(ApiError::sandbox_not_found(sandbox_id));
    }
    tracing::info!(sandbox = %sandbox_id, "sandbox resumed");
    let mut record = record;
    record.host_address = resumed.host_address;
    record.end_at = end_at;
    record.paused = false;
    Ok(Resumed::Now(record))
}

/// The deprecated `POST /sandboxes/{id}/resume`: 201, 409 when it runs.
pub async fn resume(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<ResumeSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxCreated>)> {
    if body.auto_pause == Some(true) {
        return Err(ApiError::BadRequest(
            "autoPause is not supported by hearth yet".into(),
        ));
    }
    let record = owned_sandbox(&app, &caller, &id).await?;
    if !record.paused {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is already running"
        )));
    }
    match resume_paused(&app, &id, caller.team.max_sandboxes, body.timeout, false).await? {
        Resumed::Now(record) => Ok((StatusCode::CREATED, Json(created(&app, &record)))),
        Resumed::Running(_) => Err(ApiError::Conflict(format!(
            "sandbox {id} is already running"
        ))),
    }
}
