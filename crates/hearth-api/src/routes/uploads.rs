//! `GET /templates/{id}/files/{hash}` hands out an upload URL for a COPY
//! step's archive (or says it is stored already); `PUT` on that URL stores
//! it. The PUT carries no API key, as the SDKs send none to the presigned
//! URLs E2B gives: the URL's signature and expiry are its authority.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathPair, QueryPairs};
use crate::model::builds::FileUpload;
use crate::state::AppState;
use crate::uploads::{UploadError, is_hash};

fn check_hash(hash: &str) -> ApiResult<()> {
    if is_hash(hash) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid files hash '{hash}': expected 64 lowercase hex digits (SHA-256)"
        )))
    }
}

/// Where clients reach this API: the configured URL, else the request's
/// own host over plain HTTP.
fn base_url(app: &AppState, headers: &HeaderMap, uri: &Uri) -> ApiResult<String> {
    if let Some(url) = &app.config.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("the request has no Host header to build an upload URL".into())
        })?;
    Ok(format!("http://{host}"))
}

/// `GET /templates/{templateID}/files/{hash}` → 201 `{present, url?}`.
pub async fn link(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathPair(template_ref, hash): PathPair,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<(StatusCode, Json<FileUpload>)> {
    check_hash(&hash)?;
    let template = super::resolve::owned(&app, &caller, &template_ref).await?;
    let id = &template.template_id;
    if app.uploads.present(id, &hash).await {
        return Ok((
            StatusCode::CREATED,
            Json(FileUpload {
                present: true,
                url: None,
            }),
        ));
    }
    let ttl = i64::try_from(app.config.upload_url_ttl.as_secs()).unwrap_or(i64::MAX);
    let expires = chrono::Utc::now().timestamp().saturating_add(ttl);
    let signature = app.uploads.sign(id, &hash, expires);
    let url = format!(
        "{}/templates/{id}/files/{hash}/upload?expires={expires}&signature={signature}",
        base_url(&app, &headers, &uri)?
    );
    Ok((
        StatusCode::CREATED,
        Json(FileUpload {
            present: false,
            url: Some(url),
        }),
    ))
}

fn upload_error(error: UploadError) -> ApiError {
    match error {
        UploadError::TooLong(_)
        | UploadError::TooShort { .. }
        | UploadError::NotAnArchive
        | UploadError::NoPlace(..)
        | UploadError::Body(_) => ApiError::BadRequest(error.to_string()),
        UploadError::TimedOut(_) => ApiError::RequestTimeout(error.to_string()),
        UploadError::Io(e) => ApiError::Internal(format!("storing an upload: {e}")),
    }
}

/// `PUT /templates/{templateID}/files/{hash}/upload?expires&signature`:
/// the archive itself, streamed to disk.
pub async fn upload(
    State(app): State<Arc<AppState>>,
    PathPair(template_id, hash): PathPair,
    query: QueryPairs,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    check_hash(&hash)?;
    let expires = query.int("expires").ok().flatten();
    let signature = query.get("signature").unwrap_or_default();
    let Some(expires) = expires.filter(|e| app.uploads.verify(&template_id, &hash, *e, signature))
    else {
        return Err(ApiError::Forbidden(
            "invalid upload URL signature: ask GET /templates/{templateID}/files/{hash} for a URL"
                .into(),
        ));
    };
    if chrono::Utc::now().timestamp() > expires {
        return Err(ApiError::Forbidden(
            "the upload URL has expired: ask GET /templates/{templateID}/files/{hash} for a new one"
                .into(),
        ));
    }
    let Some(length) = headers.get(header::CONTENT_LENGTH) else {
        return Err(ApiError::LengthRequired(
            "an upload needs a Content-Length header".into(),
        ));
    };
    let length: u64 = length
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest("invalid Content-Length header".into()))?;
    let max = app.config.max_upload_bytes;
    if length > max {
        return Err(ApiError::TooLarge(format!(
            "the upload has {length} bytes; at most {max} are taken"
        )));
    }
    // A template deleted since the URL was made takes no more files.
    match app.store.template(&template_id).await? {
        Some(t) if t.template_id == template_id => {}
        _ => return Err(ApiError::template_not_found(&template_id)),
    }
    app.uploads
        .receive(
            &template_id,
            &hash,
            length,
            body.into_data_stream(),
            app.config.upload_timeout,
        )
        .await
        .map_err(upload_error)?;
    tracing::info!(template = %template_id, %hash, bytes = length, "build files uploaded");
    let busy = app.builds.templates_in_flight();
    let pruned = app.uploads.prune(app.config.upload_cache_bytes, busy).await;
    if pruned > 0 {
        tracing::info!(pruned, "removed the least recently used uploads");
    }
    Ok(StatusCode::OK)
}
