//! The lines of an `/execute` response: one compact JSON object each,
//! newline-terminated, in the order the kernel produced them (contract §6;
//! the SDKs fail on a blank line, on a line without `type`, and on JSON
//! that is not strictly valid).

use serde::Serialize;
use serde_json::{Map, Value};

/// One line of the NDJSON stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Stdout {
        text: String,
        timestamp: String,
    },
    Stderr {
        text: String,
        timestamp: String,
    },
    /// A display or the cell's value; the fields are [`result`]'s.
    Result(Map<String, Value>),
    Error {
        name: String,
        value: String,
        traceback: String,
    },
    NumberOfExecutions {
        execution_count: i64,
    },
    EndOfExecution,
    /// Sent while an execution is silent, so that a client that went away
    /// is noticed (the write fails); the SDKs skip it.
    Keepalive,
}

impl Line {
    /// The line as written: JSON and a newline.
    pub fn to_bytes(&self) -> bytes::Bytes {
        // A Line has string keys and JSON values only: it always encodes.
        let mut encoded =
            serde_json::to_vec(self).unwrap_or_else(|_| br#"{"type":"keepalive"}"#.to_vec());
        encoded.push(b'\n');
        encoded.into()
    }

    pub fn error(name: &str, value: impl Into<String>) -> Self {
        Self::Error {
            name: name.to_owned(),
            value: value.into(),
            traceback: String::new(),
        }
    }
}

/// What the client is sent: a line, holding its share of the output
/// budget until the response body has taken it.
pub struct Chunk {
    pub bytes: bytes::Bytes,
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Where each MIME type of a display goes in a result (the SDKs' model):
/// everything else goes into `extra`.
const FORMATS: &[(&str, &str)] = &[
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
    ("e2b/data", "data"),
    ("e2b/chart", "chart"),
];

/// A result line's fields from a Jupyter MIME bundle. `is_main_result` is
/// true for the cell's value (`execute_result`), false for displays.
pub fn result(bundle: Map<String, Value>, is_main_result: bool) -> Line {
    let mut fields = Map::new();
    let mut extra = Map::new();
    for (mime, value) in bundle {
        match FORMATS.iter().find(|(known, _)| *known == mime) {
            Some((_, "text")) => {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                fields.insert("text".into(), Value::String(unquoted(&text).to_owned()));
            }
            Some((_, key)) => {
                fields.insert((*key).into(), value);
            }
            None => {
                extra.insert(mime, value);
            }
        }
    }
    fields.insert("extra".into(), Value::Object(extra));
    fields.insert("is_main_result".into(), Value::Bool(is_main_result));
    Line::Result(fields)
}

/// A string's repr without its quotes: Python shows `'hi'` for "hi", the
/// SDKs expect `hi`.
fn unquoted(text: &str) -> &str {
    for quote in ['\'', '"'] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return &text[1..text.len() - 1];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bundle(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn lines_are_compact_json_with_a_type() {
        let line = Line::Stdout {
            text: "hi\n".into(),
            timestamp: "2026-12-02T00:00:00Z".into(),
        };
        assert_eq!(
            line.to_bytes(),
            &b"{\"type\":\"stdout\",\"text\":\"hi\\n\",\"timestamp\":\"2026-12-02T00:00:00Z\"}\n"[..]
        );
        assert_eq!(
            Line::EndOfExecution.to_bytes(),
            &b"{\"type\":\"end_of_execution\"}\n"[..]
        );
        assert_eq!(
            Line::NumberOfExecutions { execution_count: 3 }.to_bytes(),
            &b"{\"type\":\"number_of_executions\",\"execution_count\":3}\n"[..]
        );
    }

    #[test]
    fn mime_types_become_the_sdks_fields() -> Result<(), serde_json::Error> {
        let line = result(
            bundle(json!({
                "text/plain": "'hello'",
                "image/png": "iVBOR",
                "e2b/chart": {"type": "line"},
                "application/vnd.custom+json": {"a": 1},
            })),
            true,
        );
        let value = serde_json::to_value(&line)?;
        assert_eq!(
            value,
            json!({
                "type": "result",
                "text": "hello",
                "png": "iVBOR",
                "chart": {"type": "line"},
                "extra": {"application/vnd.custom+json": {"a": 1}},
                "is_main_result": true,
            })
        );
        // A display of LaTeX only has no text at all.
        let latex = serde_json::to_value(result(bundle(json!({"text/latex": "$x$"})), false))?;
        assert_eq!(
            latex,
            json!({"type": "result", "latex": "$x$", "extra": {}, "is_main_result": false})
        );
        Ok(())
    }

    #[test]
    fn only_a_matching_pair_of_quotes_is_taken_off() {
        assert_eq!(unquoted("'a'"), "a");
        assert_eq!(unquoted("\"a\""), "a");
        assert_eq!(unquoted("'a\""), "'a\"");
        assert_eq!(unquoted("'"), "'");
        assert_eq!(unquoted("42"), "42");
    }
}
