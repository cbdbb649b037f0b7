//! Template tags: `name:tag` starts the build the tag points at. A build
//! gets its requested tags (or `default`) when it becomes ready; these
//! endpoints point more tags at a ready build, remove tags and list them.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::model::builds::{AssignTags, AssignedTags, DeleteTags, TemplateTag};
use crate::model::timestamp;
use crate::names::{self, DEFAULT_TAG};
use crate::state::AppState;

use super::resolve;

fn checked_tags(tags: Option<&Vec<String>>) -> ApiResult<Vec<String>> {
    let tags = names::tags(tags.into_iter().flatten().map(String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if tags.is_empty() {
        return Err(ApiError::BadRequest("at least one tag is required".into()));
    }
    Ok(tags)
}

fn required<'a>(value: Option<&'a String>, what: &str) -> ApiResult<&'a str> {
    value
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{what} is required")))
}

/// `POST /templates/tags` `{target: "name:tag", tags}` → 201: the tags
/// now point at the build `target` names.
pub async fn assign(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<AssignTags>,
) -> ApiResult<(StatusCode, Json<AssignedTags>)> {
    let tags = checked_tags(body.tags.as_ref())?;
    let target = required(body.target.as_ref(), "target")?;
    let resolved = resolve::resolve(&app, &caller, target).await?;
    if resolved.template.team_id.as_deref() != Some(caller.team.team_id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "you don't have access to template '{target}': it belongs to another team"
        )));
    }
    let Some(build) = &resolved.build else {
        return Err(ApiError::BadRequest(format!(
            "template '{target}' has no build that can be tagged"
        )));
    };
    app.store
        .put_tags(&resolved.template.template_id, &tags, &build.build_id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AssignedTags {
            tags,
            build_id: build.build_id.clone(),
        }),
    ))
}

/// `DELETE /templates/tags` `{name, tags}` → 204. The `default` tag stays.
pub async fn remove(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<DeleteTags>,
) -> ApiResult<StatusCode> {
    let tags = checked_tags(body.tags.as_ref())?;
    if tags.iter().any(|t| t == DEFAULT_TAG) {
        return Err(ApiError::BadRequest(format!(
            "cannot delete the '{DEFAULT_TAG}' tag"
        )));
    }
    let name = required(body.name.as_ref(), "name")?;
    let parsed = names::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if parsed.tag.is_some() {
        return Err(ApiError::BadRequest(
            "the template name must not contain a tag; list the tags in 'tags'".into(),
        ));
    }
    let template = resolve::owned(&app, &caller, name).await?;
    app.store.delete_tags(&template.template_id, &tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{templateID}/tags` → `[TemplateTag]`.
pub async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult<Json<Vec<TemplateTag>>> {
    let template = resolve::owned(&app, &caller, &id).await?;
    let tags = app.store.tags_of(&template.template_id).await?;
    Ok(Json(
        tags.into_iter()
            .map(|t| TemplateTag {
                tag: t.tag,
                build_id: t.build_id,
                created_at: timestamp(t.created_at),
            })
            .collect(),
    ))
}
