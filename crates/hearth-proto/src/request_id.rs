//! The id of the API request a call serves, carried in the `x-request-id`
//! metadata of the control plane's calls to a node, so that the node's log
//! lines name it too.

pub const REQUEST_ID: &str = "x-request-id";
/// Longer ids are not taken: they would only bloat every log line.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `id` is usable as a request id: short, and made of characters
/// that are safe in a header and a log line.
pub fn is_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_usable() {
        assert!(is_request_id("req-1.2_3"));
        assert!(!is_request_id(""));
        assert!(!is_request_id("two words"));
        assert!(!is_request_id("a\"b"));
        assert!(!is_request_id(&"x".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(is_request_id(&"x".repeat(MAX_REQUEST_ID_LEN)));
    }
}
