//! Route-group setup through real visor gateways over gRPC tunnelled through dmsg: four
//! visors A–B–C–D (stcp between them, dmsg sessions to one relay), route-setup's key trusted
//! by their route gateways; the setup installs every rule, A dials D over 3 hops, bytes move
//! both ways. A key the visors do not trust gets nothing reserved anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../visor/tests/common/mod.rs"]
mod common;
#[path = "support/line.rs"]
mod line;

use std::time::Duration;

use dmsg::identity::Keypair;
use line::Line;
use setup_svc::gateway::{GatewayError, GrpcGateways};
use setup_svc::setup::{Role, SetupError, SetupRequest, Step, setup_route_group};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_setup_builds_a_three_hop_route_group_through_the_gateways() {
    let line = Line::start(false).await;
    let (net, relay, route_setup) = (&line.net, &line.relay, &line.route_setup);
    let graph = line.graph();
    let request = SetupRequest {
        src: (net[0].visor.public_key(), common::port(7)),
        dst: (net[3].visor.public_key(), common::port(80)),
        min_hops: 1,
        max_hops: 3,
    };

    let gateways = GrpcGateways::new(route_setup.downgrade());
    let setup = setup_route_group(&gateways, &graph, request, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(setup.forward.len(), 3);
    for node in &net[1..3] {
        assert_eq!(node.visor.stats().rules.intermediary, 2);
    }
    let mut listener = net[3].visor.listen(common::port(80)).unwrap();
    let (dialed, accepted) = tokio::join!(
        net[0].visor.dial(setup.forward_rule, setup.consume_rule),
        listener.accept()
    );
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    dialed.write_all(b"set up by route-setup").await.unwrap();
    let mut got = [0u8; 21];
    accepted.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"set up by route-setup");
    accepted.write_all(b"ok").await.unwrap();
    let mut back = [0u8; 2];
    dialed.read_exact(&mut back).await.unwrap();
    drop((dialed, accepted));

    // A key no visor trusts: its streams are refused as they open (NOT_ALLOWED, seen as
    // PERMISSION_DENIED); nothing is reserved.
    let before: Vec<usize> = net.iter().map(|n| n.visor.stats().rules.reserved).collect();
    let impostor = relay.client(&Keypair::generate());
    common::wait_until("the impostor has a session", || {
        !impostor.connected_servers().is_empty()
    })
    .await;
    let refused = setup_route_group(
        &GrpcGateways::new(impostor.downgrade()),
        &graph,
        request,
        Duration::from_secs(30),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            SetupError::Hop {
                step: Step::Reserve,
                role: Role::Source | Role::Intermediate | Role::Destination,
                error: GatewayError::Refused {
                    code: tonic::Code::PermissionDenied,
                    ..
                },
                ..
            }
        ),
        "{refused}"
    );
    let after: Vec<usize> = net.iter().map(|n| n.visor.stats().rules.reserved).collect();
    assert_eq!(before, after);

    impostor.close().await;
    line.stop().await;
}
