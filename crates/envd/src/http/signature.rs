//! Signed `/files` URLs: `v1_` + base64(sha256("<path>:<read|write>:<user>:<token>[:<expiration>]"))
//! with the standard alphabet and padding stripped, as the SDKs build them.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Which `/files` operation a signature allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("invalid signature")]
    Mismatch,
    #[error("signature has expired")]
    Expired,
    #[error("unsupported signature version (expected v1_)")]
    Version,
}

pub fn sign(
    path: &str,
    operation: Operation,
    user: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut text = format!("{path}:{}:{user}:{token}", operation.as_str());
    if let Some(expiration) = expiration {
        text.push_str(&format!(":{expiration}"));
    }
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Checks a signature from the query against the sandbox's token at `now` (unix seconds).
pub fn verify(
    signature: &str,
    path: &str,
    operation: Operation,
    user: &str,
    token: &str,
    expiration: Option<i64>,
    now: i64,
) -> Result<(), SignatureError> {
    if !signature.starts_with("v1_") {
        return Err(SignatureError::Version);
    }
    let expected = sign(path, operation, user, token, expiration);
    // Compare without short-circuiting on the first differing byte.
    let same = expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(SignatureError::Mismatch);
    }
    match expiration {
        Some(expiration) if expiration < now => Err(SignatureError::Expired),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // sha256("/a:read::tok") in standard base64 without padding.
        let digest = Sha256::digest(b"/a:read::tok");
        let expected = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD
                .encode(digest)
                .trim_end_matches('=')
        );
        assert_eq!(sign("/a", Operation::Read, "", "tok", None), expected);
    }

    #[test]
    fn verifies_operation_user_and_expiry() {
        let sig = sign("/f", Operation::Write, "user", "t", Some(100));
        assert_eq!(
            verify(&sig, "/f", Operation::Write, "user", "t", Some(100), 50),
            Ok(())
        );
        assert_eq!(
            verify(&sig, "/f", Operation::Read, "user", "t", Some(100), 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&sig, "/f", Operation::Write, "root", "t", Some(100), 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&sig, "/f", Operation::Write, "user", "t", Some(100), 101),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify("v2_x", "/f", Operation::Write, "user", "t", None, 0),
            Err(SignatureError::Version)
        );
    }
}
