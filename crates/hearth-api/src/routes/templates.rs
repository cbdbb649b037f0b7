//! Templates a team can start sandboxes from. Building them is a later
//! issue; `base` is registered by the node that built it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathParam};
use crate::model::{Template, timestamp};
use crate::state::AppState;
use crate::store::TemplateRecord;

fn template(record: &TemplateRecord) -> Template {
    Template {
        template_id: record.template_id.clone(),
        build_id: record.build_id.clone(),
        cpu_count: record.cpu_count,
        memory_mb: record.memory_mb,
        disk_size_mb: record.disk_size_mb,
        public: record.public,
        aliases: record.aliases.clone(),
        names: record.aliases.clone(),
        created_at: timestamp(record.created_at),
        updated_at: timestamp(record.updated_at),
        created_by: None,
        last_spawned_at: record.last_spawned_at.map(timestamp),
        spawn_count: record.spawn_count,
        build_count: 1,
        envd_version: record.envd_version.clone(),
        build_status: "ready",
    }
}

async fn visible(app: &AppState, caller: &Caller, id: &str) -> ApiResult<TemplateRecord> {
    match app.store.template(id).await? {
        Some(t) if t.visible_to(&caller.team.team_id) => Ok(t),
        _ => Err(ApiError::NotFound(format!("template '{id}' not found"))),
    }
}

/// `GET /templates` and `GET /v2/templates`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Template>>> {
    let records = app.store.templates_for(&caller.team.team_id).await?;
    Ok(Json(records.iter().map(template).collect()))
}

/// `GET /templates/{id}` (`TemplateWithBuilds`).
pub async fn detail(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<Json<serde_json::Value>> {
    let t = visible(&app, &caller, &id).await?;
    let build = serde_json::json!({
        "buildID": t.build_id,
        "status": "ready",
        "createdAt": timestamp(t.updated_at),
        "updatedAt": timestamp(t.updated_at),
        "finishedAt": timestamp(t.updated_at),
        "cpuCount": t.cpu_count,
        "memoryMB": t.memory_mb,
        "diskSizeMB": t.disk_size_mb,
        "envdVersion": t.envd_version,
    });
    Ok(Json(serde_json::json!({
        "templateID": t.template_id,
        "public": t.public,
        "aliases": t.aliases,
        "names": t.aliases,
        "createdAt": timestamp(t.created_at),
        "updatedAt": timestamp(t.updated_at),
        "lastSpawnedAt": t.last_spawned_at.map(timestamp),
        "spawnCount": t.spawn_count,
        "builds": [build],
    })))
}

/// `DELETE /templates/{id}`: only the owning team's; public templates
/// belong to the node.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let t = visible(&app, &caller, &id).await?;
    if t.team_id.as_deref() != Some(caller.team.team_id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "template '{id}' is public and belongs to the node; it cannot be deleted"
        )));
    }
    app.store.delete_template(&t.template_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/aliases/{alias}`: 403 when it exists but is another
/// team's, as E2B answers.
pub async fn alias(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(alias): PathParam,
) -> ApiResult<Json<serde_json::Value>> {
    match app.store.template(&alias).await? {
        Some(t) if t.visible_to(&caller.team.team_id) => Ok(Json(serde_json::json!({
            "templateID": t.template_id,
            "public": t.public,
        }))),
        Some(_) => Err(ApiError::Forbidden(format!(
            "template alias '{alias}' belongs to another team"
        ))),
        None => Err(ApiError::NotFound(format!(
            "template alias '{alias}' not found"
        ))),
    }
}
