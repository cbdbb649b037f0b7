//! Signed `/files` URLs that name no sandbox.
//!
//! With `E2B_SANDBOX_URL` set (as in the `sdk.env` that `make up` writes:
//! the API's own URL), the SDKs' `download_url()` and `upload_url()` are
//! `<E2B_SANDBOX_URL>/files?path=…[&username=…]&signature=v1_…[&signature_expiration=…]`,
//! made to be fetched by any HTTP client. Such a client sends no
//! `E2b-Sandbox-Id`, and the host is the API's, not `<port>-<id>.<domain>`:
//! the signature is all that tells the sandbox. The SDKs compute it as
//! `"v1_" + base64(sha256("<path>:<read|write>:<username>:<envd access token>[:<expiration>]"))`,
//! standard alphabet without padding, with an empty username when none is
//! given (`e2b/sandbox/signature.py`, the JS SDK's `getSignature`); only
//! the sandbox whose envd token it was made with matches it. envd checks the
//! signature again (`crates/envd/src/http/files_access.rs`), so this lookup
//! only decides where the request goes, never what it may do.
//!
//! Anyone can send such a request, so the work is bounded: the cheap checks
//! come first (method, signature shape, expiry, sizes), then the running
//! sandboxes with an envd token are each hashed once, at most
//! [`MAX_CANDIDATES`] of them and at most [`LOOKUPS_AT_ONCE`] lookups at a
//! time. Every candidate is compared, in constant time and without stopping
//! at a match, so the timing tells neither which sandbox matched nor how
//! close a guess came.

use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::secrets::same_secret;
use crate::state::AppState;
use crate::store::StoreError;

/// envd's file endpoint, the only one signed URLs are made for.
const FILES_PATH: &str = "/files";
/// `v1_` and the 43 characters of an unpadded base64 SHA-256.
const SIGNATURE_LEN: usize = 3 + 43;
/// The longest `path` and `username` taken (Linux's own limits: PATH_MAX,
/// and far beyond any user name).
const MAX_PATH: usize = 4096;
const MAX_USERNAME: usize = 256;
/// The most sandboxes one lookup hashes.
pub const MAX_CANDIDATES: usize = 10_000;
/// Lookups that run at once; more wait for a turn, up to [`TURN_WAIT`].
pub const LOOKUPS_AT_ONCE: usize = 4;
const TURN_WAIT: Duration = Duration::from_secs(10);

/// Limits the signed-URL lookups that run at once.
#[derive(Debug)]
pub struct SignedUrls {
    turns: Semaphore,
}

impl Default for SignedUrls {
    fn default() -> Self {
        Self {
            turns: Semaphore::new(LOOKUPS_AT_ONCE),
        }
    }
}

/// Why a `/files` request that names no sandbox cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum SignedUrlError {
    #[error(
        "a /files request must name its sandbox: send the E2b-Sandbox-Id header, use the host \
         <port>-<sandboxID>.<domain>, or use a signed URL from download_url()/upload_url()"
    )]
    NotSigned,
    #[error("signed /files URLs are for GET (download) and POST (upload)")]
    Method,
    #[error("invalid signed URL: {0}")]
    Malformed(&'static str),
    #[error("the signature has expired")]
    Expired,
    #[error(
        "the signature matches no running sandbox: the sandbox may have been killed, or the URL \
         was changed"
    )]
    NoMatch,
    #[error(
        "too many sandboxes run to find a signed URL's sandbox by its signature: send the \
         E2b-Sandbox-Id header with the request"
    )]
    TooMany,
    #[error("too many signed URLs are being looked up; try again")]
    Busy,
    #[error("listing the running sandboxes: {0}")]
    Store(#[from] StoreError),
}

impl From<SignedUrlError> for ApiError {
    fn from(error: SignedUrlError) -> Self {
        let message = error.to_string();
        match error {
            SignedUrlError::NotSigned
            | SignedUrlError::Method
            | SignedUrlError::Malformed(_)
            | SignedUrlError::TooMany => ApiError::BadRequest(message),
            SignedUrlError::Expired | SignedUrlError::NoMatch => ApiError::Unauthorized(message),
            SignedUrlError::Busy => ApiError::Unavailable(message),
            SignedUrlError::Store(_) => ApiError::Internal(message),
        }
    }
}

/// Whether `request` is for envd's file endpoint (and names no sandbox:
/// the caller checked).
pub fn applies(request: &Request) -> bool {
    request.uri().path() == FILES_PATH
}

/// What a signed URL signs.
#[derive(Debug, PartialEq, Eq)]
struct Signed {
    path: String,
    operation: &'static str,
    username: String,
    signature: String,
    expiration: Option<i64>,
}

/// Reads the signed parts of the URL, refusing what no SDK makes. The
/// first of repeated parameters counts, as it does for envd.
fn signed_parts(method: &Method, query: Option<&str>, now: i64) -> Result<Signed, SignedUrlError> {
    let mut path = None;
    let mut username = None;
    let mut signature = None;
    let mut expiration = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "path" => &mut path,
            "username" => &mut username,
            "signature" => &mut signature,
            "signature_expiration" => &mut expiration,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    let signature = signature.ok_or(SignedUrlError::NotSigned)?;
    let operation = match *method {
        Method::GET => "read",
        Method::POST => "write",
        _ => return Err(SignedUrlError::Method),
    };
    if signature.len() != SIGNATURE_LEN || !signature.starts_with("v1_") {
        return Err(SignedUrlError::NoMatch);
    }
    let path = path.unwrap_or_default();
    let username = username.unwrap_or_default();
    if path.len() > MAX_PATH {
        return Err(SignedUrlError::Malformed("the path is too long"));
    }
    if username.len() > MAX_USERNAME {
        return Err(SignedUrlError::Malformed("the username is too long"));
    }
    let expiration = expiration
        .map(|e| e.parse::<i64>())
        .transpose()
        .map_err(|_| SignedUrlError::Malformed("signature_expiration is not a number"))?;
    // Checked now, before any hashing: envd refuses it all the same.
    if expiration.is_some_and(|e| e < now) {
        return Err(SignedUrlError::Expired);
    }
    Ok(Signed {
        path,
        operation,
        username,
        signature,
        expiration,
    })
}

/// The signature the SDKs make for `signed` with envd token `token`.
fn signature(signed: &Signed, token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(signed.path.as_bytes());
    hash.update(b":");
    hash.update(signed.operation.as_bytes());
    hash.update(b":");
    hash.update(signed.username.as_bytes());
    hash.update(b":");
    hash.update(token.as_bytes());
    if let Some(expiration) = signed.expiration {
        hash.update(format!(":{expiration}").as_bytes());
    }
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash.finalize())
    )
}

/// The running sandbox whose envd token the signed URL (`method` and
/// `query` of a `/files` request) was made with.
pub async fn find(
    app: &AppState,
    method: &Method,
    query: Option<&str>,
) -> Result<String, SignedUrlError> {
    let now = chrono::Utc::now().timestamp();
    let signed = signed_parts(method, query, now)?;
    let _turn = tokio::time::timeout(TURN_WAIT, app.signed_urls.turns.acquire())
        .await
        .map_err(|_| SignedUrlError::Busy)?
        .map_err(|_| SignedUrlError::Busy)?;
    let mut candidates = Vec::new();
    // Only nodes of this cluster: the proxy cannot reach any other.
    for node in app.nodes.all() {
        for record in app.store.sandboxes_on(&node.name).await? {
            if let Some(token) = record.envd_access_token {
                candidates.push((record.sandbox_id, token));
            }
        }
        if candidates.len() > MAX_CANDIDATES {
            return Err(SignedUrlError::TooMany);
        }
    }
    let mut found = None;
    let mut matches = 0usize;
    for (id, token) in candidates {
        if same_secret(&signature(&signed, &token), &signed.signature) {
            matches += 1;
            found = Some(id);
        }
    }
    match (matches, found) {
        (1, Some(id)) => Ok(id),
        (0, _) => Err(SignedUrlError::NoMatch),
        (_, _) => {
            // Tokens are random: two sandboxes sharing one is a bug.
            tracing::error!(
                matches,
                "a signed URL matches several sandboxes; refusing it"
            );
            Err(SignedUrlError::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_the_sdks() {
        // Python: get_signature("/home/user/a b.txt", "read", "user", "tok", None)
        // = "v1_" + base64(sha256(b"/home/user/a b.txt:read:user:tok")), '=' stripped.
        let signed = Signed {
            path: "/home/user/a b.txt".into(),
            operation: "read",
            username: "user".into(),
            signature: String::new(),
            expiration: None,
        };
        let digest = Sha256::digest(b"/home/user/a b.txt:read:user:tok");
        let padded = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(
            signature(&signed, "tok"),
            format!("v1_{}", padded.trim_end_matches('='))
        );
        let with_expiry = Signed {
            expiration: Some(1_700_000_000),
            ..signed
        };
        let digest = Sha256::digest(b"/home/user/a b.txt:read:user:tok:1700000000");
        let padded = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(
            signature(&with_expiry, "tok"),
            format!("v1_{}", padded.trim_end_matches('='))
        );
    }

    #[test]
    fn urls_are_read_as_the_sdks_write_them() {
        let sig = format!("v1_{}", "A".repeat(43));
        let query = format!(
            "path=%2Fhome%2Fuser%2Fa%20b.txt&username=user&signature={sig}&signature_expiration=200"
        );
        let signed = signed_parts(&Method::POST, Some(&query), 100);
        assert!(
            matches!(&signed, Ok(s) if s.path == "/home/user/a b.txt" && s.operation == "write"
                && s.username == "user" && s.expiration == Some(200)),
            "{signed:?}"
        );
        assert!(matches!(
            signed_parts(&Method::GET, Some(&query), 201),
            Err(SignedUrlError::Expired)
        ));
        assert!(matches!(
            signed_parts(&Method::PUT, Some(&query), 100),
            Err(SignedUrlError::Method)
        ));
        assert!(matches!(
            signed_parts(&Method::GET, Some("path=/a"), 100),
            Err(SignedUrlError::NotSigned)
        ));
        assert!(matches!(
            signed_parts(&Method::GET, Some("path=/a&signature=v1_short"), 100),
            Err(SignedUrlError::NoMatch)
        ));
        let long = format!("path={}&signature={sig}", "a".repeat(MAX_PATH + 1));
        assert!(matches!(
            signed_parts(&Method::GET, Some(&long), 100),
            Err(SignedUrlError::Malformed(_))
        ));
    }
}
