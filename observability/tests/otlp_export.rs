//! Spans of one RPC reach an OTLP collector, and the server's span joins the client's trace.
//!
//! The collector is an in-process tonic server implementing the OTLP `TraceService`; the RPC
//! goes from a tonic client through [`TraceLayer::client`] over 127.0.0.1 to a tonic server
//! behind [`TraceLayer::server`]. One test per binary: `init` installs the global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::otlp::{attribute, start_collector};

use observability::{TelemetryConfig, TraceLayer};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use skywire_proto::skywire::testing::v1::ProbeRequest;
use skywire_proto::testing::{ProbeClient, ProbeService};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_of_one_rpc_share_a_trace() {
    let collector = start_collector().await;
    let guard = observability::init_with(TelemetryConfig {
        service_name: "otlp-test".into(),
        log_format: observability::LogFormat::Human,
        filter: "info".into(),
        span_filter: "info".into(),
        instance_id: None,
        otlp_endpoint: Some(collector.endpoint()),
    })
    .unwrap();

    // The traced server and client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(TraceLayer::server())
            .add_service(ProbeService::new().into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProbeClient::new(
        tower::ServiceBuilder::new()
            .layer(TraceLayer::client())
            .service(channel),
    );
    client
        .unary(ProbeRequest {
            payload: "traced".into(),
            ..ProbeRequest::default()
        })
        .await
        .unwrap();

    // Flush, then look at what the collector got.
    tokio::time::timeout(Duration::from_secs(10), guard.shutdown())
        .await
        .expect("the guard flushes without hanging");
    let spans = collector.spans();
    let find = |kind: SpanKind| {
        spans
            .iter()
            .find(|(_, s)| s.kind == kind as i32 && s.name == "skywire.testing.v1.Probe/Unary")
            .unwrap_or_else(|| panic!("no {kind:?} span among {spans:#?}"))
    };
    let (client_service, client_span) = find(SpanKind::Client);
    let (server_service, server_span) = find(SpanKind::Server);

    assert_eq!(client_service, "otlp-test");
    assert_eq!(server_service, "otlp-test");
    assert_eq!(server_span.trace_id, client_span.trace_id, "one trace");
    assert_eq!(
        server_span.parent_span_id, client_span.span_id,
        "the client span is the parent"
    );
    for span in [client_span, server_span] {
        assert_eq!(attribute(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attribute(span, "rpc.service").as_deref(),
            Some("skywire.testing.v1.Probe")
        );
        assert_eq!(attribute(span, "rpc.method").as_deref(), Some("Unary"));
        assert_eq!(
            attribute(span, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    collector.stop().await;
}
