//! Who may use `/files` and as which user: the access token header or a
//! signed URL, and the `username` query parameter.

use std::path::PathBuf;

use http::HeaderMap;
use serde::Deserialize;

use super::access::{UNAUTHORIZED_MESSAGE, has_valid_token};
use super::error::ApiError;
use super::signature::{Operation, verify};
use crate::state::Envd;
use crate::users::{User, UserError, resolve_path};

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<i64>,
}

/// Checks the caller may perform `operation` and returns the acting user.
pub fn authorize(
    envd: &Envd,
    headers: &HeaderMap,
    query: &FilesQuery,
    operation: Operation,
) -> Result<User, ApiError> {
    if !has_valid_token(envd, headers) {
        let (Some(token), Some(signature)) =
            (envd.defaults().access_token, query.signature.as_deref())
        else {
            return Err(ApiError::unauthorized(UNAUTHORIZED_MESSAGE));
        };
        verify(
            signature,
            query.path.as_deref().unwrap_or(""),
            operation,
            query.username.as_deref().unwrap_or(""),
            &token,
            query.signature_expiration,
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    }
    envd.user(query.username.as_deref()).map_err(|e| match e {
        UserError::NotFound(_) => ApiError::unauthorized(format!("error looking up user: {e}")),
        UserError::Read { .. } => ApiError::internal(crate::rpc::full_text(&e)),
    })
}

/// Resolves a path given by the client for `user`.
pub fn target_path(user: &User, path: &str) -> Result<PathBuf, ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request("path must not be empty"));
    }
    Ok(resolve_path(path, &user.home))
}
