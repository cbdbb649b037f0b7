//! `POST /files`: writes uploaded files to disk as they stream in, from a
//! multipart form (one part per file, `upload_multipart.rs`) or a raw
//! octet-stream body.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::{HeaderMap, header};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::StreamReader;

use super::early_response::{close, drain_or_close};
use super::error::ApiError;
use super::files_access::{FilesQuery, authorize, target_path};
use super::signature::Operation;
use super::upload_multipart::{multipart_error, receive_multipart};
use crate::filesystem::entry::METADATA_XATTR_PREFIX;
use crate::filesystem::ownership::{chown, create_dirs};
use crate::state::{Envd, SharedEnvd};
use crate::users::User;

const METADATA_HEADER_PREFIX: &str = "x-metadata-";
/// Size of the buffer between the request body and the file.
const WRITE_BUFFER: usize = 1024 * 1024;

#[derive(Debug, Serialize, PartialEq)]
pub struct WrittenEntry {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, String>,
}

pub async fn upload(
    version: http::Version,
    State(envd): State<SharedEnvd>,
    headers: HeaderMap,
    Query(query): Query<FilesQuery>,
    body: Body,
) -> Response {
    // Refusals before any byte of the body was used: read the (small) rest
    // so the client can finish sending and see the answer.
    let plan = match plan(&envd, &headers, &query).await {
        Ok(plan) => plan,
        Err(error) => return drain_or_close(body, version, error.into_response()).await,
    };
    match receive(&envd, &query, plan, body).await {
        Ok(entries) => Json(entries).into_response(),
        // The body may be partly unread; don't let the client reuse the connection.
        Err(error) => close(version, error.into_response()),
    }
}

/// What an upload will do, decided from its headers alone.
struct UploadPlan {
    user: User,
    metadata: HashMap<String, String>,
    gzip: bool,
    kind: UploadKind,
}

enum UploadKind {
    Multipart {
        boundary: String,
    },
    /// A raw body written to this file.
    Raw {
        target: PathBuf,
    },
}

async fn plan(
    envd: &Envd,
    headers: &HeaderMap,
    query: &FilesQuery,
) -> Result<UploadPlan, ApiError> {
    let user = authorize(envd, headers, query, Operation::Write)?;
    let metadata = metadata_from_headers(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if encoding != "identity" && encoding != "gzip" {
        return Err(ApiError::bad_request(format!(
            "unsupported Content-Encoding '{encoding}': only identity and gzip are supported"
        )));
    }
    let gzip = encoding == "gzip";
    let kind = if content_type.to_ascii_lowercase().starts_with("multipart/") {
        if gzip {
            return Err(ApiError::bad_request(
                "gzip Content-Encoding is only supported for application/octet-stream uploads",
            ));
        }
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| ApiError::bad_request(format!("invalid multipart Content-Type: {e}")))?;
        UploadKind::Multipart { boundary }
    } else {
        let path = query.path.as_deref().ok_or_else(|| {
            ApiError::bad_request("the path query parameter is required for non-multipart uploads")
        })?;
        let target = target_path(&user, path)?;
        refuse_directory(&target).await?;
        UploadKind::Raw { target }
    };
    Ok(UploadPlan {
        user,
        metadata,
        gzip,
        kind,
    })
}

async fn refuse_directory(target: &Path) -> Result<(), ApiError> {
    if tokio::fs::metadata(target).await.is_ok_and(|m| m.is_dir()) {
        return Err(ApiError::bad_request(format!(
            "path '{}' is a directory",
            target.display()
        )));
    }
    Ok(())
}

/// Upload metadata from `X-Metadata-<key>` headers (keys lower-cased).
pub fn metadata_from_headers(headers: &HeaderMap) -> Result<HashMap<String, String>, ApiError> {
    let mut metadata = HashMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(METADATA_HEADER_PREFIX) {
            if key.is_empty() {
                return Err(ApiError::bad_request(
                    "metadata header needs a key after X-Metadata-",
                ));
            }
            let value = value.to_str().map_err(|_| {
                ApiError::bad_request(format!("metadata '{key}' is not valid text"))
            })?;
            metadata.insert(key.to_ascii_lowercase(), value.to_string());
        }
    }
    Ok(metadata)
}

async fn receive(
    envd: &Envd,
    query: &FilesQuery,
    plan: UploadPlan,
    body: Body,
) -> Result<Vec<WrittenEntry>, ApiError> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let UploadPlan {
        user,
        metadata,
        gzip,
        kind,
    } = plan;
    match kind {
        UploadKind::Multipart { boundary } => {
            let options = &envd.options;
            let staging_dir = options
                .upload_staging_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            receive_multipart(
                &user,
                query,
                stream,
                boundary,
                &metadata,
                &options.upload_limits,
                staging_dir,
            )
            .await
        }
        UploadKind::Raw { target } => {
            let reader = StreamReader::new(stream);
            if gzip {
                let decoder = async_compression::tokio::bufread::GzipDecoder::new(
                    tokio::io::BufReader::new(reader),
                );
                write_file(&target, &user, decoder, &metadata).await?;
            } else {
                write_file(&target, &user, reader, &metadata).await?;
            }
            Ok(vec![written(&target, metadata)])
        }
    }
}

pub(super) fn written(path: &Path, metadata: HashMap<String, String>) -> WrittenEntry {
    WrittenEntry {
        path: path.to_string_lossy().into_owned(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: "file",
        metadata,
    }
}

/// Streams `reader` into `target` (truncating it), owned by `user`.
pub async fn write_file(
    target: &Path,
    user: &User,
    reader: impl AsyncRead + Unpin,
    metadata: &HashMap<String, String>,
) -> Result<(), ApiError> {
    refuse_directory(target).await?;
    let prepared = {
        let target: PathBuf = target.to_path_buf();
        let user = user.clone();
        tokio::task::spawn_blocking(move || -> Result<std::fs::File, ApiError> {
            if let Some(parent) = target.parent() {
                create_dirs(parent, &user).map_err(|e| ApiError::from_io(parent, &e))?;
            }
            let file =
                std::fs::File::create(&target).map_err(|e| ApiError::from_io(&target, &e))?;
            chown(&target, &user).map_err(|e| ApiError::from_io(&target, &e))?;
            Ok(file)
        })
        .await
        .map_err(|e| ApiError::internal(format!("preparing the upload: {e}")))??
    };
    stream_into(prepared, reader, target).await?;
    replace_metadata(target, metadata)
}

/// Streams `reader` into `file` (the one for `target`, named in errors)
/// through a [`WRITE_BUFFER`] buffer.
pub(super) async fn stream_into(
    file: std::fs::File,
    reader: impl AsyncRead + Unpin,
    target: &Path,
) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::from_std(file);
    file.set_max_buf_size(WRITE_BUFFER);
    let mut reader = tokio::io::BufReader::with_capacity(WRITE_BUFFER, reader);
    tokio::io::copy_buf(&mut reader, &mut file)
        .await
        .map_err(|e| upload_io_error(target, e))?;
    file.flush()
        .await
        .map_err(|e| ApiError::from_io(target, &e))
}

fn upload_io_error(target: &Path, error: std::io::Error) -> ApiError {
    // A multipart failure (a limit, a malformed body) surfaces while the
    // part's data is read; it has its own status.
    let error = match error.downcast::<multer::Error>() {
        Ok(multer::Error::FieldSizeExceeded { limit, .. }) => {
            return ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the file for '{}' is larger than the limit of {limit} bytes per part",
                    target.display()
                ),
            );
        }
        Ok(multipart) => return multipart_error(multipart),
        Err(error) => error,
    };
    match error.kind() {
        // Body stream failures (bad gzip, broken multipart, client gone).
        std::io::ErrorKind::Other
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof => ApiError::bad_request(format!(
            "reading the upload for '{}': {error}",
            target.display()
        )),
        _ => ApiError::from_io(target, &error),
    }
}

/// Stores upload metadata as `user.e2b.<key>` xattrs, replacing old ones.
pub(super) fn replace_metadata(
    target: &Path,
    metadata: &HashMap<String, String>,
) -> Result<(), ApiError> {
    if let Ok(names) = xattr::list(target) {
        for name in names {
            if name.to_string_lossy().starts_with(METADATA_XATTR_PREFIX) {
                let _ = xattr::remove(target, &name);
            }
        }
    }
    for (key, value) in metadata {
        xattr::set(
            target,
            format!("{METADATA_XATTR_PREFIX}{key}"),
            value.as_bytes(),
        )
        .map_err(|e| {
            ApiError::internal(format!(
                "storing metadata '{key}' on '{}': {e}",
                target.display()
            ))
        })?;
    }
    Ok(())
}
