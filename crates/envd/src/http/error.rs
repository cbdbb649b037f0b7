//! Errors of envd's plain HTTP endpoints, sent as `{"code": <status>, "message": "..."}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Maps an I/O error on `path` to the status the SDKs expect.
    pub fn from_io(path: &std::path::Path, error: &std::io::Error) -> Self {
        let shown = path.display();
        match error.kind() {
            std::io::ErrorKind::NotFound => {
                Self::not_found(format!("path '{shown}' does not exist"))
            }
            std::io::ErrorKind::IsADirectory => {
                Self::bad_request(format!("path '{shown}' is a directory"))
            }
            std::io::ErrorKind::NotADirectory => {
                Self::bad_request(format!("a parent of path '{shown}' is not a directory"))
            }
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("not enough disk space to write '{shown}'"),
            ),
            std::io::ErrorKind::PermissionDenied => Self::new(
                StatusCode::FORBIDDEN,
                format!("permission denied for '{shown}': {error}"),
            ),
            _ => Self::internal(format!("'{shown}': {error}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
