//! What a template reference means to a team: `templateID`, `name` or
//! `name:tag` (a tag may also be a build ID, as in E2B). Another team's
//! private template is as absent as a missing one.

use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::names::{self, DEFAULT_TAG};
use crate::state::AppState;
use crate::store::{BuildRecord, BuildStatus, TemplateRecord};

/// A template and the build a reference picks.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub template: TemplateRecord,
    /// `None` for a template a node registered itself (`base`): its build
    /// is the node's, known only by the template row.
    pub build: Option<BuildRecord>,
    /// The name the reference used, when it was one of the template's.
    pub alias: Option<String>,
}

impl Resolved {
    pub fn build_id(&self) -> &str {
        self.build
            .as_ref()
            .map_or(self.template.build_id.as_str(), |b| b.build_id.as_str())
    }

    /// The node that built it, which alone has its files.
    pub fn node(&self) -> Option<&str> {
        self.build
            .as_ref()
            .map(|b| b.node.as_str())
            .filter(|n| !n.is_empty())
    }

    pub fn envd_version(&self) -> &str {
        self.build
            .as_ref()
            .map_or(self.template.envd_version.as_str(), |b| {
                b.envd_version.as_str()
            })
    }

    pub fn disk_size_mb(&self) -> i64 {
        self.build
            .as_ref()
            .map_or(self.template.disk_size_mb, |b| b.disk_size_mb)
    }
}

fn parse(reference: &str) -> ApiResult<names::NameRef> {
    names::parse(reference).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The template `reference` names (its tag ignored), if the team may see it.
pub async fn visible(
    app: &AppState,
    caller: &Caller,
    reference: &str,
) -> ApiResult<TemplateRecord> {
    let name = parse(reference)?;
    match app.store.template(&name.name).await? {
        Some(t) if t.visible_to(&caller.team.team_id) => Ok(t),
        _ => Err(ApiError::template_not_found(&name.name)),
    }
}

/// The caller's own template: another team's public one is 403, as E2B
/// answers, and one the team cannot see is 404.
pub async fn owned(app: &AppState, caller: &Caller, reference: &str) -> ApiResult<TemplateRecord> {
    let template = visible(app, caller, reference).await?;
    if template.team_id.as_deref() == Some(caller.team.team_id.as_str()) {
        Ok(template)
    } else {
        Err(ApiError::Forbidden(format!(
            "you don't have access to template '{}': it belongs to another team",
            reference.trim()
        )))
    }
}

fn tag_missing(tag: &str, template: &str) -> ApiError {
    ApiError::NotFound(format!(
        "tag '{tag}' does not exist for template '{template}'"
    ))
}

async fn ready_build(
    app: &AppState,
    template: &TemplateRecord,
    build_id: &str,
) -> ApiResult<Option<BuildRecord>> {
    Ok(app
        .store
        .build(build_id)
        .await?
        .filter(|b| b.template_id == template.template_id && b.status == BuildStatus::Ready))
}

/// The template and build `reference` starts: a tag's build; without a
/// tag the `default` tag's, or else the template's newest ready build.
pub async fn resolve(app: &AppState, caller: &Caller, reference: &str) -> ApiResult<Resolved> {
    let name = parse(reference)?;
    let template = visible(app, caller, &name.name).await?;
    let alias = template
        .aliases
        .contains(&name.name)
        .then(|| name.name.clone());
    let shown = &name.name;
    let build = match &name.tag {
        Some(tag) if uuid::Uuid::parse_str(tag).is_ok() => Some(
            ready_build(app, &template, tag)
                .await?
                .ok_or_else(|| tag_missing(tag, shown))?,
        ),
        Some(tag) => {
            let record = app
                .store
                .tag(&template.template_id, tag)
                .await?
                .ok_or_else(|| tag_missing(tag, shown))?;
            Some(
                ready_build(app, &template, &record.build_id)
                    .await?
                    .ok_or_else(|| tag_missing(tag, shown))?,
            )
        }
        None => {
            let tagged = match app.store.tag(&template.template_id, DEFAULT_TAG).await? {
                Some(record) => ready_build(app, &template, &record.build_id).await?,
                None => None,
            };
            match tagged {
                Some(build) => Some(build),
                None if template.build_id.is_empty() => {
                    return Err(ApiError::NotFound(format!(
                        "template '{shown}' has no ready build yet"
                    )));
                }
                // A node-registered template has no build row.
                None => app.store.build(&template.build_id).await?,
            }
        }
    };
    Ok(Resolved {
        template,
        build,
        alias,
    })
}
