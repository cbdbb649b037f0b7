//! A team's API keys and `GET /teams`. E2B manages keys with dashboard
//! logins; hearth has no logins, so a team's key manages its keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::model::{ApiKey, NewApiKey, timestamp};
use crate::state::AppState;
use crate::store::ApiKeyRecord;

/// Longest key name taken.
const MAX_NAME: usize = 200;

fn api_key(record: &ApiKeyRecord, key: Option<String>) -> ApiKey {
    let length = "e2b_".len() + 40;
    ApiKey {
        id: record.key_id.clone(),
        key,
        name: record.name.clone(),
        mask: serde_json::json!({
            "prefix": "e2b_",
            "valueLength": length,
            "maskedValuePrefix": record.key_prefix,
            "maskedValueSuffix": record.key_suffix,
        }),
        created_at: timestamp(record.created_at),
        created_by: None,
        last_used: record.last_used_at.map(timestamp),
    }
}

fn checked_name(name: &str) -> ApiResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "a key name must have 1 to {MAX_NAME} characters"
        )));
    }
    Ok(name)
}

/// `GET /teams`: the caller's team, with the key it presented.
pub async fn teams(caller: Caller) -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "teamID": caller.team.team_id,
        "name": caller.team.name,
        "apiKey": caller.presented,
        "isDefault": true,
    }]))
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let keys = app.store.api_keys(&caller.team.team_id).await?;
    Ok(Json(keys.iter().map(|k| api_key(k, None)).collect()))
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<NewApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKey>)> {
    let name = checked_name(&body.name)?;
    let (record, key) = app.store.create_api_key(&caller.team.team_id, name).await?;
    Ok((StatusCode::CREATED, Json(api_key(&record, Some(key)))))
}

pub async fn rename(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(key_id): PathParam,
    JsonBody(body): JsonBody<NewApiKey>,
) -> ApiResult<StatusCode> {
    let name = checked_name(&body.name)?;
    if !app
        .store
        .rename_api_key(&caller.team.team_id, &key_id, name)
        .await?
    {
        return Err(ApiError::NotFound(format!("API key '{key_id}' not found")));
    }
    Ok(StatusCode::OK)
}

pub async fn delete(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(key_id): PathParam,
) -> ApiResult<StatusCode> {
    if !app
        .store
        .delete_api_key(&caller.team.team_id, &key_id)
        .await?
    {
        return Err(ApiError::NotFound(format!("API key '{key_id}' not found")));
    }
    Ok(StatusCode::NO_CONTENT)
}
