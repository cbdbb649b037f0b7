//! What a sandbox is using (read from its envd) and what its console said
//! (kept by its node).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use hearth_proto::orchestrator::SandboxConsoleRequest;
use serde::Deserialize;

use super::sandboxes::owned_sandbox;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathParam, QueryPairs};
use crate::guest_read::{GuestReadError, METRICS_LIMIT, read_limited, within};
use crate::model::{SandboxMetric, timestamp};
use crate::nodes::call;
use crate::proxy::ENVD_PORT;
use crate::state::AppState;
use crate::store::{SandboxRecord, now_ms};

const MAX_IDS: usize = 100;
const DEFAULT_LOG_LIMIT: i64 = 1000;

/// envd's `GET /metrics` body.
#[derive(Debug, Deserialize)]
struct EnvdMetrics {
    ts: i64,
    cpu_count: i64,
    cpu_used_pct: f64,
    mem_total: i64,
    mem_used: i64,
    #[serde(default)]
    mem_cache: i64,
    disk_used: i64,
    disk_total: i64,
}

/// Asks the sandbox's envd for its metrics: the whole exchange under the
/// configured deadline and the body under [`METRICS_LIMIT`], since the
/// guest decides what comes back.
async fn sample(app: &AppState, record: &SandboxRecord) -> ApiResult<SandboxMetric> {
    let guest = |e: GuestReadError| ApiError::Guest {
        sandbox: record.sandbox_id.clone(),
        detail: format!("reading its metrics: {e}"),
    };
    let mut request = axum::http::Request::get(format!(
        "http://{}:{ENVD_PORT}/metrics",
        record.host_address
    ));
    if let Some(token) = &record.envd_access_token {
        request = request.header("x-access-token", token);
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(format!("a metrics request: {e}")))?;
    let exchange = async {
        let response = app
            .upstream
            .send(&record.sandbox_id, request)
            .await
            .map_err(|e| GuestReadError::Send(e.to_string()))?;
        if !response.status().is_success() {
            return Err(GuestReadError::Status(response.status()));
        }
        read_limited(response.into_body(), METRICS_LIMIT).await
    };
    let body = within(app.config.guest_read_timeout, exchange)
        .await
        .map_err(guest)?;
    let m: EnvdMetrics = serde_json::from_slice(&body).map_err(|e| ApiError::Guest {
        sandbox: record.sandbox_id.clone(),
        detail: format!("its metrics are not envd's JSON: {e}"),
    })?;
    // The guest's clock: a time past what milliseconds can hold is refused
    // rather than overflowing.
    let ms = m.ts.checked_mul(1000).ok_or_else(|| ApiError::Guest {
        sandbox: record.sandbox_id.clone(),
        detail: format!("its metrics' time {} is out of range", m.ts),
    })?;
    Ok(SandboxMetric {
        timestamp: timestamp(ms),
        timestamp_unix: m.ts,
        cpu_count: m.cpu_count,
        cpu_used_pct: m.cpu_used_pct,
        mem_used: m.mem_used,
        mem_total: m.mem_total,
        mem_cache: m.mem_cache,
        disk_used: m.disk_used,
        disk_total: m.disk_total,
    })
}

/// `GET /sandboxes/{id}/metrics`: a sample taken now, if it falls in the
/// asked `start`..`end` (Unix seconds).
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<Vec<SandboxMetric>>> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let start = query.int("start")?;
    let end = query.int("end")?;
    let metric = sample(&app, &record).await?;
    let inside = start.is_none_or(|s| metric.timestamp_unix >= s)
        && end.is_none_or(|e| metric.timestamp_unix <= e);
    Ok(Json(if inside { vec![metric] } else { Vec::new() }))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`.
pub async fn metrics_of_many(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let ids: Vec<&str> = query
        .get("sandbox_ids")
        .ok_or_else(|| ApiError::BadRequest("sandbox_ids is required".into()))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} sandbox_ids, got {}",
            ids.len()
        )));
    }
    // Unknown ids and sandboxes that do not answer are left out.
    let samples = ids.into_iter().map(|id| {
        let (app, caller) = (&app, &caller);
        async move {
            let record = owned_sandbox(app, caller, id).await.ok()?;
            let metric = sample(app, &record).await.ok()?;
            Some((id.to_owned(), metric))
        }
    });
    let sandboxes: BTreeMap<String, SandboxMetric> = futures::future::join_all(samples)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(Json(serde_json::json!({ "sandboxes": sandboxes })))
}

/// The console's lines, oldest first.
async fn console_lines(app: &AppState, record: &SandboxRecord) -> ApiResult<Vec<String>> {
    let node = app.nodes.get(&record.node)?;
    let console = node
        .sandboxes()
        .console(call(SandboxConsoleRequest {
            sandbox_id: record.sandbox_id.clone(),
        }))
        .await?
        .into_inner();
    Ok(String::from_utf8_lossy(&console.output)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

fn limit(query: &QueryPairs) -> ApiResult<usize> {
    let limit = query.int("limit")?.unwrap_or(DEFAULT_LOG_LIMIT);
    usize::try_from(limit)
        .map_err(|_| ApiError::BadRequest(format!("limit must not be negative, got {limit}")))
}

/// A console line as a `SandboxLogEntry`: the console has no levels or
/// fields, and its lines no times of their own.
fn log_entry(at: &str, line: &str) -> serde_json::Value {
    serde_json::json!({ "timestamp": at, "level": "info", "message": line, "fields": {} })
}

/// `GET /sandboxes/{id}/logs` (`SandboxLogs`).
pub async fn logs_v1(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let limit = limit(&query)?;
    let lines = console_lines(&app, &record).await?;
    let at = timestamp(now_ms());
    let tail = &lines[lines.len().saturating_sub(limit)..];
    let logs: Vec<_> = tail
        .iter()
        .map(|line| serde_json::json!({ "timestamp": at, "line": line }))
        .collect();
    let entries: Vec<_> = tail.iter().map(|line| log_entry(&at, line)).collect();
    Ok(Json(
        serde_json::json!({ "logs": logs, "logEntries": entries }),
    ))
}

/// `GET /v2/sandboxes/{id}/logs` (`SandboxLogsV2Response`).
pub async fn logs_v2(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let record = owned_sandbox(&app, &caller, &id).await?;
    let limit = limit(&query)?.min(1000);
    let search = query.get("search");
    let mut lines = console_lines(&app, &record).await?;
    lines.retain(|l| search.is_none_or(|s| l.contains(s)));
    if query.get("direction") == Some("backward") {
        lines.reverse();
    }
    let at = timestamp(now_ms());
    let logs: Vec<_> = lines
        .iter()
        .take(limit)
        .map(|line| log_entry(&at, line))
        .collect();
    Ok(Json(serde_json::json!({ "logs": logs })))
}
