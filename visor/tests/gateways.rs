//! The visor's gateways over gRPC tunnelled through dmsg (ARCHITECTURE §6): a trusted key is
//! served; any other key's stream is refused at accept and no RPC runs on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use dmsg::addr::DmsgAddr;
use dmsg::identity::Keypair;
use skywire_proto::skywire::visor::v1 as pb;
use skywire_proto::skywire::visor::v1::route_gateway_client::RouteGatewayClient;
use skywire_proto::skywire::visor::v1::transport_gateway_client::TransportGatewayClient;
use visor::gateway::{ERROR_DOMAIN, ROUTE_GATEWAY_PORT, TRANSPORT_GATEWAY_PORT, TrustedKeys};

async fn connected(client: &dmsg::client::Client) {
    common::wait_until("the caller has a session", || {
        !client.connected_servers().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_serve_trusted_keys_only() {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(1, &relay).await;
    let visor = &net[0].visor;
    let (setup_key, stranger_key) = (Keypair::generate(), Keypair::generate());
    let trusted = TrustedKeys {
        transport_setup: [setup_key.public()].into(),
        route_setup: [setup_key.public()].into(),
    };
    let gateways = common::ServedGateways::start(&net, |_| trusted.clone());
    let counters = gateways.counters[0].clone();

    // route-setup's key: served.
    let setup = relay.client(&setup_key);
    connected(&setup).await;
    let to = |port| DmsgAddr::new(visor.public_key(), port);
    let mut routes = RouteGatewayClient::new(dmsg::grpc::channel_any(
        setup.downgrade(),
        to(ROUTE_GATEWAY_PORT),
    ));
    let ids = routes
        .reserve_ids(pb::ReserveIdsRequest { n: 2 })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 2);
    assert_eq!(visor.stats().rules.reserved, 2);

    // Bad input is refused with its code and reason, and installs nothing.
    let bad = routes
        .add_intermediary_rules(pb::AddRulesRequest {
            rules: vec![vec![0; 5]],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let unreserved = visor::router::Rule::new(
        visor::packet::RouteId::new(9999).unwrap(),
        visor::router::RuleKind::Intermediary(visor::router::NextHop {
            route: visor::packet::RouteId::new(1).unwrap(),
            transport: [0; 16],
        }),
    );
    let refused = routes
        .add_intermediary_rules(pb::AddRulesRequest {
            rules: vec![unreserved.encode()],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        skywire_proto::status::reason_in(&refused, ERROR_DOMAIN).as_deref(),
        Some("not_reserved")
    );
    let mut transports = TransportGatewayClient::new(dmsg::grpc::channel_any(
        setup.downgrade(),
        to(TRANSPORT_GATEWAY_PORT),
    ));
    let listed = transports
        .list_transports(pb::ListTransportsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.transports.is_empty());

    // Anyone else: the stream is refused at accept; no RPC runs.
    let stranger = relay.client(&stranger_key);
    connected(&stranger).await;
    let mut intruder = RouteGatewayClient::new(dmsg::grpc::channel_any(
        stranger.downgrade(),
        to(ROUTE_GATEWAY_PORT),
    ));
    let denied = tokio::time::timeout(
        Duration::from_secs(10),
        intruder.reserve_ids(pb::ReserveIdsRequest { n: 5 }),
    )
    .await
    .expect("refused promptly")
    .unwrap_err();
    assert_ne!(denied.code(), tonic::Code::Ok);
    assert!(counters.route_refused.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        visor.stats().rules.reserved,
        2,
        "no reservation from the intruder"
    );
    assert_eq!(counters.transport_refused.load(Ordering::Relaxed), 0);

    gateways.stop().await;
    setup.close().await;
    stranger.close().await;
    for node in &net {
        node.visor.shutdown().await;
    }
    relay.stop().await;
}
