//! envd's plain HTTP endpoints: `/health`, `/init`, `/envs`, `/metrics`, `/files`.

pub mod access;
pub mod download;
pub mod early_response;
pub mod envs;
pub mod error;
pub mod files_access;
pub mod health;
pub mod init;
pub mod metrics;
pub mod signature;
pub mod upload;
