//! A build's status and log, as the SDKs poll them: `…/status` pages the
//! log by position (`logsOffset`), `…/logs` by time (`cursor`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathPair, QueryPairs};
use crate::model::builds::{BuildInfo, BuildLogEntry, BuildStatusReason};
use crate::model::timestamp;
use crate::state::AppState;
use crate::store::{BuildLogRecord, BuildStatus, severity};

use super::template_builds::owned_build;

/// Log entries per page, at most (E2B's limit).
const MAX_LOG_PAGE: i64 = 100;

fn entry(record: &BuildLogRecord) -> BuildLogEntry {
    BuildLogEntry {
        timestamp: timestamp(record.timestamp),
        level: record.level.clone(),
        message: record.message.clone(),
        step: record.step.clone(),
    }
}

/// `level`: one of E2B's four; "this level and above".
fn level(query: &QueryPairs) -> ApiResult<&str> {
    match query.get("level") {
        None | Some("") => Ok("debug"),
        Some(level @ ("debug" | "info" | "warn" | "error")) => Ok(level),
        Some(other) => Err(ApiError::BadRequest(format!(
            "level must be debug, info, warn or error, got '{other}'"
        ))),
    }
}

fn limit(query: &QueryPairs) -> ApiResult<i64> {
    match query.int("limit")? {
        None => Ok(MAX_LOG_PAGE),
        Some(n) if n < 0 => Err(ApiError::BadRequest(format!(
            "limit must not be negative, got {n}"
        ))),
        Some(n) => Ok(n.min(MAX_LOG_PAGE)),
    }
}

/// `GET /templates/{templateID}/builds/{buildID}/status` →
/// `TemplateBuildInfo` with log entries from `logsOffset`.
pub async fn status(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathPair(template_ref, build_id): PathPair,
    query: QueryPairs,
) -> ApiResult<Json<BuildInfo>> {
    let (template, build) = owned_build(&app, &caller, &template_ref, &build_id).await?;
    let offset = query.int("logsOffset")?.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::BadRequest(format!(
            "logsOffset must not be negative, got {offset}"
        )));
    }
    let records = app
        .store
        .build_logs(&build.build_id, level(&query)?, offset, limit(&query)?)
        .await?;
    let entries: Vec<BuildLogEntry> = records.iter().map(entry).collect();
    let logs = entries
        .iter()
        .map(|e| format!("[{}] {}\n", e.timestamp, e.message))
        .collect();
    let reason = build
        .reason_message
        .clone()
        .filter(|_| build.status == BuildStatus::Error)
        .map(|message| BuildStatusReason {
            message,
            step: build.reason_step.clone(),
            // The failing step's warnings and errors among this page, as
            // E2B gives them.
            log_entries: build.reason_step.as_ref().map(|step| {
                entries
                    .iter()
                    .filter(|e| {
                        e.step.as_ref() == Some(step) && severity(&e.level) >= severity("warn")
                    })
                    .cloned()
                    .collect()
            }),
        });
    Ok(Json(BuildInfo {
        template_id: template.template_id,
        build_id: build.build_id,
        status: build.status.as_str(),
        logs,
        log_entries: entries,
        reason,
    }))
}

/// `GET /templates/{templateID}/builds/{buildID}/logs` →
/// `TemplateBuildLogsResponse`: entries from the time `cursor` (Unix ms),
/// `forward` (oldest first, the default) or `backward` (newest first).
pub async fn logs(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathPair(template_ref, build_id): PathPair,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let (_, build) = owned_build(&app, &caller, &template_ref, &build_id).await?;
    let cursor = query.int("cursor")?;
    if cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::BadRequest("cursor must not be negative".into()));
    }
    let forward = match query.get("direction") {
        None | Some("") | Some("forward") => true,
        Some("backward") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "direction must be forward or backward, got '{other}'"
            )));
        }
    };
    // hearth keeps one copy of a build's log: both sources read it.
    if let Some(source) = query.get("source")
        && !matches!(source, "" | "persistent" | "temporary")
    {
        return Err(ApiError::BadRequest(format!(
            "source must be persistent or temporary, got '{source}'"
        )));
    }
    let records = app
        .store
        .build_logs_at(
            &build.build_id,
            level(&query)?,
            cursor,
            forward,
            limit(&query)?,
        )
        .await?;
    let entries: Vec<BuildLogEntry> = records.iter().map(entry).collect();
    Ok(Json(serde_json::json!({ "logs": entries })))
}
