//! `GET /envs`: the sandbox-wide environment variables set by `/init`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;

use crate::state::SharedEnvd;

pub async fn envs(State(envd): State<SharedEnvd>) -> Json<HashMap<String, String>> {
    Json(envd.defaults().env_vars)
}
