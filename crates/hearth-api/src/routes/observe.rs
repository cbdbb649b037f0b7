//! A sandbox's metrics (`GET /sandboxes/{id}/metrics`,
//! `GET /sandboxes/metrics`): the series its node sampled from its envd every
//! second, asked of the node over gRPC; the control plane never reads the
//! guest itself. Readable by the sandbox's team while it exists and for a
//! while after it ended.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use hearth_proto::orchestrator::{GuestMetricSample, SandboxMetricSeriesRequest};

use super::sandbox_logs::{history_node, kept_or_nothing, non_negative};
use super::sandboxes::owned_sandbox;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathParam, QueryPairs};
use crate::model::{SandboxMetric, timestamp};
use crate::nodes::call;
use crate::state::AppState;

const MAX_IDS: usize = 100;

/// A sample as E2B's `SandboxMetric`.
fn metric(sample: &GuestMetricSample) -> SandboxMetric {
    let bytes = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    SandboxMetric {
        timestamp: timestamp(sample.at_secs.saturating_mul(1000)),
        timestamp_unix: sample.at_secs,
        cpu_count: i64::from(sample.cpu_count),
        // The CLI prints it as it comes.
        cpu_used_pct: (sample.cpu_used_pct * 100.0).round() / 100.0,
        mem_used: bytes(sample.mem_used),
        mem_total: bytes(sample.mem_total),
        mem_cache: bytes(sample.mem_cache),
        disk_used: bytes(sample.disk_used),
        disk_total: bytes(sample.disk_total),
    }
}

/// The node's samples of sandbox `id`; none when it keeps none (any more).
async fn samples(
    app: &AppState,
    node: &str,
    request: SandboxMetricSeriesRequest,
) -> ApiResult<Vec<GuestMetricSample>> {
    let node = app.nodes.get(node)?;
    Ok(kept_or_nothing(node.sandboxes().metric_series(call(request)).await)?.samples)
}

/// `GET /sandboxes/{id}/metrics`: the samples from `start` to `end` (Unix
/// seconds, inclusive; from the first and to the last when left out),
/// oldest first.
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
    query: QueryPairs,
) -> ApiResult<Json<Vec<SandboxMetric>>> {
    let start = non_negative(&query, "start")?;
    let end = non_negative(&query, "end")?;
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid time range for metrics: start {start} is after end {end}"
        )));
    }
    let node = history_node(&app, &caller, &id).await?;
    let samples = samples(
        &app,
        &node,
        SandboxMetricSeriesRequest {
            sandbox_id: id,
            start_secs: start,
            end_secs: end,
            latest_only: false,
        },
    )
    .await?;
    Ok(Json(samples.iter().map(metric).collect()))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the newest sample of each of
/// the caller's sandboxes; unknown ones and those without samples are left
/// out.
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
            "Too many sandboxes requested, maximum is {MAX_IDS}, got {}",
            ids.len()
        )));
    }
    let latest = ids.into_iter().map(|id| {
        let (app, caller) = (&app, &caller);
        async move {
            let record = owned_sandbox(app, caller, id).await.ok()?;
            let request = SandboxMetricSeriesRequest {
                sandbox_id: id.to_owned(),
                latest_only: true,
                ..Default::default()
            };
            let samples = samples(app, &record.node, request).await.ok()?;
            Some((id.to_owned(), metric(samples.last()?)))
        }
    });
    let sandboxes: BTreeMap<String, SandboxMetric> = futures::future::join_all(latest)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(Json(serde_json::json!({ "sandboxes": sandboxes })))
}
