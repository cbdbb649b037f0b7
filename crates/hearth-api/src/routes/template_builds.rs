//! The SDKs' template build flow: request a build (`POST /v3/templates`),
//! then start it with its steps (`POST /v2/templates/{id}/builds/{buildID}`).
//! Its status and logs are `build_logs.rs`. Statuses and messages follow
//! E2B's API.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hearth_proto::orchestrator::TemplateBuildRequest;

use crate::builds::{self, BuildJob};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathPair};
use crate::model::builds::{BuildRequestV2, BuildRequestV3, BuildRequested, BuildStart};
use crate::model::timestamp;
use crate::names::{self, DEFAULT_TAG};
use crate::secrets;
use crate::state::AppState;
use crate::store::{BuildRecord, BuildStatus, TemplateRecord};

const DEFAULT_CPU: i64 = 2;
const DEFAULT_MEMORY_MB: i64 = 1024;
const CPU_RANGE: std::ops::RangeInclusive<i64> = 1..=8;
const MEMORY_RANGE: std::ops::RangeInclusive<i64> = 128..=16384;

/// A build request, from either API version.
struct Request {
    name: Option<String>,
    tags: Vec<String>,
    team_id: Option<String>,
    cpu_count: Option<i64>,
    memory_mb: Option<i64>,
    min_free_disk_mb: Option<i64>,
}

fn shape(cpu: Option<i64>, memory: Option<i64>) -> ApiResult<(i64, i64)> {
    let cpu = cpu.unwrap_or(DEFAULT_CPU);
    if !CPU_RANGE.contains(&cpu) {
        return Err(ApiError::BadRequest(format!(
            "cpuCount must be {} to {}, got {cpu}",
            CPU_RANGE.start(),
            CPU_RANGE.end()
        )));
    }
    let memory = memory.unwrap_or(DEFAULT_MEMORY_MB);
    if !MEMORY_RANGE.contains(&memory) || memory % 2 != 0 {
        return Err(ApiError::BadRequest(format!(
            "memoryMB must be an even number from {} to {}, got {memory}",
            MEMORY_RANGE.start(),
            MEMORY_RANGE.end()
        )));
    }
    Ok((cpu, memory))
}

/// Registers a `waiting` build, of a new template or of the caller's
/// template of that name.
async fn register(
    app: &AppState,
    caller: &Caller,
    request: Request,
) -> ApiResult<(TemplateRecord, BuildRecord)> {
    if let Some(team) = request.team_id.as_deref().filter(|t| !t.is_empty())
        && team != caller.team.team_id
    {
        return Err(ApiError::BadRequest(
            "teamID does not match the API key's team".into(),
        ));
    }
    if request.min_free_disk_mb.is_some_and(|mb| mb != 0) {
        return Err(ApiError::BadRequest(
            "minFreeDiskMb is not supported by hearth: the node sizes a build's disk".into(),
        ));
    }
    let name = names::parse(request.name.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut tags: Vec<&str> = name.tag.iter().map(String::as_str).collect();
    tags.extend(request.tags.iter().map(String::as_str));
    let mut tags = names::tags(tags).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if tags.is_empty() {
        tags.push(DEFAULT_TAG.into());
    }
    let (cpu_count, memory_mb) = shape(request.cpu_count, request.memory_mb)?;
    let existing = app.store.template(&name.name).await?;
    if let Some(t) = &existing
        && app.store.is_snapshot(&t.template_id).await?
    {
        return Err(ApiError::Conflict(format!(
            "'{}' names a snapshot; choose another name",
            name.name
        )));
    }
    let template_id = match &existing {
        Some(t) if !t.aliases.contains(&name.name) => {
            return Err(ApiError::Conflict(format!(
                "'{}' is a template ID; choose another name",
                name.name
            )));
        }
        Some(t) if t.team_id.as_deref() == Some(caller.team.team_id.as_str()) => {
            t.template_id.clone()
        }
        Some(_) => return Err(taken(&name.name)),
        None => {
            secrets::template_id().map_err(|e| ApiError::Internal(format!("template id: {e}")))?
        }
    };
    let build = BuildRecord {
        build_id: secrets::uuid(),
        template_id,
        team_id: caller.team.team_id.clone(),
        status: BuildStatus::Waiting,
        started: false,
        tags,
        cpu_count,
        memory_mb,
        disk_size_mb: 0,
        envd_version: String::new(),
        node: String::new(),
        reason_message: None,
        reason_step: None,
        created_at: 0,
        updated_at: 0,
        finished_at: None,
    };
    let new_alias = existing.is_none().then_some(name.name.as_str());
    if !app.store.register_build(new_alias, &build).await? {
        return Err(taken(&name.name));
    }
    let template = app
        .store
        .template(&build.template_id)
        .await?
        .ok_or_else(|| ApiError::Internal("a registered template vanished".into()))?;
    tracing::info!(template = %template.template_id, build = %build.build_id, name = %name.name, "template build requested");
    Ok((template, build))
}

fn taken(name: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "the template name '{name}' is already used by another team"
    ))
}

/// `POST /v3/templates` → 202 `TemplateRequestResponseV3`.
pub async fn request_v3(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<BuildRequestV3>,
) -> ApiResult<(StatusCode, Json<BuildRequested>)> {
    let (template, build) = register(
        &app,
        &caller,
        Request {
            name: body.name.or(body.alias),
            tags: body.tags.unwrap_or_default(),
            team_id: body.team_id,
            cpu_count: body.cpu_count,
            memory_mb: body.memory_mb,
            min_free_disk_mb: body.min_free_disk_mb,
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildRequested {
            template_id: template.template_id,
            build_id: build.build_id,
            public: template.public,
            names: template.aliases.clone(),
            tags: build.tags,
            aliases: template.aliases,
        }),
    ))
}

/// `POST /v2/templates` (deprecated) → 202 `TemplateLegacy`.
pub async fn request_v2(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<BuildRequestV2>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (template, build) = register(
        &app,
        &caller,
        Request {
            name: body.alias,
            tags: Vec::new(),
            team_id: body.team_id,
            cpu_count: body.cpu_count,
            memory_mb: body.memory_mb,
            min_free_disk_mb: None,
        },
    )
    .await?;
    let build_count = app.store.count_builds(&template.template_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "templateID": template.template_id,
            "buildID": build.build_id,
            "cpuCount": build.cpu_count,
            "memoryMB": build.memory_mb,
            "diskSizeMB": 0,
            "public": template.public,
            "aliases": template.aliases,
            "createdAt": timestamp(template.created_at),
            "updatedAt": timestamp(template.updated_at),
            "createdBy": null,
            "lastSpawnedAt": template.last_spawned_at.map(timestamp),
            "spawnCount": template.spawn_count,
            "buildCount": build_count,
            "envdVersion": "",
        })),
    ))
}

fn check_build_id(build_id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(build_id).map(|_| ()).map_err(|_| {
        ApiError::BadRequest(format!("invalid build ID '{build_id}': expected a UUID"))
    })
}

/// The caller's template and one of its builds.
pub(super) async fn owned_build(
    app: &AppState,
    caller: &Caller,
    template_ref: &str,
    build_id: &str,
) -> ApiResult<(TemplateRecord, BuildRecord)> {
    check_build_id(build_id)?;
    let template = super::resolve::owned(app, caller, template_ref).await?;
    match app.store.build(build_id).await? {
        Some(build) if build.template_id == template.template_id => Ok((template, build)),
        _ => Err(ApiError::NotFound(format!(
            "build '{build_id}' of template '{}' not found",
            template.template_id
        ))),
    }
}

fn not_waiting(build: &BuildRecord) -> ApiError {
    let status = build.status.as_str();
    ApiError::BadRequest(if build.started && build.status == BuildStatus::Waiting {
        format!(
            "build '{}' was started already (it waits for a build slot)",
            build.build_id
        )
    } else if build.started {
        format!(
            "build '{}' was started already (it is {status})",
            build.build_id
        )
    } else {
        format!(
            "build '{}' is not waiting to start (it is {status})",
            build.build_id
        )
    })
}

/// `POST /v2/templates/{templateID}/builds/{buildID}` → 202: checks the
/// steps, picks the node and starts the build in the background.
pub async fn start(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathPair(template_ref, build_id): PathPair,
    JsonBody(body): JsonBody<BuildStart>,
) -> ApiResult<StatusCode> {
    let (template, build) = owned_build(&app, &caller, &template_ref, &build_id).await?;
    let checked = super::build_steps::check(&body, &app.uploads, &template.template_id).await?;
    if build.started || build.status != BuildStatus::Waiting {
        return Err(not_waiting(&build));
    }
    // A build from a template runs where that template's files are.
    let (from_template, base_node) = match &checked.from_template {
        None => (String::new(), None),
        Some(reference) => {
            let base = super::resolve::resolve(&app, &caller, reference).await?;
            if base.template.template_id == template.template_id {
                return Err(ApiError::BadRequest(
                    "a template cannot be built from itself".into(),
                ));
            }
            if base.build_id() != base.template.build_id {
                return Err(ApiError::BadRequest(format!(
                    "fromTemplate '{reference}' names an older build; hearth builds from a template's newest build only"
                )));
            }
            let node = base.node().map(str::to_owned);
            (base.template.template_id, node)
        }
    };
    let node = match &base_node {
        Some(name) => app.nodes.get(name)?,
        None => {
            app.nodes
                .place_build(app.config.node_deadlines.probe)
                .await?
        }
    };
    if !app
        .store
        .claim_build_start(&build.build_id, &node.name)
        .await?
    {
        let now = app.store.build(&build.build_id).await?.unwrap_or(build);
        return Err(not_waiting(&now));
    }
    let request = TemplateBuildRequest {
        template_id: template.template_id.clone(),
        build_id: build.build_id.clone(),
        team_id: caller.team.team_id.clone(),
        vcpu: build.cpu_count,
        ram_mb: build.memory_mb,
        disk_size_mb: 0,
        from_image: checked.from_image,
        from_template,
        registry: checked.registry,
        force: checked.force,
        steps: checked.steps,
        start_cmd: checked.start_cmd,
        ready_cmd: checked.ready_cmd,
    };
    builds::start(
        &app,
        BuildJob {
            build_id: build.build_id.clone(),
            template_id: template.template_id.clone(),
            node: node.name.clone(),
            request,
        },
    );
    Ok(StatusCode::ACCEPTED)
}
