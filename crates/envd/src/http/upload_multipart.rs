//! Multipart `POST /files`: one part per file, within [`UploadLimits`], all
//! or nothing (see [`super::staging`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::StatusCode;
use tokio_util::io::StreamReader;

use super::bounded_body::{BodyError, BoundedBody, HeaderBudget};
use super::error::ApiError;
use super::files_access::{FilesQuery, target_path};
use super::staging::{PartFile, PendingUpload};
use super::upload::{WrittenEntry, replace_metadata, stream_into, written};
use super::upload_limits::UploadLimits;
use crate::users::User;

/// What precedes a part's headers besides the boundary itself: `--`, the
/// CRLF after it and some transport padding.
const BOUNDARY_OVERHEAD: usize = 16;

/// Runs blocking work with the pending upload and hands it back. Dropped
/// on the way (the task failed), the upload removes what it created.
async fn with_pending<T: Send + 'static>(
    pending: PendingUpload,
    work: impl FnOnce(&mut PendingUpload) -> Result<T, ApiError> + Send + 'static,
) -> Result<(PendingUpload, T), ApiError> {
    let (pending, result) = tokio::task::spawn_blocking(move || {
        let mut pending = pending;
        let result = work(&mut pending);
        (pending, result)
    })
    .await
    .map_err(|e| ApiError::internal(format!("preparing the upload: {e}")))?;
    Ok((pending, result?))
}

pub async fn receive_multipart<S>(
    user: &User,
    query: &FilesQuery,
    stream: S,
    boundary: String,
    metadata: &HashMap<String, String>,
    limits: &UploadLimits,
    staging_dir: PathBuf,
) -> Result<Vec<WrittenEntry>, ApiError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    let budget = HeaderBudget::new(limits.max_part_header_bytes);
    let body = BoundedBody::new(stream, budget.clone());
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().per_field(limits.max_part_bytes));
    let overhead = boundary.len() + BOUNDARY_OVERHEAD;
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut pending = PendingUpload::new(staging_dir);
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut parts = 0usize;
    loop {
        budget.open(overhead);
        let next = multipart.next_field().await;
        budget.close();
        let Some(mut field) = next.map_err(multipart_error)? else {
            break;
        };
        parts += 1;
        if parts > limits.max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the upload has more than {} parts", limits.max_parts),
            ));
        }
        // The path query names the file of a single-file upload; otherwise
        // each part's raw filename (directories included) is its target.
        let name = match (&query.path, field.file_name()) {
            (Some(path), _) if entries.is_empty() => path.clone(),
            (Some(_), _) => {
                return Err(ApiError::bad_request(
                    "the path query parameter allows only one file per upload",
                ));
            }
            (None, Some(file_name)) => file_name.to_string(),
            (None, None) => {
                // Read past it here, not while waiting for the next part's
                // headers, where it would count against their budget.
                while field.chunk().await.map_err(multipart_error)?.is_some() {}
                continue;
            }
        };
        let target = target_path(user, &name)?;
        if !seen.insert(target.clone()) {
            return Err(ApiError::bad_request(format!(
                "path '{}' appears more than once in the upload",
                target.display()
            )));
        }
        let (next_pending, PartFile { file, staged }) = {
            let target = target.clone();
            let user = user.clone();
            with_pending(pending, move |p| p.open_part(&target, &user)).await?
        };
        pending = next_pending;
        let reader = StreamReader::new(field.map_err(std::io::Error::other));
        stream_into(file, reader, &target).await?;
        if !staged {
            replace_metadata(&target, metadata)?;
        }
        entries.push(written(&target, metadata.clone()));
    }
    if entries.is_empty() {
        return Err(ApiError::bad_request(
            "the multipart upload contains no file",
        ));
    }
    let user = user.clone();
    let metadata = metadata.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        for target in pending.commit(&user)? {
            replace_metadata(&target, &metadata)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(format!("finishing the upload: {e}")))??;
    Ok(entries)
}

/// Maps a multipart parsing failure (also one reported while a part's data
/// is read) to its status: a limit is 413, a malformed body 400.
pub fn multipart_error(error: multer::Error) -> ApiError {
    match error {
        multer::Error::FieldSizeExceeded { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a part of the upload is larger than {limit} bytes"),
        ),
        multer::Error::StreamReadFailed(source) => match source.downcast::<BodyError>() {
            Ok(body_error) => match *body_error {
                error @ BodyError::HeadersTooLong { .. } => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
                }
                error @ BodyError::Read(_) => ApiError::bad_request(error.to_string()),
            },
            Err(other) => ApiError::bad_request(format!("reading the request body: {other}")),
        },
        other => ApiError::bad_request(format!("invalid multipart body: {other}")),
    }
}
