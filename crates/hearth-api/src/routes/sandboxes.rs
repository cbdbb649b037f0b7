//! Creating, connecting to, extending and killing sandboxes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_proto::orchestrator::{
    SandboxConfig, SandboxCreateRequest, SandboxDeleteRequest, SandboxNetworkConfig,
    SandboxNetworkEgressConfig, SandboxUpdateRequest, StopReason,
};
use tracing::Instrument;

use super::pausing::Resumed;
use crate::config::millis;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::model::{
    ConnectSandbox, NetworkConfig, NetworkUpdate, NewSandbox, RefreshRequest, SandboxCreated,
    TimeoutRequest,
};
use crate::nodes::{Node, bounded, call, call_within};
use crate::secrets;
use crate::state::AppState;
use crate::store::{SandboxRecord, now_ms};

/// A node keeps a sandbox this much past its end, in case the control
/// plane is down when it should kill it.
pub(super) const NODE_GRACE: Duration = Duration::from_secs(60);
/// The lifetime a refresh gives when it names none (E2B's default).
const DEFAULT_REFRESH_SECONDS: i64 = 15;
const MAX_REFRESH_SECONDS: i64 = 3600;
/// The account commands run as unless the SDK names one, as in E2B's
/// templates.
const DEFAULT_USER: &str = "user";

pub(super) fn proto_time(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn internal(context: &str) -> impl FnOnce(getrandom::Error) -> ApiError + '_ {
    move |e| ApiError::Internal(format!("{context}: {e}"))
}

/// The caller's sandbox `id`; another team's is as absent as a missing one.
pub async fn owned_sandbox(app: &AppState, caller: &Caller, id: &str) -> ApiResult<SandboxRecord> {
    match app.store.sandbox(id).await? {
        Some(record) if record.team_id == caller.team.team_id => Ok(record),
        _ => Err(ApiError::sandbox_not_found(id)),
    }
}

pub fn created(app: &AppState, record: &SandboxRecord) -> SandboxCreated {
    SandboxCreated {
        template_id: record.template_id.clone(),
        sandbox_id: record.sandbox_id.clone(),
        client_id: record.client_id.clone(),
        envd_version: record.envd_version.clone(),
        envd_access_token: record.envd_access_token.clone(),
        traffic_access_token: record.traffic_access_token.clone(),
        domain: app.config.domain.clone(),
        alias: record.alias.clone(),
    }
}

pub async fn create_v1(
    state: State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewSandbox>,
) -> Response {
    create(state, caller, body).await
}

pub async fn create_v2(
    state: State<Arc<AppState>>,
    caller: Caller,
    JsonBody(mut body): JsonBody<NewSandbox>,
) -> Response {
    // v2 sandboxes are always secured.
    body.secure = None;
    create(state, caller, JsonBody(body)).await
}

/// Runs the create in a task of its own, so that a client that gives up
/// (its request timeout is shorter than a slow boot) cannot stop it between
/// the node's create and the row: it finishes either way.
async fn create(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<NewSandbox>,
) -> Response {
    // In the request's span, so its log lines carry the request id.
    let task = tokio::spawn(
        crate::request_id::carried(async move { create_sandbox(&app, &caller, body).await })
            .in_current_span(),
    );
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(ApiError::Internal(format!("the create task failed: {e}"))),
    };
    match result {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(error) => {
            let busy = error.status() == StatusCode::SERVICE_UNAVAILABLE;
            let mut response = error.into_response();
            if busy {
                // The SDKs retry a 503; a create the node may have begun
                // must not be repeated behind the caller's back.
                response
                    .headers_mut()
                    .insert("should-retry", HeaderValue::from_static("false"));
            }
            response
        }
    }
}

/// Settings hearth accepts but would not enforce are refused, so that a
/// caller never believes a sandbox is confined when it is not.
fn refuse_unsupported(body: &NewSandbox) -> ApiResult<()> {
    let mut unsupported = Vec::new();
    if body.auto_pause_memory == Some(false) && body.auto_resume.as_ref().is_some_and(|r| r.enabled)
    {
        return Err(ApiError::BadRequest(
            "autoResume cannot be combined with autoPauseMemory: false: a filesystem-only \
             pause is resumed with a connect"
                .into(),
        ));
    }
    if body
        .volume_mounts
        .as_ref()
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        unsupported.push("volumeMounts");
    }
    if let Some(network) = &body.network {
        unsupported.extend(network.unsupported());
        // Checked here, so the client learns which one; the node checks
        // again, but its words stay in the log.
        if let Some(bad) = network.invalid_cidr() {
            return Err(ApiError::BadRequest(format!(
                "'{bad}' is not an IPv4 address or CIDR"
            )));
        }
        if let Some(why) = network.invalid_mask() {
            return Err(ApiError::BadRequest(why.into()));
        }
    }
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "not supported by hearth: {}",
            unsupported.join(", ")
        )))
    }
}

/// How long traffic resumes a sandbox for: its own timeout, but (as E2B
/// does) no less than five minutes, within the configured maximum.
fn auto_resume_secs(config: &crate::config::ApiConfig, timeout: Duration) -> i64 {
    let secs = timeout.max(MIN_AUTO_RESUME).min(config.max_timeout);
    i64::try_from(secs.as_secs()).unwrap_or(i64::MAX)
}

/// The least a resume by traffic runs a sandbox for.
const MIN_AUTO_RESUME: Duration = Duration::from_secs(300);

pub(super) async fn create_sandbox(
    app: &AppState,
    caller: &Caller,
    body: NewSandbox,
) -> ApiResult<SandboxCreated> {
    let timeout = app.config.timeout(body.timeout)?;
    refuse_unsupported(&body)?;
    let resolved = super::resolve::resolve(app, caller, &body.template_id).await?;
    let template = &resolved.template;
    // Creates in flight count against the limit, or concurrent creates
    // would each see room for themselves.
    let team_id = &caller.team.team_id;
    let admitted = app
        .starting
        .admit(
            team_id,
            caller.team.max_sandboxes,
            app.store.count_sandboxes_of(team_id),
        )
        .await?;
    let network = body.network.clone().unwrap_or_default();
    let allow_internet = body.allow_internet_access.unwrap_or(true);
    let sandbox_id = secrets::sandbox_id().map_err(internal("sandbox id"))?;
    let envd_access_token = if body.secure == Some(false) {
        None
    } else {
        Some(secrets::access_token().map_err(internal("access token"))?)
    };
    let traffic_access_token = if network.allow_public_traffic == Some(false) {
        Some(secrets::access_token().map_err(internal("access token"))?)
    } else {
        None
    };
    let alias = resolved
        .alias
        .clone()
        .or_else(|| template.aliases.first().cloned());
    let started_at = now_ms();
    let end_at = started_at + millis(timeout);
    // A built template's files are on the node that built it; a template
    // every node has (`base`) goes where there is most room.
    let deadlines = &app.config.node_deadlines;
    let node = match resolved.node() {
        Some(name) => app.nodes.get(name)?,
        None => app.nodes.place(deadlines.probe).await?,
    };
    let config = SandboxConfig {
        template_id: template.template_id.clone(),
        // Empty for a node's own template: its current build there.
        build_id: if resolved.build.is_some() {
            resolved.build_id().to_owned()
        } else {
            String::new()
        },
        sandbox_id: sandbox_id.clone(),
        env_vars: body
            .env_vars
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        metadata: body
            .metadata
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        alias: alias.clone().unwrap_or_default(),
        envd_version: resolved.envd_version().to_owned(),
        vcpu: 0,
        ram_mb: 0,
        team_id: caller.team.team_id.clone(),
        envd_access_token: envd_access_token.clone(),
        execution_id: secrets::uuid(),
        allow_internet_access: Some(allow_internet),
        network: Some(SandboxNetworkConfig {
            egress: Some(SandboxNetworkEgressConfig {
                allowed_cidrs: network.allow_out.clone(),
                denied_cidrs: network.deny_out.clone(),
            }),
        }),
        default_user: DEFAULT_USER.into(),
    };
    let request = call_within(
        SandboxCreateRequest {
            sandbox: Some(config),
            start_time: Some(proto_time(started_at)),
            end_time: Some(proto_time(end_at + millis(NODE_GRACE))),
        },
        deadlines.create,
    );
    let mut client = node.sandboxes();
    let response = match bounded(deadlines.create, client.create(request)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            if matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unavailable
            ) {
                // The node may have started it anyway; it must not run on
                // unseen. A node still starting it undoes the create itself
                // once it sees its caller gone; reconciliation catches the
                // rest.
                let _ = delete_on_node(node, &sandbox_id).await;
            }
            return Err(status.into());
        }
    };
    let record = SandboxRecord {
        sandbox_id: sandbox_id.clone(),
        team_id: caller.team.team_id.clone(),
        template_id: template.template_id.clone(),
        alias,
        build_id: response.build_id,
        node: node.name.clone(),
        client_id: response.client_id,
        host_address: response.host_address,
        envd_version: resolved.envd_version().to_owned(),
        envd_access_token,
        traffic_access_token,
        allow_internet,
        network: serde_json::to_value(&network).unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
        cpu_count: response.vcpu,
        memory_mb: response.ram_mb,
        disk_size_mb: resolved.disk_size_mb(),
        started_at,
        end_at,
        paused: false,
        paused_memory: true,
        auto_pause: body.auto_pause,
        auto_pause_memory: body.auto_pause_memory != Some(false),
        auto_resume_secs: body
            .auto_resume
            .is_some_and(|r| r.enabled)
            .then(|| auto_resume_secs(&app.config, timeout)),
    };
    // Written under the team's gate, so that the row replaces the create
    // in flight in one step for the team's limit.
    if let Err(error) = admitted.finish(app.store.insert_sandbox(&record)).await {
        // No row, so no VM either: a failed create leaves nothing behind.
        let _ = delete_on_node(node, &sandbox_id).await;
        return Err(error.into());
    }
    if let Err(error) = app.store.template_spawned(&template.template_id).await {
        tracing::warn!(%error, "counting a template spawn failed");
    }
    tracing::info!(sandbox = %record.sandbox_id, team = %record.team_id, node = %record.node, "sandbox created");
    Ok(created(app, &record))
}

/// Applies `update` on the sandbox's node. A node that no longer has the
/// sandbox means it died: it is forgotten and the caller gets a 404.
async fn update_on_node(
    app: &AppState,
    record: &SandboxRecord,
    update: SandboxUpdateRequest,
) -> ApiResult<()> {
    let node = app.nodes.get(&record.node)?;
    match node.sandboxes().update(call(update)).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => {
            forget(app, &record.sandbox_id).await?;
            Err(ApiError::sandbox_not_found(&record.sandbox_id))
        }
        Err(status) => Err(status.into()),
    }
}

/// Sets the sandbox's end in the store (only while it still exists, so a
/// sandbox killed meanwhile is a 404) and then on its node.
async fn set_end(app: &AppState, record: &SandboxRecord, end_at: i64) -> ApiResult<()> {
    if !app
        .store
        .set_sandbox_end(&record.sandbox_id, end_at)
        .await?
    {
        return Err(ApiError::sandbox_not_found(&record.sandbox_id));
    }
    update_on_node(
        app,
        record,
        SandboxUpdateRequest {
            sandbox_id: record.sandbox_id.clone(),
            end_time: Some(proto_time(end_at + millis(NODE_GRACE))),
            egress: None,
            allow_internet_access: None,
        },
    )
    .await
}

/// `POST /sandboxes/{id}/connect` and v2: a running sandbox's end is only
/// extended (never shortened), 200; a paused one is resumed, 201. Either
/// way the answer says how to reach it.
pub async fn connect(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<ConnectSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxCreated>)> {
    let mut record = owned_sandbox(&app, &caller, &id).await?;
    if record.paused {
        // `memory: false` boots the guest again from its disk.
        let resumed = super::pausing::resume_paused(
            &app,
            &id,
            caller.team.max_sandboxes,
            body.timeout,
            body.memory == Some(false),
        )
        .await?;
        match resumed {
            Resumed::Now(resumed) => {
                return Ok((StatusCode::CREATED, Json(created(&app, &resumed))));
            }
            // Resumed by another request meanwhile: extended as any.
            Resumed::Running(now) => record = now,
        }
    }
    if body.timeout.is_some() {
        let timeout = app.config.timeout(body.timeout)?;
        let end_at = now_ms() + millis(timeout);
        if end_at > record.end_at {
            set_end(&app, &record, end_at).await?;
            record.end_at = end_at;
        }
    }
    Ok((StatusCode::OK, Json(created(&app, &record))))
}

pub async fn set_timeout(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<TimeoutRequest>,
) -> ApiResult<StatusCode> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let timeout = app.config.timeout(Some(body.timeout))?;
    set_end(&app, &record, now_ms() + millis(timeout)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refresh(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let seconds = body.duration.unwrap_or(DEFAULT_REFRESH_SECONDS);
    if !(0..=MAX_REFRESH_SECONDS).contains(&seconds) {
        return Err(ApiError::BadRequest(format!(
            "duration must be 0 to {MAX_REFRESH_SECONDS} seconds, got {seconds}"
        )));
    }
    let end_at = now_ms() + seconds * 1000;
    if end_at > record.end_at {
        set_end(&app, &record, end_at).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn update_network(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<NetworkUpdate>,
) -> ApiResult<StatusCode> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let unsupported = body.unsupported();
    if !unsupported.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "not supported by hearth: {}",
            unsupported.join(", ")
        )));
    }
    let lists = body.allow_out.iter().chain(&body.deny_out).flatten();
    if let Some(bad) = crate::model::first_invalid_cidr(lists) {
        return Err(ApiError::BadRequest(format!(
            "'{bad}' is not an IPv4 address or CIDR"
        )));
    }
    let mut network: NetworkConfig =
        serde_json::from_value(record.network.clone()).unwrap_or_default();
    if let Some(allow_out) = body.allow_out {
        network.allow_out = allow_out;
    }
    if let Some(deny_out) = body.deny_out {
        network.deny_out = deny_out;
    }
    let allow_internet = body.allow_internet_access.unwrap_or(record.allow_internet);
    update_on_node(
        &app,
        &record,
        SandboxUpdateRequest {
            sandbox_id: id.clone(),
            end_time: None,
            egress: Some(SandboxNetworkEgressConfig {
                allowed_cidrs: network.allow_out.clone(),
                denied_cidrs: network.deny_out.clone(),
            }),
            allow_internet_access: Some(allow_internet),
        },
    )
    .await?;
    let value = serde_json::to_value(&network).unwrap_or_default();
    if !app
        .store
        .set_sandbox_network(&id, allow_internet, &value)
        .await?
    {
        return Err(ApiError::sandbox_not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets a sandbox: its row and its proxy connections.
pub async fn forget(app: &AppState, sandbox_id: &str) -> ApiResult<bool> {
    let existed = app.store.delete_sandbox(sandbox_id).await?;
    app.upstream.forget(sandbox_id);
    Ok(existed)
}

/// Deletes a sandbox on `node`; one the node no longer has is gone already.
pub async fn delete_on_node(node: &Node, sandbox_id: &str) -> ApiResult<()> {
    match node
        .sandboxes()
        .delete(call(SandboxDeleteRequest {
            sandbox_id: sandbox_id.to_owned(),
            reason: StopReason::Requested.into(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(status.into()),
    }
}

/// Kills a sandbox on its node and forgets it.
pub async fn remove(app: &AppState, record: &SandboxRecord) -> ApiResult<()> {
    // A node that left the cluster took its VMs with it.
    if let Some(node) = app.nodes.find(&record.node) {
        delete_on_node(node, &record.sandbox_id).await?;
    }
    forget(app, &record.sandbox_id).await?;
    Ok(())
}

pub async fn kill(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    remove(&app, &record).await?;
    tracing::info!(sandbox = %id, "sandbox killed");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn detail(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<Json<crate::model::SandboxDetail>> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    Ok(Json(crate::model::SandboxDetail {
        listed: super::listing::listed(&record),
        envd_access_token: record.envd_access_token.clone(),
        allow_internet_access: Some(record.allow_internet),
        domain: app.config.domain.clone(),
        network: record.network.clone(),
        lifecycle: serde_json::json!({
            "autoResume": record.auto_resume_secs.is_some(),
            "onTimeout": if record.auto_pause { "pause" } else { "kill" },
        }),
    }))
}
