//! gRPC over dmsg through a relay (PROTOCOL.md §11): a tonic server fed by a dmsg listener,
//! a tonic channel whose connector dials a dmsg address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, addr, connected, port};
use dmsg::client::ClientConfig;
use dmsg::grpc::Incoming;
use dmsg::server::ServerConfig;
use futures::StreamExt;
use skywire_proto::skywire::testing::v1::ProbeRequest;
use skywire_proto::testing::{ProbeClient, ProbeService};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Starts a tonic server (health + probe) on port 80 of a fresh client of `server`.
async fn grpc_listener(
    server: &TestServer,
) -> (
    dmsg::client::Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    ProbeService,
) {
    let (host, _session) = connected(server, ClientConfig::default()).await;
    let listener = host.listen(port(80)).unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "skywire.testing.v1.Probe",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let probe = ProbeService::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn({
        let probe = probe.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(probe.into_server())
                .serve_with_incoming_shutdown(Incoming::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }
    });
    (host, stop, serve, probe)
}

/// A tonic health check and a server-streaming RPC work through a relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_server_streams_work_through_a_relay() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (host, stop, serve, _probe) = grpc_listener(&server).await;
    let (caller, session) = connected(&server, ClientConfig::default()).await;
    let channel = dmsg::grpc::channel(caller.clone(), session, addr(&host, 80));

    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "skywire.testing.v1.Probe".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    let mut probe = ProbeClient::new(channel);
    let request = ProbeRequest {
        items: 25,
        payload: "over dmsg".into(),
        ..ProbeRequest::default()
    };
    let items: Vec<_> = probe
        .server_stream(request)
        .await
        .unwrap()
        .into_inner()
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items.len(), 25);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, item)| item.index as usize == i && item.payload == "over dmsg")
    );

    let _ = stop.send(());
    serve.await.unwrap();
    caller.close().await;
    host.close().await;
    server.stop().await;
}

/// One dmsg stream carries one HTTP/2 connection: 1,000 sequential calls open one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_calls_reuse_one_dmsg_stream() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (host, stop, serve, probe_service) = grpc_listener(&server).await;
    let (caller, session) = connected(&server, ClientConfig::default()).await;
    let mut probe = ProbeClient::new(dmsg::grpc::channel(
        caller.clone(),
        session,
        addr(&host, 80),
    ));
    for i in 0..1000u64 {
        let reply = probe
            .unary(ProbeRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.calls, i + 1);
    }
    assert_eq!(probe_service.calls(), 1000);
    assert_eq!(
        server.server.stats().streams_total,
        1,
        "every call rode the same dmsg stream"
    );
    let _ = stop.send(());
    serve.await.unwrap();
    caller.close().await;
    host.close().await;
    server.stop().await;
}
