//! envd's plain HTTP endpoints: `/health`, `/init`, `/envs`, `/metrics`, `/files`.

pub mod access;
mod bounded_body;
pub mod download;
pub mod early_response;
pub mod envs;
pub mod error;
pub mod files_access;
pub mod health;
pub mod init;
pub mod metrics;
pub mod signature;
mod staging;
pub mod upload;
pub mod upload_limits;
mod upload_multipart;
