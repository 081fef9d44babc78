//! The `TransportSetup` gRPC service on real TCP, relaying to two visors' transport gateways
//! over dmsg: an operator builds, lists and removes a transport A–B; a visor that does not
//! trust this transport-setup refuses its stream and the operator gets PERMISSION_DENIED
//! naming it; a visor nobody reaches is UNAVAILABLE naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../visor/tests/common/mod.rs"]
mod common;

use discovery_client::hexfield::pk_to_proto;
use dmsg::identity::Keypair;
use setup_svc::transport_setup::{ERROR_DOMAIN, TransportSetupService};
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::transport_setup_client::TransportSetupClient;
use skywire_proto::skywire::setup::v1::transport_setup_server::TransportSetupServer;
use tokio_stream::wrappers::TcpListenerStream;
use visor::gateway::TrustedKeys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_builds_lists_and_removes_a_transport() {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(3, &relay).await;
    let setup_key = Keypair::generate();
    // A and B trust this transport-setup; C trusts nobody.
    let gateways = common::ServedGateways::start(&net, |i| TrustedKeys {
        transport_setup: if i < 2 {
            [setup_key.public()].into()
        } else {
            Default::default()
        },
        ..TrustedKeys::default()
    });
    let dmsg_client = relay.client(&setup_key);
    common::wait_until("transport-setup has a session", || {
        !dmsg_client.connected_servers().is_empty()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TransportSetupServer::new(TransportSetupService::new(
                dmsg_client.downgrade(),
            )))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut operator = TransportSetupClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (a, b, c) = (
        net[0].visor.public_key(),
        net[1].visor.public_key(),
        net[2].visor.public_key(),
    );

    let info = operator
        .add_transport(pb::AddTransportRequest {
            from: pk_to_proto(&a),
            to: pk_to_proto(&b),
            r#type: "stcp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.local_pk.clone(), info.remote_pk.clone()),
        (pk_to_proto(&a), pk_to_proto(&b))
    );
    let listed = operator
        .list_transports(pb::ListTransportsRequest {
            pk: pk_to_proto(&a),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.transports.len(), 1);
    assert_eq!(listed.transports[0].id, info.id);
    operator
        .remove_transport(pb::RemoveTransportRequest {
            from: pk_to_proto(&a),
            id: info.id.clone(),
        })
        .await
        .unwrap();
    common::wait_until("the transport is gone", || {
        net[0].visor.transports().is_empty()
    })
    .await;

    let bad = operator
        .add_transport(pb::AddTransportRequest {
            from: pk_to_proto(&a),
            to: pk_to_proto(&b),
            r#type: "carrier-pigeon".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    let refused = operator
        .list_transports(pb::ListTransportsRequest {
            pk: pk_to_proto(&c),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        skywire_proto::status::reason_in(&refused, ERROR_DOMAIN).as_deref(),
        Some("not_trusted")
    );
    assert!(
        refused.message().contains(&c.to_string()),
        "{}",
        refused.message()
    );
    // A visor nobody reaches: UNAVAILABLE naming it.
    let nowhere = Keypair::generate().public();
    let unreachable = operator
        .list_transports(pb::ListTransportsRequest {
            pk: pk_to_proto(&nowhere),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unreachable.code(),
        tonic::Code::Unavailable,
        "{unreachable:?}"
    );
    assert_eq!(
        skywire_proto::status::reason_in(&unreachable, ERROR_DOMAIN).as_deref(),
        Some("visor_unreachable")
    );
    assert!(unreachable.message().contains(&nowhere.to_string()));

    server.abort();
    gateways.stop().await;
    dmsg_client.close().await;
    for node in &net {
        node.visor.shutdown().await;
    }
    relay.stop().await;
}
