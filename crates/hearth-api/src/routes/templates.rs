//! Templates a team can start sandboxes from: its own (built through the
//! build endpoints) and the public ones (`base`, registered by the node).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use hearth_proto::orchestrator::TemplateDeleteRequest;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam, QueryPairs};
use crate::model::builds::{TemplateBuild, TemplateUpdate};
use crate::model::{Template, timestamp};
use crate::nodes::call;
use crate::state::AppState;
use crate::store::{BuildRecord, BuildStatus, TemplateRecord};

use super::resolve;

/// What `buildID` reads for a template with no ready build, as in E2B.
const NO_BUILD: &str = "00000000-0000-0000-0000-000000000000";
const MAX_BUILDS_PAGE: i64 = 100;

fn build_json(build: &BuildRecord) -> TemplateBuild {
    let ready = build.status == BuildStatus::Ready;
    TemplateBuild {
        build_id: build.build_id.clone(),
        status: build.status.as_str(),
        created_at: timestamp(build.created_at),
        updated_at: timestamp(build.updated_at),
        finished_at: build.finished_at.map(timestamp),
        cpu_count: build.cpu_count,
        memory_mb: build.memory_mb,
        disk_size_mb: ready.then_some(build.disk_size_mb),
        envd_version: ready.then(|| build.envd_version.clone()),
    }
}

/// The one build of a template a node registered (it has no build rows).
fn node_build(t: &TemplateRecord) -> TemplateBuild {
    TemplateBuild {
        build_id: t.build_id.clone(),
        status: "ready",
        created_at: timestamp(t.updated_at),
        updated_at: timestamp(t.updated_at),
        finished_at: Some(timestamp(t.updated_at)),
        cpu_count: t.cpu_count,
        memory_mb: t.memory_mb,
        disk_size_mb: Some(t.disk_size_mb),
        envd_version: Some(t.envd_version.clone()),
    }
}

/// `Template`: the current (newest ready) build's shape, and the newest
/// build's status.
async fn template(app: &AppState, record: &TemplateRecord) -> ApiResult<Template> {
    let latest = app.store.builds_of(&record.template_id, None, 1).await?;
    let build_count = app.store.count_builds(&record.template_id).await?;
    let ready = !record.build_id.is_empty();
    let (build_status, build_count) = match latest.first() {
        Some(build) => (build.status.as_str(), build_count),
        None if ready => ("ready", 1),
        None => ("waiting", 0),
    };
    Ok(Template {
        template_id: record.template_id.clone(),
        build_id: if ready {
            record.build_id.clone()
        } else {
            NO_BUILD.into()
        },
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
        build_count,
        envd_version: record.envd_version.clone(),
        build_status,
    })
}

/// `GET /templates` and `GET /v2/templates`: the team's templates and the
/// public ones.
pub async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<Vec<Template>>> {
    if let Some(team) = query.get("teamID").filter(|t| !t.is_empty())
        && team != caller.team.team_id
    {
        return Err(ApiError::BadRequest(
            "teamID does not match the API key's team".into(),
        ));
    }
    let records = app.store.templates_for(&caller.team.team_id).await?;
    let mut templates = Vec::with_capacity(records.len());
    for record in &records {
        templates.push(template(&app, record).await?);
    }
    Ok(Json(templates))
}

pub(super) fn page_after(token: Option<&str>) -> ApiResult<Option<(i64, String)>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    token
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest("invalid nextToken".into()))
}

/// `GET /templates/{id}` (`TemplateWithBuilds`): builds newest first, in
/// pages of `limit` (≤ 100) linked by `X-Next-Token`.
pub async fn detail(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<serde_json::Value>)> {
    let t = resolve::visible(&app, &caller, &id).await?;
    let limit = query
        .int("limit")?
        .unwrap_or(MAX_BUILDS_PAGE)
        .clamp(1, MAX_BUILDS_PAGE);
    let after = page_after(query.get("nextToken"))?;
    let mut records = app
        .store
        .builds_of(
            &t.template_id,
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit + 1,
        )
        .await?;
    let mut headers = HeaderMap::new();
    if records.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        records.truncate(usize::try_from(limit).unwrap_or(0));
        if let Some(last) = records.last()
            && let Ok(token) =
                HeaderValue::from_str(&format!("{}.{}", last.created_at, last.build_id))
        {
            headers.insert("x-next-token", token);
        }
    }
    let mut builds: Vec<TemplateBuild> = records.iter().map(build_json).collect();
    if builds.is_empty() && after.is_none() && !t.build_id.is_empty() {
        builds.push(node_build(&t));
    }
    Ok((
        headers,
        Json(serde_json::json!({
            "templateID": t.template_id,
            "public": t.public,
            "aliases": t.aliases,
            "names": t.aliases,
            "createdAt": timestamp(t.created_at),
            "updatedAt": timestamp(t.updated_at),
            "lastSpawnedAt": t.last_spawned_at.map(timestamp),
            "spawnCount": t.spawn_count,
            "builds": builds,
        })),
    ))
}

/// `DELETE /templates/{id}`: only the owning team's, and not while the team
/// runs sandboxes from it (E2B's rule). Its builds are cancelled, its nodes
/// forget it, and its rows, tags, names and uploads go.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let t = resolve::owned(&app, &caller, &id).await?;
    let template_id = &t.template_id;
    // A snapshot goes even while sandboxes run from it: they keep what
    // they need of it.
    if app.store.is_snapshot(template_id).await? {
        super::snapshots::remove_snapshot(&app, &t).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if app
        .store
        .count_sandboxes_from(&caller.team.team_id, template_id)
        .await?
        > 0
    {
        return Err(ApiError::BadRequest(format!(
            "cannot delete template '{template_id}' because there are running sandboxes using it"
        )));
    }
    // Aborting a build drops its stream, and the node cancels it.
    let cancelled = app.builds.cancel_template(template_id);
    let mut nodes: Vec<String> = Vec::new();
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = app
            .store
            .builds_of(
                template_id,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                MAX_BUILDS_PAGE,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.build_id.clone()));
        for build in &page {
            if !build.status.finished() {
                app.store
                    .finish_build_error(
                        &build.build_id,
                        "cancelled: the template was deleted",
                        None,
                    )
                    .await?;
            }
            if !build.node.is_empty() && !nodes.contains(&build.node) {
                nodes.push(build.node.clone());
            }
        }
    }
    for name in &nodes {
        // A node that left the cluster took the template's files with it.
        let Some(node) = app.nodes.find(name) else {
            continue;
        };
        let request = TemplateDeleteRequest {
            template_id: template_id.clone(),
        };
        match node.templates().delete(call(request)).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
    }
    app.store.delete_template(template_id).await?;
    if let Err(error) = app.uploads.remove_template(template_id).await {
        tracing::warn!(template = %template_id, %error, "removing a template's uploads failed");
    }
    tracing::info!(template = %template_id, cancelled, "template deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn update(
    app: &AppState,
    caller: &Caller,
    id: &str,
    body: &TemplateUpdate,
) -> ApiResult<TemplateRecord> {
    let t = resolve::owned(app, caller, id).await?;
    if let Some(public) = body.public
        && !app
            .store
            .set_template_public(&t.template_id, public)
            .await?
    {
        return Err(ApiError::template_not_found(id));
    }
    Ok(t)
}

/// `PATCH /templates/{id}` (deprecated): `{public}` → 200.
pub async fn update_v1(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<TemplateUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    update(&app, &caller, &id, &body).await?;
    Ok(Json(serde_json::Value::Null))
}

/// `PATCH /v2/templates/{id}`: `{public}` → 200 `{names}`.
pub async fn update_v2(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<TemplateUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    let t = update(&app, &caller, &id, &body).await?;
    Ok(Json(serde_json::json!({ "names": t.aliases })))
}

/// `GET /templates/aliases/{alias}`: 403 when it exists but is another
/// team's, as E2B answers; `name:tag` also needs the tag to exist.
pub async fn alias(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(alias): PathParam,
) -> ApiResult<Json<serde_json::Value>> {
    let name = crate::names::parse(&alias)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .name;
    match app.store.template(&name).await? {
        Some(t) if t.visible_to(&caller.team.team_id) => {
            if alias.contains(':') {
                resolve::resolve(&app, &caller, &alias).await?;
            }
            Ok(Json(serde_json::json!({
                "templateID": t.template_id,
                "public": t.public,
            })))
        }
        Some(_) => Err(ApiError::Forbidden(format!(
            "template alias '{name}' belongs to another team"
        ))),
        None => Err(ApiError::NotFound(format!(
            "template alias '{name}' not found"
        ))),
    }
}
