//! Rows as the rest of the control plane sees them.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    pub team_id: String,
    pub name: String,
    /// Sandboxes the team may run at once.
    pub max_sandboxes: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub team_id: String,
    pub name: String,
    /// The first and last characters of the key, for display.
    pub key_prefix: String,
    pub key_suffix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub template_id: String,
    /// `None` for templates every team may use (`base`).
    pub team_id: Option<String>,
    pub public: bool,
    pub build_id: String,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub envd_version: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_spawned_at: Option<i64>,
    pub spawn_count: i64,
    pub aliases: Vec<String>,
}

impl TemplateRecord {
    /// Whether `team` may start sandboxes from this template.
    pub fn visible_to(&self, team: &str) -> bool {
        self.public || self.team_id.as_deref() == Some(team)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub sandbox_id: String,
    pub team_id: String,
    pub template_id: String,
    pub alias: Option<String>,
    pub build_id: String,
    /// The name of the node that runs it.
    pub node: String,
    /// The node's own id, as the SDKs' `clientID`.
    pub client_id: String,
    /// Where the node's host reaches the sandbox's ports.
    pub host_address: String,
    pub envd_version: String,
    pub envd_access_token: Option<String>,
    /// Required on requests to the sandbox's ports (other than envd's) when
    /// it was created without public traffic.
    pub traffic_access_token: Option<String>,
    pub allow_internet: bool,
    /// The `network` object the sandbox was created with, as JSON.
    pub network: serde_json::Value,
    pub metadata: BTreeMap<String, String>,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub started_at: i64,
    pub end_at: i64,
}
