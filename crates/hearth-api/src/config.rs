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
    /// Sandboxes a new team may run at once.
    pub team_max_sandboxes: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            domain: None,
            team_max_sandboxes: 100,
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
