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
    /// Paused on its node: no VM runs, its state is on the node's disk.
    pub paused: bool,
    /// Paused with its memory (`false`: only its filesystem was kept, so a
    /// resume boots it again). Meaningless while it runs.
    pub paused_memory: bool,
    /// Paused rather than killed when its timeout comes.
    pub auto_pause: bool,
    /// That pause keeps memory (`false`: only the filesystem).
    pub auto_pause_memory: bool,
    /// Resumed, when paused, by traffic through the proxy, for this many
    /// seconds (`None`: such traffic is refused as for a gone sandbox).
    pub auto_resume_secs: Option<i64>,
}

/// Where a template build is: E2B's `TemplateBuildStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    /// Requested, not started, or started and queued for a build slot.
    Waiting,
    Building,
    Ready,
    Error,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "waiting" => Some(Self::Waiting),
            "building" => Some(Self::Building),
            "ready" => Some(Self::Ready),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    pub fn finished(self) -> bool {
        matches!(self, Self::Ready | Self::Error)
    }
}

/// One build of a team's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// A UUID: the SDKs parse it as one.
    pub build_id: String,
    pub template_id: String,
    pub team_id: String,
    pub status: BuildStatus,
    /// Whether its start was accepted (a `waiting` build may be either).
    pub started: bool,
    /// The tags that point at it once it is ready.
    pub tags: Vec<String>,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    /// Empty until it is ready.
    pub envd_version: String,
    /// The node that builds (built) it, which runs its sandboxes; empty
    /// until started.
    pub node: String,
    pub reason_message: Option<String>,
    pub reason_step: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// What a build's node logged, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogRecord {
    pub timestamp: i64,
    /// debug, info, warn or error.
    pub level: String,
    pub message: String,
    pub step: Option<String>,
}

/// A tag: which build of its template `name:tag` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub template_id: String,
    pub tag: String,
    pub build_id: String,
    pub created_at: i64,
}
