//! The `RouteSetup` gRPC service on real TCP, over route-setup's core with gateways in memory:
//! a dial returns the initiator's rules and both paths; bad input, no route and an open
//! breaker come back as statuses with their `ErrorInfo`; `Breakers` lists the open one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use discovery_client::hexfield::pk_to_proto;
use dmsg::identity::{Keypair, PublicKey};
use setup_svc::gateway::{GatewayError, MemoryGateways};
use setup_svc::paths::Graph;
use setup_svc::route_setup::{RouteSetup, RouteSetupConfig, StaticGraph};
use setup_svc::service::{BreakerBoard, ERROR_DOMAIN, RouteSetupService};
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::route_setup_client::RouteSetupClient;
use skywire_proto::skywire::setup::v1::route_setup_server::RouteSetupServer;
use tokio_stream::wrappers::TcpListenerStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_route_group_over_grpc_with_its_errors_and_breakers() {
    let keys: [PublicKey; 4] = [(); 4].map(|()| Keypair::generate().public());
    let graph = Graph::new((0..3).map(|i| (keys[i], keys[i + 1], [i as u8 + 1; 16])));
    let gateways = MemoryGateways::default();
    let core = RouteSetup::new(
        Arc::new(gateways.clone()),
        Arc::new(StaticGraph(graph)),
        RouteSetupConfig::default(),
    );
    let board = BreakerBoard::default();
    let following = tokio::spawn(board.follow(core.breakers()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RouteSetupServer::new(RouteSetupService::new(core, board)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = RouteSetupClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let request = |src: PublicKey, dst: PublicKey| pb::DialRouteGroupRequest {
        src: pk_to_proto(&src),
        dst: pk_to_proto(&dst),
        src_port: 5,
        dst_port: 80,
        min_hops: 0,
        max_hops: 0,
    };

    let answer = client
        .dial_route_group(request(keys[0], keys[3]))
        .await
        .unwrap()
        .into_inner();
    let forward = visor::router::Rule::decode(&answer.forward_rule).unwrap();
    assert!(matches!(
        forward.kind,
        visor::router::RuleKind::Forward { .. }
    ));
    assert_eq!(answer.forward.unwrap().hops.len(), 3);
    assert_eq!(answer.reverse.unwrap().hops.len(), 3);

    let reason = |status: &tonic::Status, domain: &str| {
        skywire_proto::status::reason_in(status, domain).unwrap_or_default()
    };
    let mut bad = request(keys[0], keys[3]);
    bad.dst_port = 70_000;
    let refused = client.dial_route_group(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("dst_port"),
        "{}",
        refused.message()
    );

    let stranger = Keypair::generate().public();
    let none = client
        .dial_route_group(request(keys[0], stranger))
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
    assert_eq!(reason(&none, ERROR_DOMAIN), "no_route");

    gateways.with(keys[3], |v| {
        v.fail_rules = Some(GatewayError::Unreachable("down".into()));
    });
    for _ in 0..3 {
        let failed = client
            .dial_route_group(request(keys[0], keys[3]))
            .await
            .unwrap_err();
        assert_eq!(reason(&failed, ERROR_DOMAIN), "hop_failed");
        let info = skywire_proto::status::error_info(&failed).unwrap();
        assert_eq!(
            info.metadata.get("role").map(String::as_str),
            Some("destination")
        );
    }
    let open = client
        .dial_route_group(request(keys[0], keys[3]))
        .await
        .unwrap_err();
    assert_eq!(open.code(), tonic::Code::Unavailable);
    assert_eq!(reason(&open, "skywire"), "breaker_open");
    // The board follows the breakers' events: give it a moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let breakers = loop {
        let breakers = client
            .breakers(pb::BreakersRequest {})
            .await
            .unwrap()
            .into_inner()
            .breakers;
        if !breakers.is_empty() || tokio::time::Instant::now() > deadline {
            break breakers;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(breakers.len(), 1);
    assert_eq!(breakers[0].destination, pk_to_proto(&keys[3]));
    assert_eq!(breakers[0].state, "open");
    assert!(breakers[0].since_unix_nanos > 0);

    // The caller's grpc-timeout bounds the setup: route-setup answers its own `timeout`
    // before the caller gives up; the setup still finishes (the slow hop answers at 3 s)
    // and then releases everything it reserved and installed.
    let held = || -> usize {
        keys.iter()
            .map(|key| gateways.with(*key, |v| v.reserved.len()))
            .sum()
    };
    let before = held();
    gateways.with(keys[1], |v| v.delay = std::time::Duration::from_secs(3));
    let mut hurried = tonic::Request::new(request(keys[3], keys[0]));
    hurried.set_timeout(std::time::Duration::from_millis(600));
    let started = tokio::time::Instant::now();
    let late = client.dial_route_group(hurried).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");
    assert_eq!(reason(&late, ERROR_DOMAIN), "timeout", "{late:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The slow hop is fast again for its next calls (its reservation still takes 3 s).
    gateways.with(keys[1], |v| v.delay = std::time::Duration::ZERO);
    let released = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
    loop {
        let now = held();
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < released,
            "{now} ids still reserved, {before} before"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    server.abort();
    following.abort();
}
