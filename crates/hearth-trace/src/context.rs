//! The W3C trace context (`traceparent`, `tracestate`) across hops: taken
//! from the current span into a request's headers, and a new span made the
//! child of what a request's headers carry.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers that continue the current span's trace in another process:
/// none when no trace is being recorded.
pub fn current_headers() -> Vec<(&'static str, String)> {
    let context = tracing::Span::current().context();
    let mut fields = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    // The propagator writes only the fields it knows; these are they.
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| Some((name, fields.remove(name)?)).filter(|(_, v)| !v.is_empty()))
        .collect()
}

/// Adds [`current_headers`] to `headers`.
pub fn inject_current(headers: &mut http::HeaderMap) {
    for (name, value) in current_headers() {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

struct ReadHeaders<'a>(&'a http::HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` the child of the trace `headers` continue, when they carry
/// a valid `traceparent` (a malformed one is ignored: the span starts a
/// trace of its own).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&ReadHeaders(headers));
    if parent.span().span_context().is_valid() {
        // Fails only for a span that already started; ours are new.
        let _ = span.set_parent(parent);
    }
}

/// The trace id (32 hex digits) of the current span, when one is recorded:
/// for log lines that a trace should be found by.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
