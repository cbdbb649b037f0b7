//! The API's errors and their JSON bodies: every error the SDKs can see is
//! `{"code": <HTTP status>, "message": "..."}`, which is what they parse.
//!
//! What a client reads is written for clients. Errors whose cause is
//! internal (the database, the host's files, a node's or a guest's words)
//! carry that cause as `detail`, which goes to the log under the request's
//! id; the client gets a short message and the id to quote
//! ([`crate::request_id`]).

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
    /// Busy or missing capacity, in words fit for the client.
    #[error("{0}")]
    Unavailable(String),
    /// A failure inside the control plane; `0` is for the log only.
    #[error("{0}")]
    Internal(String),
    /// A node refused or failed a call. The code decides the status; the
    /// node's message (paths, host figures) is for the log only.
    #[error("the node answered {code:?}: {detail}")]
    Node { code: tonic::Code, detail: String },
    /// A sandbox's envd did not answer as it should (no answer, an error, a
    /// body too large or malformed); the detail is for the log only.
    #[error("sandbox {sandbox}: {detail}")]
    Guest { sandbox: String, detail: String },
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
            Self::Unavailable(_) | Self::Guest { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Node { code, .. } => node_status(*code),
        }
    }

    pub fn sandbox_not_found(id: &str) -> Self {
        Self::NotFound(format!("sandbox \"{id}\" not found"))
    }

    pub fn template_not_found(id: &str) -> Self {
        Self::NotFound(format!("template '{id}' not found"))
    }

    /// What the client reads; `None` for errors whose text is detail.
    fn public_message(&self) -> Option<String> {
        match self {
            Self::Internal(_) => None,
            Self::Node { code, .. } => node_message(*code).map(str::to_owned),
            Self::Guest { sandbox, .. } => {
                Some(format!("sandbox {sandbox} did not answer as expected"))
            }
            other => Some(other.to_string()),
        }
    }

    /// What the client reads; detail it must not see goes to the log.
    pub fn client_message(&self) -> String {
        if !self.withholds_detail() {
            return self.to_string();
        }
        // The request's span carries its id, so the log line can be found.
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::warn!(error = %self, "request refused");
        }
        let message = self
            .public_message()
            .unwrap_or_else(|| "internal error; the control plane's log has the details".into());
        match crate::request_id::current() {
            Some(id) => format!("{message} (request id {id})"),
            None => message,
        }
    }

    /// Whether the text holds detail that must stay in the log.
    fn withholds_detail(&self) -> bool {
        matches!(
            self,
            Self::Internal(_) | Self::Node { .. } | Self::Guest { .. }
        )
    }
}

/// The status a client gets for a node's gRPC code.
fn node_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted
        | tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message a client gets for a node's gRPC code; `None` for the
/// generic internal error.
fn node_message(code: tonic::Code) -> Option<&'static str> {
    Some(match code {
        tonic::Code::NotFound => "not found on the node",
        tonic::Code::InvalidArgument => "the node refused the request's settings",
        tonic::Code::AlreadyExists => "the node has it already",
        tonic::Code::FailedPrecondition => "the sandbox is still starting; try again shortly",
        tonic::Code::ResourceExhausted => "the node has no room now; try again later",
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            "the node did not answer in time; try again later"
        }
        _ => return None,
    })
}

/// The JSON error body with `status` and `message`.
pub fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_body(self.status(), &self.client_message())
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
        Self::Node {
            code: status.code(),
            detail: status.message().to_owned(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
