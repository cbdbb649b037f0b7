//! The JSON the SDKs send and receive, with E2B's keys (camelCase, except
//! `allow_internet_access`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /sandboxes` and `POST /v2/sandboxes` (`NewSandbox`, `NewSandboxV2`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub timeout: Option<i64>,
    #[serde(default)]
    pub auto_pause: bool,
    /// `false`: an auto-pause keeps only the filesystem.
    pub auto_pause_memory: Option<bool>,
    /// v1 only: `false` starts envd without an access token.
    pub secure: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub network: Option<NetworkConfig>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Traffic through the proxy resumes the sandbox when it is paused.
    pub auto_resume: Option<AutoResume>,
    /// Known E2B settings hearth refuses rather than ignores.
    pub volume_mounts: Option<serde_json::Value>,
}

/// `SandboxAutoResumeConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AutoResume {
    #[serde(default)]
    pub enabled: bool,
}

/// `SandboxNetworkConfig`, as far as a node enforces it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    /// The Host header requests to the sandbox's ports carry, `${PORT}`
    /// replaced by the port (E2B's `maskRequestHost`), for servers in the
    /// guest that check it; unset, the client's Host is passed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// E2B's egress proxy, DNS and host rules, and ports the proxy would
    /// reach over HTTPS: not done by hearth, so refused when set.
    #[serde(default, skip_serializing)]
    pub egress_proxy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub dns_servers: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub rules: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub https_ports: Option<serde_json::Value>,
}

/// What `maskRequestHost` replaces with the port.
const PORT_VARIABLE: &str = "${PORT}";
/// The longest `maskRequestHost` (a DNS name's limit).
const MAX_MASK_LEN: usize = 255;

/// Whether a JSON setting is present and not empty.
fn set(value: Option<&serde_json::Value>) -> bool {
    match value {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// The names of the settings that are given.
fn given(settings: &[(&'static str, &Option<serde_json::Value>)]) -> Vec<&'static str> {
    settings
        .iter()
        .filter(|(_, value)| set(value.as_ref()))
        .map(|(name, _)| *name)
        .collect()
}

/// Whether `text` is what a node's egress rules take: an IPv4 address or
/// an IPv4 CIDR (`a.b.c.d/n`, n ≤ 32), blanks around it allowed.
fn is_cidr(text: &str) -> bool {
    let text = text.trim();
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    address.parse::<std::net::Ipv4Addr>().is_ok()
        && prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= 32))
}

/// The first entry of egress rules that is not an address or CIDR.
pub fn first_invalid_cidr<'a>(rules: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
    rules
        .into_iter()
        .find(|rule| !is_cidr(rule))
        .map(String::as_str)
}

impl NetworkConfig {
    /// The first egress rule that is not an address or CIDR.
    pub fn invalid_cidr(&self) -> Option<&str> {
        first_invalid_cidr(self.allow_out.iter().chain(&self.deny_out))
    }

    /// The settings given that hearth does not enforce.
    pub fn unsupported(&self) -> Vec<&'static str> {
        given(&[
            ("network.egressProxy", &self.egress_proxy),
            ("network.dnsServers", &self.dns_servers),
            ("network.rules", &self.rules),
            ("network.httpsPorts", &self.https_ports),
        ])
    }

    /// The Host header for requests to `port`, when masked.
    pub fn request_host(&self, port: u16) -> Option<String> {
        let mask = self.mask_request_host.as_deref()?;
        Some(mask.replace(PORT_VARIABLE, &port.to_string()))
    }

    /// Why `maskRequestHost` cannot be a Host header, if it cannot.
    pub fn invalid_mask(&self) -> Option<&'static str> {
        let mask = self.mask_request_host.as_deref()?;
        if mask.is_empty() || mask.len() > MAX_MASK_LEN {
            return Some("network.maskRequestHost must be 1 to 255 characters");
        }
        let host = mask.replace(PORT_VARIABLE, "65535");
        let valid = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
        (!valid).then_some(
            "network.maskRequestHost must be a host name (letters, digits, '-', '.', ':' and ${PORT})",
        )
    }
}

/// `PUT /sandboxes/{id}/network` (`SandboxNetworkUpdateConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUpdate {
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub egress_proxy: Option<serde_json::Value>,
    pub dns_servers: Option<serde_json::Value>,
    pub rules: Option<serde_json::Value>,
}

impl NetworkUpdate {
    /// The settings given that hearth does not enforce.
    pub fn unsupported(&self) -> Vec<&'static str> {
        given(&[
            ("egressProxy", &self.egress_proxy),
            ("dnsServers", &self.dns_servers),
            ("rules", &self.rules),
        ])
    }
}

/// `ConnectSandbox` (v1: `timeout` required) and `ConnectSandboxV2`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectSandbox {
    pub timeout: Option<i64>,
    /// v2: `false` resumes a paused sandbox with a fresh boot.
    pub memory: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimeoutRequest {
    pub timeout: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RefreshRequest {
    pub duration: Option<i64>,
}

/// The create and connect response (`Sandbox`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxCreated {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// `ListedSandbox`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    pub state: &'static str,
    pub envd_version: String,
    pub metadata: BTreeMap<String, String>,
}

/// `SandboxDetail`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    pub allow_internet_access: Option<bool>,
    pub domain: Option<String>,
    pub network: serde_json::Value,
    pub lifecycle: serde_json::Value,
}

/// `SandboxMetric`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: i64,
    pub cpu_used_pct: f64,
    pub mem_used: i64,
    pub mem_total: i64,
    pub mem_cache: i64,
    pub disk_used: i64,
    pub disk_total: i64,
}

/// `Template`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    pub public: bool,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<serde_json::Value>,
    pub last_spawned_at: Option<String>,
    pub spawn_count: i64,
    pub build_count: i64,
    pub envd_version: String,
    pub build_status: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewApiKey {
    pub name: String,
}

/// `TeamAPIKey`, and `CreatedTeamAPIKey` when `key` is set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub name: String,
    pub mask: serde_json::Value,
    pub created_at: String,
    pub created_by: Option<serde_json::Value>,
    pub last_used: Option<String>,
}

/// RFC 3339 with milliseconds and `Z`, which every SDK parses.
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub mod builds;
