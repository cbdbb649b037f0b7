//! `GET /files`: streams a file from disk, optionally gzip-compressed.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use super::files_access::{FilesQuery, authorize, target_path};
use super::signature::Operation;
use crate::state::SharedEnvd;

/// Read size of the file stream; big enough to keep syscalls off the profile.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Picks the response encoding from `Accept-Encoding`.
///
/// gzip is used only when the client asks for gzip and nothing but identity
/// besides: HTTP stacks send `gzip, deflate` (or more) by default, and
/// compressing every download would cost the SDKs throughput for nothing,
/// while `files.read(gzip=True)` sends exactly `gzip`. `None` means no
/// acceptable encoding (406).
pub fn choose_encoding(accept: Option<&str>) -> Option<Encoding> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Encoding::Identity);
    };
    let mut gzip = false;
    let mut others = false;
    let mut identity_refused = false;
    let mut star_refused = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip |= q > 0.0,
            "identity" => identity_refused |= q <= 0.0,
            "*" => star_refused |= q <= 0.0,
            "" => {}
            _ => others |= q > 0.0,
        }
    }
    if gzip && !others {
        Some(Encoding::Gzip)
    } else if identity_refused || (star_refused && !accept.contains("identity")) {
        if gzip { Some(Encoding::Gzip) } else { None }
    } else {
        Some(Encoding::Identity)
    }
}

pub async fn download(
    State(envd): State<SharedEnvd>,
    headers: HeaderMap,
    Query(query): Query<FilesQuery>,
) -> Response {
    match serve(&envd, &headers, &query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(
    envd: &crate::state::Envd,
    headers: &HeaderMap,
    query: &FilesQuery,
) -> Result<Response, ApiError> {
    let user = authorize(envd, headers, query, Operation::Read)?;
    let path = target_path(&user, query.path.as_deref().unwrap_or(""))?;
    let encoding = choose_encoding(
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "unsupported Accept-Encoding: only identity and gzip are supported",
        )
    })?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| ApiError::from_io(&path, &e))?;
    if meta.is_dir() {
        return Err(ApiError::bad_request(format!(
            "path '{}' is a directory",
            path.display()
        )));
    }
    // Devices, FIFOs and sockets have no length and may never end.
    if !meta.is_file() {
        return Err(ApiError::bad_request(format!(
            "path '{}' is not a regular file",
            path.display()
        )));
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::from_io(&path, &e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace('"', "")
    )) {
        builder = builder.header(header::CONTENT_DISPOSITION, disposition);
    }
    let body = match encoding {
        Encoding::Identity => {
            // Files of procfs and sysfs say they are empty and are not: their
            // content is made as they are read, so it is sent until EOF.
            if meta.len() > 0 {
                builder = builder.header(header::CONTENT_LENGTH, meta.len());
            }
            Body::from_stream(ReaderStream::with_capacity(file, READ_CHUNK))
        }
        Encoding::Gzip => {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            let reader = tokio::io::BufReader::with_capacity(READ_CHUNK, file);
            let encoder = async_compression::tokio::bufread::GzipEncoder::new(reader);
            Body::from_stream(ReaderStream::with_capacity(encoder, READ_CHUNK))
        }
    };
    builder
        .body(body)
        .map_err(|e| ApiError::internal(format!("building the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_encoding() {
        assert_eq!(choose_encoding(None), Some(Encoding::Identity));
        assert_eq!(choose_encoding(Some("gzip")), Some(Encoding::Gzip));
        assert_eq!(
            choose_encoding(Some("gzip, identity")),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            choose_encoding(Some("gzip, deflate")),
            Some(Encoding::Identity)
        );
        assert_eq!(
            choose_encoding(Some("zstd,gzip,br")),
            Some(Encoding::Identity)
        );
        assert_eq!(choose_encoding(Some("identity")), Some(Encoding::Identity));
        assert_eq!(choose_encoding(Some("br;q=1, identity;q=0")), None);
        assert_eq!(choose_encoding(Some("br, *;q=0")), None);
        assert_eq!(choose_encoding(Some("gzip;q=0")), Some(Encoding::Identity));
    }
}
