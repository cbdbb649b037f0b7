//! Snapshots: `POST /sandboxes/{id}/snapshots` and `GET /snapshots`. A
//! snapshot is a template of the sandbox's team (`DELETE /templates/{id}`
//! removes it) whose files are on the sandbox's node: a create that names
//! it starts there from the sandbox's memory and disk as they were.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use hearth_proto::orchestrator::{SandboxSnapshotRequest, SnapshotDeleteRequest};
use serde::{Deserialize, Serialize};

use super::sandboxes::{forget, owned_sandbox};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam, QueryPairs};
use crate::nodes::call_within;
use crate::state::AppState;
use crate::store::{NewSnapshot, SandboxRecord, SnapshotFilter, TemplateRecord};

/// Writing a snapshot stops the sandbox while its RAM goes to disk.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(300);
const MAX_PAGE: i64 = 100;

/// `SandboxSnapshotRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRequest {
    pub name: Option<String>,
    /// `false`: only the filesystem (not done by hearth yet).
    pub memory: Option<bool>,
}

/// `SnapshotInfo`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// The alias a snapshot's `name` becomes.
fn snapshot_name(name: Option<&str>) -> ApiResult<Option<String>> {
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        return Ok(None);
    };
    let parsed = crate::names::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if parsed.tag.is_some() {
        return Err(ApiError::BadRequest(format!(
            "snapshot name '{name}' has a tag; name it without one"
        )));
    }
    Ok(Some(parsed.name))
}

/// Snapshots the running sandbox `record` as a new template of its team,
/// named `name` when given.
pub async fn take_snapshot(
    app: &AppState,
    record: &SandboxRecord,
    name: Option<String>,
) -> ApiResult<SnapshotInfo> {
    if record.paused {
        return Err(ApiError::Conflict(format!(
            "sandbox {} is paused: resume it to snapshot it",
            record.sandbox_id
        )));
    }
    if let Some(name) = &name
        && app.store.template(name).await?.is_some()
    {
        return Err(ApiError::Conflict(format!("the name '{name}' is taken")));
    }
    let snapshot_id = crate::secrets::template_id()
        .map_err(|e| ApiError::Internal(format!("a snapshot id: {e}")))?;
    let node = app.nodes.get(&record.node)?;
    let request = call_within(
        SandboxSnapshotRequest {
            sandbox_id: record.sandbox_id.clone(),
            snapshot_id: snapshot_id.clone(),
        },
        SNAPSHOT_DEADLINE,
    );
    let taken = match node.sandboxes().snapshot(request).await {
        Ok(taken) => taken.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            forget(app, &record.sandbox_id).await?;
            return Err(ApiError::sandbox_not_found(&record.sandbox_id));
        }
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            return Err(ApiError::Conflict(format!(
                "sandbox {} is paused or still starting",
                record.sandbox_id
            )));
        }
        Err(status) => return Err(status.into()),
    };
    let snapshot = NewSnapshot {
        snapshot_id: snapshot_id.clone(),
        team_id: record.team_id.clone(),
        sandbox_id: record.sandbox_id.clone(),
        build_id: crate::secrets::uuid(),
        node: record.node.clone(),
        name: name.clone(),
        cpu_count: i64::from(taken.vcpu),
        memory_mb: i64::from(taken.ram_mb),
        disk_size_mb: record.disk_size_mb,
        envd_version: record.envd_version.clone(),
    };
    let written = app.store.insert_snapshot(&snapshot).await;
    if !matches!(written, Ok(true)) {
        // Nobody can name it: it goes.
        if let Err(status) = delete_on_node(app, &record.node, &snapshot_id).await {
            tracing::warn!(snapshot = %snapshot_id, %status, "deleting an unrecorded snapshot on its node failed");
        }
    }
    if !written? {
        return Err(ApiError::Conflict(format!(
            "the name '{}' is taken",
            name.unwrap_or_default()
        )));
    }
    tracing::info!(
        sandbox = %record.sandbox_id,
        snapshot = %snapshot_id,
        memory_mib = taken.memory_bytes >> 20,
        disk_mib = taken.disk_bytes >> 20,
        "snapshot taken"
    );
    Ok(SnapshotInfo {
        snapshot_id,
        names: name.into_iter().collect(),
    })
}

/// Deletes a snapshot on its node; one that left the cluster, or does not
/// have it, took it with it.
async fn delete_on_node(
    app: &AppState,
    node: &str,
    snapshot_id: &str,
) -> Result<(), tonic::Status> {
    let Some(node) = app.nodes.find(node) else {
        return Ok(());
    };
    let request = call_within(
        SnapshotDeleteRequest {
            snapshot_id: snapshot_id.to_owned(),
        },
        SNAPSHOT_DEADLINE,
    );
    match node.sandboxes().delete_snapshot(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(status),
    }
}

/// Removes snapshot `template` from its node and the store. Sandboxes
/// started from it run on (their disks keep the layers they need). When
/// its node fails to delete it, the rows stay, so it can be deleted again.
pub async fn remove_snapshot(app: &AppState, template: &TemplateRecord) -> ApiResult<()> {
    if let Some(build) = app.store.build(&template.build_id).await? {
        delete_on_node(app, &build.node, &template.template_id).await?;
    }
    app.store.delete_template(&template.template_id).await?;
    tracing::info!(snapshot = %template.template_id, "snapshot deleted");
    Ok(())
}

/// `POST /sandboxes/{id}/snapshots`: 201 with the snapshot's id and names;
/// the sandbox runs on.
pub async fn create(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    if body.memory == Some(false) {
        return Err(ApiError::BadRequest(
            "snapshots of only the filesystem (memory: false) are not supported by hearth yet"
                .into(),
        ));
    }
    let name = snapshot_name(body.name.as_deref())?;
    let record = owned_sandbox(&app, &caller, &id).await?;
    super::pausing::room_to_keep(&app, &record.team_id).await?;
    // A client that gives up does not stop it halfway.
    let task = tokio::spawn(async move { take_snapshot(&app, &record, name).await });
    let info = task
        .await
        .map_err(|e| ApiError::Internal(format!("the snapshot task failed: {e}")))??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /snapshots?sandboxID&name&limit&nextToken`: the team's snapshots,
/// newest first, in pages linked by `X-Next-Token`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<Vec<SnapshotInfo>>)> {
    let limit = query.int("limit")?.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let after = super::templates::page_after(query.get("nextToken"))?;
    let filter = SnapshotFilter {
        sandbox_id: query.get("sandboxID").filter(|s| !s.is_empty()),
        name: query.get("name").filter(|s| !s.is_empty()),
        after: after.as_ref().map(|(at, id)| (*at, id.as_str())),
    };
    let mut records = app
        .store
        .snapshots_of(&caller.team.team_id, &filter, limit + 1)
        .await?;
    let mut headers = HeaderMap::new();
    if records.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        records.truncate(usize::try_from(limit).unwrap_or(0));
        if let Some(last) = records.last()
            && let Ok(token) =
                HeaderValue::from_str(&format!("{}.{}", last.created_at, last.snapshot_id))
        {
            headers.insert("x-next-token", token);
        }
    }
    let snapshots = records
        .into_iter()
        .map(|r| SnapshotInfo {
            snapshot_id: r.snapshot_id,
            names: r.names,
        })
        .collect();
    Ok((headers, Json(snapshots)))
}
