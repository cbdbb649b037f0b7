//! What every Connect handler needs from the request: the acting user and
//! the keepalive cadence, plus the mapping of envd errors to Connect codes.

use std::time::Duration;

use base64::Engine;
use connectrpc::{ConnectError, RequestContext};

use crate::state::Envd;
use crate::users::{User, UserError};

/// Keepalive cadence when the client does not ask for one (upstream: 90 s).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// The user named by `Authorization: Basic base64(user:)`, or the default.
pub fn request_user(envd: &Envd, ctx: &RequestContext) -> Result<User, ConnectError> {
    let name = match ctx.header(http::header::AUTHORIZATION) {
        Some(value) => Some(basic_auth_user(value.as_bytes()).ok_or_else(|| {
            ConnectError::unauthenticated("invalid username: malformed Basic authorization header")
        })?),
        None => None,
    };
    envd.user(name.as_deref()).map_err(user_error)
}

/// Extracts the user name of a Basic authorization value (password ignored).
pub fn basic_auth_user(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let name = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    Some(name.to_string())
}

pub fn user_error(error: UserError) -> ConnectError {
    match error {
        UserError::NotFound(_) => {
            ConnectError::unauthenticated(format!("invalid username: {error}"))
        }
        UserError::Read { .. } => {
            ConnectError::internal(format!("{error}: {}", source_text(&error)))
        }
    }
}

/// How long a stream may stay silent before envd sends a keepalive event.
pub fn keepalive_interval(ctx: &RequestContext) -> Duration {
    ctx.header("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map_or(DEFAULT_KEEPALIVE, Duration::from_secs)
}

/// The error and its causes on one line, for messages sent to clients.
pub fn source_text(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// `error` followed by its causes.
pub fn full_text(error: &dyn std::error::Error) -> String {
    let causes = source_text(error);
    if causes.is_empty() {
        error.to_string()
    } else {
        format!("{error}: {causes}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_auth_user() {
        assert_eq!(basic_auth_user(b"Basic cm9vdDo=").as_deref(), Some("root"));
        assert_eq!(basic_auth_user(b"basic dXNlcjo=").as_deref(), Some("user"));
        assert_eq!(basic_auth_user(b"Bearer abc"), None);
        assert_eq!(basic_auth_user(b"Basic !!!"), None);
    }

    #[test]
    fn keepalive_defaults_and_parses() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            keepalive_interval(&RequestContext::new(headers.clone())),
            DEFAULT_KEEPALIVE
        );
        headers.insert(
            "keepalive-ping-interval",
            http::HeaderValue::from_static("50"),
        );
        assert_eq!(
            keepalive_interval(&RequestContext::new(headers.clone())),
            Duration::from_secs(50)
        );
        headers.insert(
            "keepalive-ping-interval",
            http::HeaderValue::from_static("nope"),
        );
        assert_eq!(
            keepalive_interval(&RequestContext::new(headers)),
            DEFAULT_KEEPALIVE
        );
    }
}
