//! An in-process OTLP/gRPC trace collector: point `OTEL_EXPORTER_OTLP_ENDPOINT` of the
//! processes under test at [`RunningCollector::endpoint`] and read what they exported.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Collected spans with their resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    resources: Arc<Mutex<Vec<Resource>>>,
}

/// The resource attributes of one export, as text.
pub type Resource = Vec<(String, String)>;

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes: Resource = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter_map(|kv| Some((kv.key.clone(), string_value(kv.value.as_ref()?)?)))
                .collect();
            self.resources.lock().unwrap().push(attributes);
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string_value(kv.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A string or integer attribute value as text.
pub fn string_value(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A span attribute as text.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(kv.value.as_ref()?))
}

/// A running collector.
pub struct RunningCollector {
    addr: SocketAddr,
    collector: Collector,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningCollector {
    /// The endpoint to give the exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.collector.spans.lock().unwrap().clone()
    }

    /// The resource attributes of every export so far.
    pub fn resources(&self) -> Vec<Resource> {
        self.collector.resources.lock().unwrap().clone()
    }

    /// Stops the collector and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Starts a collector on 127.0.0.1 with an OS-chosen port.
pub async fn start_collector() -> RunningCollector {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    RunningCollector {
        addr,
        collector,
        stop,
        task,
    }
}
