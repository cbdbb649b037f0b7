//! A sandbox's log as its users read it: one JSON object per line, each
//! stamped when the node got it, from three sources —
//! - envd's own lines (already JSON, with `level`, `logger`, `message`),
//!   read off the guest's console,
//! - the rest of the console (kernel, init), ANSI codes stripped, as
//!   `logger: "console"` lines,
//! - the node's events about the sandbox (created, paused, killed, …), as
//!   `logger: "node"` lines.
//!
//! Bounded by bytes (the oldest lines go first) and by age, so a guest that
//! floods its console costs a fixed amount of memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value};

/// Longest console line kept whole; the rest of a longer one is dropped.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One line of a sandbox's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// When the node got it (Unix ms). Strictly increasing within a log, so
    /// a reader that asks for what came after the last time it saw misses
    /// nothing.
    pub at_ms: i64,
    /// A JSON object with at least `level` and `message`.
    pub line: String,
}

/// E2B's log levels, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// A line's level; E2B reads a missing or unknown one as info.
    pub fn parse(name: &str) -> Self {
        match name {
            "debug" | "trace" => Self::Debug,
            "warn" | "warning" => Self::Warn,
            "error" | "fatal" | "panic" => Self::Error,
            _ => Self::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only lines at or after this time (Unix ms).
    pub start_ms: Option<i64>,
    /// Only lines at or before this time (Unix ms).
    pub end_ms: Option<i64>,
    pub limit: usize,
    /// Newest first.
    pub backward: bool,
    /// Only lines at least this severe.
    pub min_level: Option<LogLevel>,
    /// Only lines whose message contains this (case-sensitive).
    pub search: Option<String>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// A console line not yet ended by a newline.
    partial: Vec<u8>,
    /// Console bytes of the current line beyond [`MAX_LINE_BYTES`].
    partial_overflow: bool,
    last_ms: i64,
    /// Lines dropped to stay within the bounds.
    dropped: u64,
}

/// The log of one sandbox.
#[derive(Debug)]
pub struct SandboxLog {
    capacity_bytes: usize,
    max_age: Duration,
    lines: Mutex<Lines>,
}

/// How far ahead of the clock stamps may run to stay increasing when lines
/// come faster than one a millisecond.
const MAX_STAMP_LEAD_MS: i64 = 1000;

impl SandboxLog {
    pub fn new(capacity_bytes: usize, max_age: Duration) -> Self {
        Self {
            capacity_bytes,
            max_age,
            lines: Mutex::new(Lines::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes bytes the guest wrote to its console; complete lines become
    /// log lines.
    pub fn console_output(&self, chunk: &[u8]) {
        let mut lines = self.lock();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(end);
            take_partial(&mut lines, head);
            let text = std::mem::take(&mut lines.partial);
            lines.partial_overflow = false;
            if let Some(line) = console_line(&text) {
                self.push(&mut lines, line);
            }
            rest = &tail[1..];
        }
        take_partial(&mut lines, rest);
    }

    /// Records something the node did with the sandbox.
    pub fn node_event(&self, level: LogLevel, message: &str, fields: Map<String, Value>) {
        let mut line = Map::new();
        line.insert("level".into(), level.as_str().into());
        line.insert("logger".into(), "node".into());
        line.insert("message".into(), message.into());
        line.extend(fields);
        let mut lines = self.lock();
        self.push(&mut lines, Pending::Stamped(line));
    }

    fn push(&self, lines: &mut Lines, line: Pending) {
        let now = now_ms();
        let at_ms = if lines.last_ms + 1 > now + MAX_STAMP_LEAD_MS {
            lines.last_ms
        } else {
            now.max(lines.last_ms + 1)
        };
        lines.last_ms = at_ms;
        let line = match line {
            Pending::Whole(text) => text,
            Pending::Stamped(mut object) => {
                object.insert("timestamp".into(), rfc3339(at_ms).into());
                Value::Object(object).to_string()
            }
        };
        lines.bytes += line.len();
        lines.lines.push_back(LogLine { at_ms, line });
        self.trim(lines, now);
    }

    /// Drops the oldest lines beyond the byte bound or the age bound.
    fn trim(&self, lines: &mut Lines, now: i64) {
        let oldest_kept =
            now.saturating_sub(i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX));
        while let Some(first) = lines.lines.front() {
            if lines.bytes <= self.capacity_bytes && first.at_ms >= oldest_kept {
                break;
            }
            lines.bytes -= first.line.len();
            lines.lines.pop_front();
            lines.dropped += 1;
        }
    }

    /// The lines `query` asks for, in its direction.
    pub fn query(&self, query: &LogQuery) -> Vec<LogLine> {
        let mut lines = self.lock();
        self.trim(&mut lines, now_ms());
        let wanted = |line: &&LogLine| {
            query.start_ms.is_none_or(|start| line.at_ms >= start)
                && query.end_ms.is_none_or(|end| line.at_ms <= end)
                && matches_content(&line.line, query)
        };
        if query.backward {
            lines
                .lines
                .iter()
                .rev()
                .filter(wanted)
                .take(query.limit)
                .cloned()
                .collect()
        } else {
            lines
                .lines
                .iter()
                .filter(wanted)
                .take(query.limit)
                .cloned()
                .collect()
        }
    }

    /// Every line held, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }

    /// Takes back `saved` lines (of an earlier run of the node), oldest
    /// first, before any new one; lines out of order are dropped, and the
    /// bounds apply.
    pub fn restore(&self, saved: Vec<LogLine>) {
        let mut lines = self.lock();
        for line in saved {
            if line.at_ms <= lines.last_ms {
                continue;
            }
            lines.last_ms = line.at_ms;
            lines.bytes += line.line.len();
            lines.lines.push_back(line);
        }
        self.trim(&mut lines, now_ms());
    }

    /// Bytes held and lines dropped so far.
    pub fn usage(&self) -> (usize, u64) {
        let lines = self.lock();
        (lines.bytes, lines.dropped)
    }
}

/// A line before it has its time.
enum Pending {
    /// Text kept as the guest wrote it (envd's JSON).
    Whole(String),
    /// An object that gets `timestamp` when stamped.
    Stamped(Map<String, Value>),
}

fn take_partial(lines: &mut Lines, bytes: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(lines.partial.len());
    if bytes.len() > room {
        lines.partial_overflow = true;
    }
    lines
        .partial
        .extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// A console line as a log line: envd's JSON lines as they are, anything
/// else wrapped, without terminal escapes; blank lines are dropped.
fn console_line(raw: &[u8]) -> Option<Pending> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    if text.starts_with('{')
        && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text)
        && object.get("level").is_some_and(Value::is_string)
    {
        return Some(Pending::Whole(Value::Object(object).to_string()));
    }
    let plain = strip_terminal_escapes(text);
    let plain = plain.trim();
    if plain.is_empty() {
        return None;
    }
    let mut line = Map::new();
    line.insert("level".into(), "info".into());
    line.insert("logger".into(), "console".into());
    line.insert("message".into(), plain.into());
    Some(Pending::Stamped(line))
}

/// `text` without ANSI escape sequences (colours, cursor moves) and other
/// control characters.
pub fn strip_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn matches_content(line: &str, query: &LogQuery) -> bool {
    if query.min_level.is_none() && query.search.is_none() {
        return true;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    let level = LogLevel::parse(object.get("level").and_then(Value::as_str).unwrap_or(""));
    let message = object.get("message").and_then(Value::as_str).unwrap_or("");
    query.min_level.is_none_or(|min| level >= min)
        && query.search.as_deref().is_none_or(|s| message.contains(s))
}

/// The host's clock in Unix ms, as log lines are stamped.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix ms as RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> SandboxLog {
        SandboxLog::new(1 << 20, Duration::from_secs(3600))
    }

    fn all(log: &SandboxLog) -> Vec<Value> {
        log.query(&LogQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .iter()
        .map(|l| serde_json::from_str(&l.line).expect("every line is JSON"))
        .collect()
    }

    #[test]
    fn envd_lines_stay_as_they_are_and_the_console_is_wrapped_without_escapes() {
        let log = log();
        log.console_output(
            b"[    0.1] \x1b[32mOK\x1b[0m booted\r\n{\"level\":\"info\",\"logger\":\"pro",
        );
        log.console_output(
            b"cess\",\"message\":\"Process with pid 7 started\",\"pid\":7}\n\n\x1b[0m\r\n",
        );
        log.console_output(b"{not json\n");
        let lines = all(&log);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["logger"], "console");
        assert_eq!(lines[0]["message"], "[    0.1] OK booted");
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["logger"], "process");
        assert_eq!(lines[1]["pid"], 7);
        assert_eq!(lines[2]["message"], "{not json");
    }

    #[test]
    fn stamps_increase_and_queries_filter_by_time_level_and_text() {
        let log = log();
        for i in 0..5 {
            log.node_event(
                if i % 2 == 0 {
                    LogLevel::Info
                } else {
                    LogLevel::Error
                },
                &format!("event {i}"),
                Map::new(),
            );
        }
        let lines = log.query(&LogQuery {
            limit: 100,
            ..Default::default()
        });
        assert!(lines.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        let after = log.query(&LogQuery {
            start_ms: Some(lines[2].at_ms),
            limit: 100,
            ..Default::default()
        });
        assert_eq!(after, lines[2..]);
        let errors = log.query(&LogQuery {
            min_level: Some(LogLevel::Warn),
            backward: true,
            limit: 1,
            ..Default::default()
        });
        assert_eq!(errors, vec![lines[3].clone()]);
        let found = log.query(&LogQuery {
            search: Some("event 4".into()),
            limit: 100,
            ..Default::default()
        });
        assert_eq!(found, vec![lines[4].clone()]);
    }

    #[test]
    fn a_flood_stays_within_the_bounds() {
        let log = SandboxLog::new(64 * 1024, Duration::from_secs(3600));
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            log.console_output(&chunk);
        }
        log.console_output(b"\n");
        for _ in 0..10_000 {
            log.console_output(b"spam spam spam spam\n");
        }
        let (bytes, dropped) = log.usage();
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(dropped > 0);
        let lines = all(&log);
        assert!(lines.iter().all(|l| l["message"] == "spam spam spam spam"));
        // The stamps ran ahead of the clock by at most a second.
        let last = log.query(&LogQuery {
            backward: true,
            limit: 1,
            ..Default::default()
        });
        assert!(last[0].at_ms <= now_ms() + MAX_STAMP_LEAD_MS);
    }

    #[test]
    fn old_lines_age_out() {
        let log = SandboxLog::new(1 << 20, Duration::ZERO);
        log.node_event(LogLevel::Info, "gone soon", Map::new());
        std::thread::sleep(Duration::from_millis(5));
        assert!(all(&log).is_empty());
    }
}
