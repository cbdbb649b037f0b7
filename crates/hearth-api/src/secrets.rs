//! Random identifiers and secrets: sandbox ids, API keys, access tokens.

use sha2::{Digest, Sha256};

/// `n` random bytes from the OS.
fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sandbox id like E2B's: 20 lowercase letters and digits.
pub fn sandbox_id() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes::<20>()?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// A template ID like E2B's: the same shape as a sandbox ID.
pub fn template_id() -> Result<String, getrandom::Error> {
    sandbox_id()
}

/// A new API key: `e2b_` and 40 hex digits, the shape SDKs ≤ 2.45 check.
pub fn api_key() -> Result<String, getrandom::Error> {
    Ok(format!("e2b_{}", hex(&random_bytes::<20>()?)))
}

/// A bearer secret for envd or a sandbox's public ports.
pub fn access_token() -> Result<String, getrandom::Error> {
    Ok(hex(&random_bytes::<24>()?))
}

/// A random id for teams and keys.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How a key is stored: its SHA-256, so a leaked database leaks no key.
pub fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Constant-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_have_their_shapes() -> Result<(), getrandom::Error> {
        let id = sandbox_id()?;
        assert_eq!(id.len(), 20);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let key = api_key()?;
        assert!(key.starts_with("e2b_") && key.len() == 44);
        assert!(key[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(api_key()?, key);
        assert_eq!(key_hash("e2b_00").len(), 64);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
        Ok(())
    }
}
