//! A sandbox's logs (`GET /sandboxes/{id}/logs`, `GET /v2/sandboxes/{id}/logs`),
//! kept by its node: envd's lines, the console's and the node's events, each a
//! JSON object (`line`), which is what the `e2b` CLI parses. Readable by the
//! sandbox's team while it exists and for a while after it ended.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use hearth_proto::orchestrator::{LogLevel, SandboxLogLine, SandboxLogsRequest};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathParam, QueryPairs};
use crate::model::timestamp;
use crate::nodes::call;
use crate::state::AppState;
use crate::store::now_ms;

/// How far back logs are read by default (E2B's window).
const WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
const DEFAULT_LIMIT: i64 = 1000;
/// v2's largest `limit`.
const MAX_V2_LIMIT: i64 = 1000;
/// v2's longest `search`.
const MAX_SEARCH_CHARS: usize = 256;

/// The node of a sandbox whose logs and metrics the caller may read: one
/// of its team's that exists or ended lately.
pub(super) async fn history_node(app: &AppState, caller: &Caller, id: &str) -> ApiResult<String> {
    let team = &caller.team.team_id;
    if let Some(record) = app.store.sandbox(id).await? {
        return if &record.team_id == team {
            Ok(record.node)
        } else {
            Err(ApiError::sandbox_not_found(id))
        };
    }
    match app.store.ended_sandbox(id).await? {
        Some(ended) if &ended.team_id == team => Ok(ended.node),
        _ => Err(ApiError::sandbox_not_found(id)),
    }
}

/// The lines the node has; none when it kept no log (any more).
async fn lines(
    app: &AppState,
    node: &str,
    request: SandboxLogsRequest,
) -> ApiResult<Vec<SandboxLogLine>> {
    let node = app.nodes.get(node)?;
    Ok(kept_or_nothing(node.sandboxes().logs(call(request)).await)?.lines)
}

/// A node's answer about what it keeps of a sandbox: an empty one when it
/// keeps nothing (any more).
pub(super) fn kept_or_nothing<T: Default>(
    answer: Result<tonic::Response<T>, tonic::Status>,
) -> ApiResult<T> {
    match answer {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(T::default()),
        Err(status) => Err(status.into()),
    }
}

/// Query parameter `name` as an integer of at least zero, if present.
pub(super) fn non_negative(query: &QueryPairs, name: &str) -> ApiResult<Option<i64>> {
    match query.int(name)? {
        Some(value) if value < 0 => Err(ApiError::BadRequest(format!(
            "{name} must not be negative, got {value}"
        ))),
        value => Ok(value),
    }
}

fn as_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A line's level as one of E2B's four; a missing or unknown one is info.
fn level_name(level: &str) -> &'static str {
    match level {
        "debug" | "trace" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => "info",
    }
}

/// A line as a `SandboxLogEntry`: its `message` and `level` keys, and its
/// other scalar keys as strings (`fields`).
fn entry(line: &SandboxLogLine) -> Value {
    let object = match serde_json::from_str::<Value>(&line.line) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let level = level_name(object.get("level").and_then(Value::as_str).unwrap_or(""));
    let message = object.get("message").and_then(Value::as_str).unwrap_or("");
    let fields: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| *key != "message" && *key != "level")
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Null | Value::Array(_) | Value::Object(_) => return None,
            };
            Some((key.clone(), Value::String(text)))
        })
        .collect();
    serde_json::json!({
        "timestamp": timestamp(line.at_ms),
        "level": level,
        "message": message,
        "fields": fields,
    })
}

/// `GET /sandboxes/{id}/logs` (`SandboxLogs`): oldest first from `start`
/// (Unix ms, inclusive; default a week ago), at most `limit` (default 1000).
pub async fn logs_v1(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let start = non_negative(&query, "start")?;
    let limit = non_negative(&query, "limit")?.unwrap_or(DEFAULT_LIMIT);
    let node = history_node(&app, &caller, &id).await?;
    let now = now_ms();
    let lines = lines(
        &app,
        &node,
        SandboxLogsRequest {
            sandbox_id: id,
            start_ms: Some(start.unwrap_or(now - WINDOW_MS)),
            end_ms: None,
            limit: as_u32(limit),
            ..Default::default()
        },
    )
    .await?;
    let logs: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::json!({ "timestamp": timestamp(line.at_ms), "line": line.line }))
        .collect();
    let entries: Vec<Value> = lines.iter().map(entry).collect();
    Ok(Json(
        serde_json::json!({ "logs": logs, "logEntries": entries }),
    ))
}

fn min_level(query: &QueryPairs) -> ApiResult<LogLevel> {
    Ok(match query.get("level") {
        None => LogLevel::Unspecified,
        Some("debug") => LogLevel::Debug,
        Some("info") => LogLevel::Info,
        Some("warn") => LogLevel::Warn,
        Some("error") => LogLevel::Error,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "level must be one of debug, info, warn, error; got '{other}'"
            )));
        }
    })
}

/// `GET /v2/sandboxes/{id}/logs` (`SandboxLogsV2Response`): newest first
/// unless `direction=forward`; `cursor` (Unix ms) is where the week-long
/// window starts (forward) or ends (backward); `level` is a minimum and
/// `search` a case-sensitive part of the message.
pub async fn logs_v2(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let cursor = non_negative(&query, "cursor")?;
    let limit = non_negative(&query, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_V2_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be at most {MAX_V2_LIMIT}, got {limit}"
        )));
    }
    let backward = match query.get("direction") {
        None | Some("backward") => true,
        Some("forward") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "direction must be forward or backward; got '{other}'"
            )));
        }
    };
    let search = query.get("search").map(str::to_owned);
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "search must be at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    let min_level = min_level(&query)?;
    let node = history_node(&app, &caller, &id).await?;
    let now = now_ms();
    let oldest = now - WINDOW_MS;
    let (start, end) = match cursor {
        None => (oldest, now),
        Some(cursor) if backward => (cursor - WINDOW_MS, cursor),
        Some(cursor) => (cursor, cursor.saturating_add(WINDOW_MS)),
    };
    let mut request = SandboxLogsRequest {
        sandbox_id: id,
        start_ms: Some(start.max(oldest)),
        end_ms: Some(end),
        limit: as_u32(limit),
        backward,
        search,
        ..Default::default()
    };
    request.set_min_level(min_level);
    let lines = lines(&app, &node, request).await?;
    let logs: Vec<Value> = lines.iter().map(entry).collect();
    Ok(Json(serde_json::json!({ "logs": logs })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_has_the_lines_message_level_and_scalar_fields() {
        let line = SandboxLogLine {
            at_ms: 1_700_000_000_123,
            line: r#"{"level":"warning","logger":"process","message":"Process with pid 7 ended","pid":7,"exited":true,"result":{"a":1}}"#.into(),
        };
        let entry = entry(&line);
        assert_eq!(entry["level"], "warn");
        assert_eq!(entry["message"], "Process with pid 7 ended");
        assert_eq!(entry["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(
            entry["fields"],
            serde_json::json!({"logger": "process", "pid": "7", "exited": "true"})
        );
    }
}
