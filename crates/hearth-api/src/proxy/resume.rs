//! Traffic to a paused sandbox. One created with auto-resume is resumed
//! for the request, which waits for it and then goes through, unless it
//! was paused without its memory; any other gets what a sandbox that is
//! gone gets.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::error_body;
use crate::routes::{Resumed, resume_paused};
use crate::state::AppState;
use crate::store::SandboxRecord;

use super::sandbox_missing;

/// `record` running: as it is, or resumed first when it is paused.
pub async fn running(
    app: &Arc<AppState>,
    record: SandboxRecord,
) -> Result<SandboxRecord, Response> {
    if !record.paused {
        return Ok(record);
    }
    let id = record.sandbox_id.as_str();
    // A filesystem-only pause kept no processes to resume: traffic does not
    // boot it again (a connect does), as E2B refuses it too.
    let Some(secs) = record.auto_resume_secs.filter(|_| record.paused_memory) else {
        return Err(sandbox_missing(id));
    };
    let team = match app.store.team(&record.team_id).await {
        Ok(Some(team)) => team,
        Ok(None) => return Err(sandbox_missing(id)),
        Err(error) => {
            tracing::warn!(sandbox = %id, %error, "looking up a team to resume its sandbox");
            return Err(unavailable());
        }
    };
    match resume_paused(app, id, team.max_sandboxes, Some(secs), false).await {
        Ok(Resumed::Now(record) | Resumed::Running(record)) => Ok(record),
        Err(error) if error.status() == StatusCode::NOT_FOUND => Err(sandbox_missing(id)),
        // The team's limit (429) says what to do; the rest is ours.
        Err(error) if error.status() == StatusCode::TOO_MANY_REQUESTS => Err(error.into_response()),
        Err(error) => {
            tracing::warn!(sandbox = %id, %error, "auto-resume failed");
            Err(unavailable())
        }
    }
}

fn unavailable() -> Response {
    error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "the paused sandbox could not be resumed; try again shortly",
    )
}
