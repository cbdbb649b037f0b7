//! Listing a team's sandboxes: filters by state, metadata, template and
//! start time, and pages linked by the `X-Next-Token` header.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use percent_encoding::percent_decode_str;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, QueryPairs};
use crate::model::{ListedSandbox, timestamp};
use crate::state::AppState;
use crate::store::SandboxRecord;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 100;

pub fn listed(record: &SandboxRecord) -> ListedSandbox {
    ListedSandbox {
        template_id: record.template_id.clone(),
        sandbox_id: record.sandbox_id.clone(),
        client_id: record.client_id.clone(),
        alias: record.alias.clone(),
        started_at: timestamp(record.started_at),
        end_at: timestamp(record.end_at),
        cpu_count: record.cpu_count,
        memory_mb: record.memory_mb,
        disk_size_mb: record.disk_size_mb,
        state: if record.paused { "paused" } else { "running" },
        envd_version: record.envd_version.clone(),
        metadata: record.metadata.clone(),
    }
}

/// The `metadata` filter: a form-encoded string whose keys and values the
/// SDKs percent-encode once more.
fn metadata_filter(value: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    value
        .map(|v| {
            form_urlencoded::parse(v.as_bytes())
                .map(|(k, v)| (decode(&k), decode(&v)))
                .collect()
        })
        .unwrap_or_default()
}

fn matches_metadata(record: &SandboxRecord, wanted: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| record.metadata.get(k).is_some_and(|have| have == v))
}

/// `GET /sandboxes`: every running sandbox of the team, no pages.
pub async fn list_v1(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<Vec<ListedSandbox>>> {
    let wanted = metadata_filter(query.get("metadata"));
    let records = app.store.sandboxes_of(&caller.team.team_id).await?;
    Ok(Json(
        records
            .iter()
            .filter(|r| matches_metadata(r, &wanted))
            .map(listed)
            .collect(),
    ))
}

/// Where a page starts: after the sandbox that ended the previous one.
fn page_key(record: &SandboxRecord) -> String {
    format!("{}.{}", record.started_at, record.sandbox_id)
}

fn parse_page_key(token: &str) -> ApiResult<(i64, String)> {
    token
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .ok_or_else(|| ApiError::BadRequest(format!("invalid nextToken '{token}'")))
}

/// The `startedAfter` bound in Unix milliseconds. It is inclusive ("at or
/// after", as the SDKs document it) at the precision `startedAt` is
/// written in, milliseconds: finer digits are cut off, so a sandbox's own
/// `startedAt`, sent back in any precision, lists that sandbox.
fn started_after_ms(text: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::BadRequest(format!("invalid startedAfter '{text}': {e}")))
}

/// `GET /v2/sandboxes`.
pub async fn list_v2(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<Vec<ListedSandbox>>)> {
    let limit = query.int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    let states: Vec<&str> = query
        .get("state")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = states.iter().find(|s| !matches!(**s, "running" | "paused")) {
        return Err(ApiError::BadRequest(format!(
            "unknown state '{bad}': running or paused"
        )));
    }
    let want_running = states.is_empty() || states.contains(&"running");
    let want_paused = states.is_empty() || states.contains(&"paused");
    let ascending = match query.get("order") {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown order '{other}': asc or desc"
            )));
        }
    };
    let started_after = query
        .get("startedAfter")
        .map(started_after_ms)
        .transpose()?;
    let template = query.get("template");
    let after = query
        .get("nextToken")
        .filter(|t| !t.is_empty())
        .map(parse_page_key)
        .transpose()?;
    let wanted = metadata_filter(query.get("metadata"));

    let mut records: Vec<SandboxRecord> = app
        .store
        .sandboxes_of(&caller.team.team_id)
        .await?
        .into_iter()
        .filter(|r| if r.paused { want_paused } else { want_running })
        .filter(|r| matches_metadata(r, &wanted))
        .filter(|r| started_after.is_none_or(|t| r.started_at >= t))
        .filter(|r| template.is_none_or(|t| r.template_id == t || r.alias.as_deref() == Some(t)))
        .collect();
    let total = records.len();
    records.sort_by(|a, b| (a.started_at, &a.sandbox_id).cmp(&(b.started_at, &b.sandbox_id)));
    if !ascending {
        records.reverse();
    }
    if let Some((at, id)) = &after {
        let key = (*at, id.as_str());
        records.retain(|r| {
            let own = (r.started_at, r.sandbox_id.as_str());
            if ascending { own > key } else { own < key }
        });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut headers = HeaderMap::new();
    if records.len() > limit {
        records.truncate(limit);
        if let Some(last) = records.last()
            && let Ok(value) = HeaderValue::from_str(&page_key(last))
        {
            headers.insert("x-next-token", value);
        }
    }
    if want_running {
        headers.insert("x-total-running", HeaderValue::from(total));
    }
    Ok((headers, Json(records.iter().map(listed).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_filter_is_decoded_twice() {
        // What reaches the server for {"user id": "a&b=c", "k": "v"} once the
        // query string itself is decoded.
        let filter = metadata_filter(Some("user%2520id=a%2526b%253Dc&k=v"));
        assert_eq!(filter.get("user id").map(String::as_str), Some("a&b=c"));
        assert_eq!(filter.get("k").map(String::as_str), Some("v"));
        assert_eq!(filter.len(), 2);
    }

    #[test]
    fn started_after_is_cut_to_milliseconds() -> ApiResult<()> {
        // Python sends microseconds and an offset, JS milliseconds and `Z`.
        assert_eq!(
            started_after_ms("2024-01-02T03:04:05.678999+00:00")?,
            started_after_ms("2024-01-02T03:04:05.678Z")?
        );
        assert_eq!(started_after_ms("1970-01-01T00:00:01.5Z")?, 1500);
        assert!(started_after_ms("yesterday").is_err());
        Ok(())
    }

    #[test]
    fn page_keys_round_trip_and_reject_junk() -> ApiResult<()> {
        assert_eq!(parse_page_key("1700.abc")?, (1700, "abc".to_owned()));
        assert!(parse_page_key("abc").is_err());
        assert!(parse_page_key("x.abc").is_err());
        Ok(())
    }
}
