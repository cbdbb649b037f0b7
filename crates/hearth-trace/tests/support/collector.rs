//! A stand-in OTLP collector (gRPC `TraceService`) for tests: keeps every
//! span it is sent, and hands each to an optional sink as it arrives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// A span as the collector received it; ids in lower-case hex.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

type Sink = Box<dyn Fn(&Received) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Received>>>,
    sink: Option<Arc<Sink>>,
}

impl Collector {
    /// Also hands every span to `sink` as it arrives.
    #[allow(dead_code)] // by the example, not the tests
    pub fn with_sink(sink: impl Fn(&Received) + Send + Sync + 'static) -> Self {
        Self {
            spans: Arc::default(),
            sink: Some(Arc::new(Box::new(sink))),
        }
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<AnyValue>) -> Option<String> {
    Some(match value?.value? {
        Value::StringValue(s) => s,
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .filter_map(|kv| Some((kv.key, text(kv.value)?)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .and_then(|resource| attributes(resource.attributes).remove("service.name"));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        service: service.clone(),
                        attributes: attributes(span.attributes),
                    });
                }
            }
        }
        if let Some(sink) = &self.sink {
            received.iter().for_each(|span| sink(span));
        }
        self.spans
            .lock()
            .map_err(|_| tonic::Status::internal("the collector's store is poisoned"))?
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
