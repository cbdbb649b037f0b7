//! `GET /health`: 204 while envd serves requests.

use http::StatusCode;

pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}
