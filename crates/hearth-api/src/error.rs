//! The API's errors and their JSON bodies: every error the SDKs can see is
//! `{"code": <HTTP status>, "message": "..."}`, which is what they parse.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An API request that failed, with the status the SDKs expect for it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    LengthRequired(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn sandbox_not_found(id: &str) -> Self {
        Self::NotFound(format!("sandbox \"{id}\" not found"))
    }

    pub fn template_not_found(id: &str) -> Self {
        Self::NotFound(format!("template '{id}' not found"))
    }
}

/// The JSON error body with `status` and `message`.
pub fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(message) = &self {
            // The detail (SQL, paths, a node's words) stays in the log.
            tracing::error!(%message, "request failed");
            return error_body(
                self.status(),
                "internal error; the control plane's log has the details",
            );
        }
        error_body(self.status(), &self.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::Internal(format!("database: {error}"))
    }
}

/// What a node's gRPC status means to an API caller.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Self::NotFound(message),
            tonic::Code::InvalidArgument => Self::BadRequest(message),
            tonic::Code::AlreadyExists => Self::Conflict(message),
            tonic::Code::ResourceExhausted => {
                Self::Unavailable(format!("the node has no room: {message}"))
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                Self::Unavailable(format!("the node is unreachable: {message}"))
            }
            _ => Self::Internal(format!("node: {message}")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
