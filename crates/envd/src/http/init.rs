//! `POST /init`: what the orchestrator tells envd after starting or restoring
//! the VM — environment, access token, default user and workdir, the time.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::access::{UNAUTHORIZED_MESSAGE, has_valid_token};
use super::error::ApiError;
use crate::state::SharedEnvd;

/// The clock is only set when it is off by more than this.
const CLOCK_TOLERANCE_MS: i64 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    pub env_vars: Option<HashMap<String, String>>,
    pub access_token: Option<String>,
    pub timestamp: Option<String>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
    /// Accepted for compatibility; hearth has no such features yet.
    pub volume_mounts: Option<serde_json::Value>,
    #[serde(rename = "hyperloopIP")]
    pub hyperloop_ip: Option<String>,
    #[serde(rename = "lifecycleID")]
    pub lifecycle_id: Option<String>,
    pub ca_bundle: Option<String>,
    /// hearth's extension: the sandbox's hostname, which a restored clone
    /// cannot take from its (shared) boot configuration.
    pub hostname: Option<String>,
}

/// Whether the clock should be set to `target_ms`, given it reads `now_ms`.
pub fn clock_needs_setting(now_ms: i64, target_ms: i64) -> bool {
    (now_ms - target_ms).abs() > CLOCK_TOLERANCE_MS
}

fn sync_clock(timestamp: &str) -> Result<(), ApiError> {
    let target = chrono::DateTime::parse_from_rfc3339(timestamp)
        .map_err(|e| ApiError::bad_request(format!("invalid timestamp '{timestamp}': {e}")))?;
    let now = chrono::Utc::now();
    if !clock_needs_setting(now.timestamp_millis(), target.timestamp_millis()) {
        return Ok(());
    }
    let spec = nix::sys::time::TimeSpec::new(
        target.timestamp(),
        i64::from(target.timestamp_subsec_nanos()),
    );
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, spec)
        .map_err(|e| ApiError::internal(format!("setting the clock: {e}")))
}

fn set_hostname(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(ApiError::bad_request(format!("invalid hostname '{name}'")));
    }
    nix::unistd::sethostname(name)
        .map_err(|e| ApiError::internal(format!("setting the hostname: {e}")))?;
    // Programs such as sudo resolve their own hostname; without an entry
    // they wait for DNS, which a sandbox may not have.
    let hosts = std::fs::read_to_string(HOSTS_FILE).unwrap_or_default();
    std::fs::write(HOSTS_FILE, hosts_with_hostname(&hosts, name))
        .map_err(|e| ApiError::internal(format!("writing {HOSTS_FILE}: {e}")))
}

const HOSTS_FILE: &str = "/etc/hosts";

/// `hosts` with its `127.0.1.1` line (Debian's place for the machine's own
/// name) naming `name`.
pub fn hosts_with_hostname(hosts: &str, name: &str) -> String {
    let mut out: String = hosts
        .lines()
        .filter(|line| line.split_whitespace().next() != Some("127.0.1.1"))
        .map(|line| format!("{line}\n"))
        .collect();
    out.push_str(&format!("127.0.1.1\t{name}\n"));
    out
}

pub async fn init(
    State(envd): State<SharedEnvd>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match apply(&envd, &headers, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

fn apply(envd: &crate::state::Envd, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let request: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid /init body: {e}")))?
    };
    // Re-initialising a sandbox that has a token needs that token, either in
    // the header or as the token being set again.
    let current = envd.defaults().access_token;
    let repeats_token = current.is_some() && request.access_token == current;
    if !has_valid_token(envd, headers) && !repeats_token {
        return Err(ApiError::unauthorized(UNAUTHORIZED_MESSAGE));
    }
    if let Some(user) = request.default_user.as_deref().filter(|u| !u.is_empty()) {
        envd.options
            .users
            .by_name(user)
            .map_err(|e| ApiError::bad_request(format!("invalid defaultUser: {e}")))?;
    }
    if let Some(timestamp) = request
        .timestamp
        .as_deref()
        .filter(|_| envd.options.clock_sync)
    {
        sync_clock(timestamp)?;
    }
    if let Some(name) = request
        .hostname
        .as_deref()
        .filter(|_| envd.options.set_hostname)
    {
        set_hostname(name)?;
    }
    envd.update_defaults(|d| {
        if let Some(vars) = request.env_vars {
            d.env_vars.extend(vars);
        }
        if let Some(token) = request.access_token {
            d.access_token = (!token.is_empty()).then_some(token);
        }
        if let Some(user) = request.default_user.filter(|u| !u.is_empty()) {
            d.user = Some(user);
        }
        if let Some(dir) = request.default_workdir.filter(|w| !w.is_empty()) {
            d.workdir = Some(dir.into());
        }
    });
    match trace_id(headers) {
        // The node's create is one trace with this `/init`: the line says
        // which, so the sandbox's log and the trace can be put side by side.
        Some(trace_id) => tracing::info!(trace_id, "sandbox initialised"),
        None => tracing::info!("sandbox initialised"),
    }
    Ok(())
}

/// The trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`), if it is one.
fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && parts.next().is_none()
        && trace.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_traceparent_names_a_trace() {
        let of = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", axum::http::HeaderValue::from_static(value));
            trace_id(&headers).map(str::to_owned)
        };
        assert_eq!(
            of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(of("00-4bf92f3577b34da6-00f067aa0ba902b7-01"), None);
        assert_eq!(
            of("00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            None
        );
        assert_eq!(trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn hostname_replaces_the_own_name_line() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 hearth\n::1 localhost\n";
        assert_eq!(
            hosts_with_hostname(hosts, "sbx-1"),
            "127.0.0.1 localhost\n::1 localhost\n127.0.1.1\tsbx-1\n"
        );
        assert_eq!(hosts_with_hostname("", "a"), "127.0.1.1\ta\n");
    }

    #[test]
    fn clock_is_left_alone_within_tolerance() {
        assert!(!clock_needs_setting(1_000, 1_040));
        assert!(clock_needs_setting(1_000, 5_000));
        assert!(clock_needs_setting(5_000, 1_000));
    }
}
