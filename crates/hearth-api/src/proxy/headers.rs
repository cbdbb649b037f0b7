//! Which headers cross the proxy.
//!
//! E2B's proxies (client-proxy and the orchestrator's, both Go's
//! `httputil.ReverseProxy` with a `Rewrite` function) forward every
//! end-to-end request header as the client sent it, `Host` included. They
//! drop only the hop-by-hop headers and the client's own `Forwarded` and
//! `X-Forwarded-{For,Host,Proto}` (Rewrite mode removes those and E2B does not
//! set them again). hearth does the same, and in addition stops the control
//! plane's credentials: here the API and the proxy share one origin (`make
//! up` writes the same URL into E2B_API_URL and E2B_SANDBOX_URL), so a client
//! configured for the API (a browser, `api_headers`, an HTTP library's
//! default headers) would otherwise hand its team's API key to whatever runs
//! in the guest. Stopped:
//!
//! - `X-API-Key`, the only credential hearth's API takes. The SDKs never send
//!   it to a sandbox: their sandbox headers are the user agent, the routing
//!   headers and `X-Access-Token`.
//! - `Authorization: Bearer <token>` when the token has the shape of a
//!   control-plane credential: an API key (`e2b_…`) or an E2B access token
//!   (`sk_e2b_…`, the deprecated `AccessTokenAuth` that SDKs before 2.40 sent
//!   on REST calls). Every other `Authorization` belongs to the guest: envd
//!   takes the user of a call from `Authorization: Basic base64("<user>:")`,
//!   and a service in the guest may have bearer tokens of its own.
//!
//! Kept, as E2B keeps them: `X-Access-Token` (envd's token),
//! `E2B-Traffic-Access-Token`, `E2b-Sandbox-Id`/`E2b-Sandbox-Port`, cookies
//! and everything else.

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Version, header};

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus
/// `Proxy-Connection`, which old clients send in place of `Connection`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a client says about earlier hops: nobody vouches for it, and E2B
/// does not pass it on.
const CLIENT_FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Prefixes of bearer tokens that are control-plane credentials.
const CONTROL_PLANE_TOKENS: [&str; 2] = ["e2b_", "sk_e2b_"];

/// Makes a client's request head the one the sandbox gets (HTTP/1.1, with
/// `upgrade` asked for again when the client asked for it).
pub fn outbound(parts: &mut Parts, upgrade: Option<&HeaderValue>) {
    if parts.version == Version::HTTP_2 {
        to_http1_headers(parts);
    }
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    for name in CLIENT_FORWARDING {
        headers.remove(name);
    }
    strip_control_plane_credentials(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Makes a sandbox's response head the one the client gets.
pub fn inbound(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// The protocol an HTTP/1.1 upgrade request asks for (WebSocket, …).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection = headers.get(header::CONNECTION)?.to_str().ok()?;
    let asks = connection
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// An HTTP/2 request as HTTP/1.1 would carry it: the authority becomes
/// the Host header (the guest sees the same Host either way) and split
/// cookie headers are joined (RFC 9113 §8.2.3).
fn to_http1_headers(parts: &mut Parts) {
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let cookies: Vec<String> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    if cookies.len() > 1
        && let Ok(joined) = HeaderValue::from_str(&cookies.join("; "))
    {
        parts.headers.insert(header::COOKIE, joined);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn strip_control_plane_credentials(headers: &mut HeaderMap) {
    headers.remove("x-api-key");
    if !headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(is_control_plane_credential)
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|value| !is_control_plane_credential(value))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for value in kept {
        headers.append(header::AUTHORIZATION, value);
    }
}

fn is_control_plane_credential(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return false;
    };
    let token = token.trim();
    scheme.eq_ignore_ascii_case("bearer")
        && CONTROL_PLANE_TOKENS
            .iter()
            .any(|prefix| token.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = axum::http::Request::builder().uri("/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap_or_default().into_parts().0
    }

    fn values(parts: &Parts, name: &str) -> Vec<String> {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    #[test]
    fn control_plane_credentials_stop_and_the_guests_pass() {
        let mut p = parts(&[
            ("X-API-Key", "e2b_0123"),
            ("Authorization", "Bearer e2b_0123"),
            ("Authorization", "bearer  sk_e2b_abc"),
            ("Authorization", "Basic dXNlcjo="),
            ("X-Access-Token", "envd-token"),
            ("E2B-Traffic-Access-Token", "traffic"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Forwarded", "for=10.0.0.1"),
        ]);
        outbound(&mut p, None);
        assert!(values(&p, "x-api-key").is_empty());
        assert_eq!(values(&p, "authorization"), ["Basic dXNlcjo="]);
        assert_eq!(values(&p, "x-access-token"), ["envd-token"]);
        assert_eq!(values(&p, "e2b-traffic-access-token"), ["traffic"]);
        assert!(values(&p, "x-forwarded-for").is_empty() && values(&p, "forwarded").is_empty());

        let mut p = parts(&[("Authorization", "Bearer the-guests-own")]);
        outbound(&mut p, None);
        assert_eq!(values(&p, "authorization"), ["Bearer the-guests-own"]);
    }

    #[test]
    fn hop_by_hop_headers_stop_and_upgrades_are_asked_again() {
        let mut p = parts(&[
            ("Connection", "upgrade, x-secret"),
            ("Upgrade", "websocket"),
            ("X-Secret", "1"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
        ]);
        let upgrade = upgrade_protocol(&p.headers);
        assert_eq!(
            upgrade.as_ref().and_then(|v| v.to_str().ok()),
            Some("websocket")
        );
        outbound(&mut p, upgrade.as_ref());
        assert!(values(&p, "x-secret").is_empty());
        assert!(values(&p, "proxy-connection").is_empty() && values(&p, "te").is_empty());
        assert_eq!(values(&p, "connection"), ["upgrade"]);
        assert_eq!(values(&p, "upgrade"), ["websocket"]);
    }
}
