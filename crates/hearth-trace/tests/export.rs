//! Spans reach an OTLP collector (a stand-in on loopback) over gRPC, and a
//! trace continues across a hop through the headers it carries.

#[path = "support/collector.rs"]
mod collector;

use collector::Collector;
use hearth_trace::{Exporter, context};
use tracing_subscriber::layer::SubscriberExt;

async fn start_collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(collector.clone().serve(listener));
    (collector, format!("http://{address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_as_one_trace_across_a_hop() {
    let (collector, endpoint) = start_collector().await;
    let exporter = Exporter::otlp_grpc(&endpoint, "hearth-test").expect("an exporter");
    let subscriber = tracing_subscriber::registry().with(exporter.layer());
    let hop = tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("request");
        let headers = request.in_scope(|| {
            let mut headers = http::HeaderMap::new();
            context::inject_current(&mut headers);
            headers
        });
        // The other side of the hop: a span of its own, continuing it.
        let served = tracing::info_span!("served");
        context::continue_trace(&served, &headers);
        let trace_id = served.in_scope(context::current_trace_id);
        drop(served);
        drop(request);
        (headers, trace_id)
    });
    let (headers, trace_id) = hop;
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the hop carries a traceparent");
    let flushed = exporter.clone();
    tokio::task::spawn_blocking(move || flushed.flush())
        .await
        .expect("the flush task")
        .expect("the spans were sent");
    let spans = collector.spans.lock().expect("the collector").clone();
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
            .clone()
    };
    let (request, served) = (find("request"), find("served"));
    assert_eq!(request.trace_id, served.trace_id, "one trace");
    assert_eq!(
        served.parent_span_id, request.span_id,
        "served is the child"
    );
    assert_eq!(request.service.as_deref(), Some("hearth-test"));
    assert_eq!(trace_id.as_deref(), Some(request.trace_id.as_str()));
    assert!(
        traceparent.contains(&request.trace_id),
        "{traceparent} names the trace"
    );
    let stopped = exporter.clone();
    tokio::task::spawn_blocking(move || stopped.shutdown())
        .await
        .expect("the shutdown task")
        .expect("a clean shutdown");
}

#[test]
fn without_a_recorded_trace_no_header_is_sent_and_bad_ones_are_ignored() {
    // No OpenTelemetry layer: nothing to continue.
    let span = tracing::info_span!("alone");
    assert!(span.in_scope(context::current_headers).is_empty());
    // A recording subscriber, and a traceparent that is not one.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(opentelemetry::trace::TracerProvider::tracer(&provider, "t"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-not-a-trace-01"),
        );
        let span = tracing::info_span!("fresh");
        context::continue_trace(&span, &headers);
        let own = span
            .in_scope(context::current_trace_id)
            .expect("its own trace");
        assert_eq!(own.len(), 32);
        assert_ne!(own, "0".repeat(32));
    });
}
