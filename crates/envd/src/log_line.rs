//! envd's log lines: one flat JSON object per line, with the keys E2B's
//! sandbox logs carry (`timestamp`, lower-case `level`, `logger`, `message`,
//! then the event's own fields). The node reads them off the guest's
//! console and serves them as the sandbox's logs, which the `e2b` CLI parses
//! line by line.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Longest string field kept whole: a command line or an error can be as
/// long as a client made it, and every line crosses a slow serial console.
const MAX_FIELD_CHARS: usize = 2048;

/// Formats every event as one flat JSON line.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render(chrono::Utc::now(), event.metadata(), fields.0);
        writeln!(writer, "{line}")
    }
}

/// The line of one event.
fn render(
    at: chrono::DateTime<chrono::Utc>,
    metadata: &Metadata<'_>,
    fields: Map<String, Value>,
) -> String {
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    line.insert("level".into(), level_name(metadata.level()).into());
    line.insert("logger".into(), logger_of(metadata.target()).into());
    // The event's own fields come after, and may name its logger.
    line.extend(fields);
    line.entry("message").or_insert_with(|| "".into());
    Value::Object(line).to_string()
}

/// E2B's level names (zerolog's).
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The logger an event belongs to, by the module that logged it, named as
/// E2B's envd names its loggers.
fn logger_of(target: &str) -> &'static str {
    if target.starts_with("envd::process") {
        "process"
    } else if target.starts_with("envd::filesystem") {
        "filesystem"
    } else if target.starts_with("envd::port_forward") {
        "port-forwarder"
    } else {
        "envd"
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

fn bounded(text: String) -> Value {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, bounded(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, bounded(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, bounded(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(log: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(FlatJson)
            .with_max_level(Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().expect("not poisoned").clone())
            .expect("lines are UTF-8");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn an_event_is_one_flat_line_with_e2bs_keys() {
        let lines = lines_of(|| {
            tracing::info!(
                target: "envd::process::spawn",
                event_type = "process_start",
                pid = 412,
                command = "/bin/bash -l -c ls",
                "Process with pid {} started",
                412
            );
            tracing::warn!(target: "hyper::proto", error = %"reset", "a connection ended");
        });
        assert_eq!(lines.len(), 2);
        let start = &lines[0];
        assert_eq!(start["level"], "info");
        assert_eq!(start["logger"], "process");
        assert_eq!(start["event_type"], "process_start");
        assert_eq!(start["pid"], 412);
        assert_eq!(start["command"], "/bin/bash -l -c ls");
        assert_eq!(start["message"], "Process with pid 412 started");
        let at = start["timestamp"].as_str().expect("a timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["logger"], "envd");
        assert_eq!(lines[1]["error"], "reset");
    }

    #[test]
    fn long_fields_are_cut_and_loggers_follow_the_module() {
        let long = "x".repeat(10_000);
        let lines = lines_of(|| {
            tracing::info!(target: "envd::filesystem::watch", path = %long, "watching");
            tracing::info!(target: "envd::port_forward", "relaying");
        });
        let path = lines[0]["path"].as_str().expect("a path");
        assert_eq!(path.chars().count(), MAX_FIELD_CHARS + 1);
        assert_eq!(lines[0]["logger"], "filesystem");
        assert_eq!(lines[1]["logger"], "port-forwarder");
    }
}
