//! What an operator can set about the API.

use std::time::Duration;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// A sandbox's lifetime when the create names none.
    pub default_timeout: Duration,
    /// The longest lifetime a create, connect or timeout may ask for.
    pub max_timeout: Duration,
    /// The domain for `<port>-<sandboxID>.<domain>` host routing, returned
    /// to the SDKs as the sandbox's `domain`.
    pub domain: Option<String>,
    /// Sandboxes a new team may run at once (creates in flight count);
    /// `hearth up` also gives its default team this limit at each start.
    pub team_max_sandboxes: i64,
    /// Paused sandboxes and snapshots a team may keep (on its nodes' disks);
    /// a pause or snapshot beyond it gets 429. The timeout's pause of an
    /// `autoPause` sandbox is not refused (it was asked for at create).
    pub team_max_kept: i64,
    /// The URL the SDKs reach this API at (`http://host:port`), for the
    /// upload URLs it hands out; `None` takes the request's `Host`.
    pub public_url: Option<String>,
    /// Template builds that run at once; more wait (status `waiting`).
    pub max_concurrent_builds: usize,
    /// The longest a template build may take on its node.
    pub build_timeout: Duration,
    /// The largest build-context archive an upload may carry.
    pub max_upload_bytes: u64,
    /// The size of all stored uploads beyond which the least recently used
    /// are removed (a client uploads a removed one again when asked).
    pub upload_cache_bytes: u64,
    /// How long an upload URL stays valid once handed out.
    pub upload_url_ttl: Duration,
    /// The longest one upload may take, start to end.
    pub upload_timeout: Duration,
    /// How long the control plane waits for each kind of node call.
    pub node_deadlines: NodeDeadlines,
}

/// Deadlines of the calls to nodes, per purpose: a node that does not
/// answer within them is skipped (placement, sweeps) or reported (requests),
/// so one hung node never stalls creates on the others or the enforcement
/// of timeouts.
#[derive(Debug, Clone)]
pub struct NodeDeadlines {
    /// A create: the node may wait for a start turn and then boot under TCG.
    /// A create the control plane gave up on is undone by the node.
    pub create: Duration,
    /// Asking a node for its load when placing a sandbox or a build.
    pub probe: Duration,
    /// A node's list (reconciliation) and the deletes of the timeout
    /// enforcer, per node and round.
    pub sweep: Duration,
}

impl Default for NodeDeadlines {
    fn default() -> Self {
        Self {
            create: Duration::from_secs(120),
            probe: Duration::from_secs(3),
            sweep: Duration::from_secs(10),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            domain: None,
            team_max_sandboxes: 100,
            team_max_kept: 100,
            public_url: None,
            max_concurrent_builds: 2,
            build_timeout: Duration::from_secs(3600),
            max_upload_bytes: 1 << 30,
            upload_cache_bytes: 10 << 30,
            upload_url_ttl: Duration::from_secs(3600),
            // The SDKs give an upload an hour too.
            upload_timeout: Duration::from_secs(3600),
            node_deadlines: NodeDeadlines::default(),
        }
    }
}

impl ApiConfig {
    /// A requested lifetime in seconds, checked against the limits; `None`
    /// takes the default.
    pub fn timeout(&self, seconds: Option<i64>) -> ApiResult<Duration> {
        let Some(seconds) = seconds else {
            return Ok(self.default_timeout);
        };
        let max = self.max_timeout.as_secs();
        match u64::try_from(seconds) {
            Ok(s) if s <= max => Ok(Duration::from_secs(s)),
            Ok(_) => Err(ApiError::BadRequest(format!(
                "timeout {seconds} s is over the limit of {max} s"
            ))),
            Err(_) => Err(ApiError::BadRequest(format!(
                "timeout must not be negative, got {seconds}"
            ))),
        }
    }
}

/// A duration as milliseconds for the store's times.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
