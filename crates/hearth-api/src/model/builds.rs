//! The JSON of template builds, uploads and tags, with E2B's keys.

use serde::{Deserialize, Serialize};

/// `POST /v3/templates` (`TemplateBuildRequestV3`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequestV3 {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Deprecated for `name`.
    pub alias: Option<String>,
    #[serde(rename = "teamID")]
    pub team_id: Option<String>,
    pub cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<i64>,
    pub min_free_disk_mb: Option<i64>,
}

/// `POST /v2/templates` (`TemplateBuildRequestV2`, deprecated).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequestV2 {
    pub alias: Option<String>,
    #[serde(rename = "teamID")]
    pub team_id: Option<String>,
    pub cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<i64>,
}

/// `TemplateRequestResponseV3`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequested {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub public: bool,
    pub names: Vec<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
}

/// `POST /v2/templates/{id}/builds/{buildID}` (`TemplateBuildStartV2`).
/// Optional everywhere, so that each missing piece gets a clear 400.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStart {
    pub from_image: Option<String>,
    pub from_template: Option<String>,
    pub from_image_registry: Option<serde_json::Value>,
    pub force: Option<bool>,
    pub steps: Option<Vec<BuildStep>>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

/// `TemplateStep`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStep {
    #[serde(rename = "type")]
    pub kind: String,
    pub args: Option<Vec<String>>,
    pub files_hash: Option<String>,
    pub force: Option<bool>,
}

/// `BuildLogEntry`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildLogEntry {
    pub timestamp: String,
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// `BuildStatusReason`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatusReason {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_entries: Option<Vec<BuildLogEntry>>,
}

/// `TemplateBuildInfo`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: &'static str,
    pub logs: Vec<String>,
    pub log_entries: Vec<BuildLogEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildStatusReason>,
}

/// `TemplateBuild`, one of `TemplateWithBuilds.builds`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuild {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB", skip_serializing_if = "Option::is_none")]
    pub disk_size_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_version: Option<String>,
}

/// `TemplateBuildFileUpload`.
#[derive(Debug, Clone, Serialize)]
pub struct FileUpload {
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `AssignTemplateTagsRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AssignTags {
    pub target: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// `AssignedTemplateTags`.
#[derive(Debug, Clone, Serialize)]
pub struct AssignedTags {
    pub tags: Vec<String>,
    #[serde(rename = "buildID")]
    pub build_id: String,
}

/// `DeleteTemplateTagsRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeleteTags {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// `TemplateTag`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateTag {
    pub tag: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub created_at: String,
}

/// `TemplateUpdateRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateUpdate {
    pub public: Option<bool>,
}
