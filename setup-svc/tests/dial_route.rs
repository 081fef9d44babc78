//! `Visor::dial_route` against a real route-setup: the `RouteSetup` service on dmsg port 36
//! of its own dmsg client, four visors A–B–C–D that trust it and ask it. A dials D over 3
//! hops with default options and bytes move both ways; the dial is done only when the
//! end-to-end handshake is; a dial route-setup refuses (no route) or that fails at the
//! handshake (nobody listens) leaves no rule and no reservation on any visor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../visor/tests/common/mod.rs"]
mod common;
#[path = "support/line.rs"]
mod line;

use dmsg::identity::Keypair;
use line::Line;
use setup_svc::service::ERROR_DOMAIN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use visor::route_dial::{RouteDialError, RouteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visor_dials_a_three_hop_route_group_through_route_setup() {
    let line = Line::start(true).await;
    let net = &line.net;
    let (_core, served) = line.serve_route_setup();

    let (a, d) = (&net[0].visor, &net[3].visor);
    let mut accepting = d.listen(common::port(80)).unwrap();
    let (dialed, accepted) = tokio::join!(
        a.dial_route(d.public_key(), common::port(80), RouteOptions::default()),
        accepting.accept()
    );
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    dialed.write_all(b"through route-setup").await.unwrap();
    let mut got = [0u8; 19];
    accepted.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"through route-setup");
    accepted.write_all(b"back").await.unwrap();
    let mut back = [0u8; 4];
    dialed.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
    for node in &net[1..3] {
        assert_eq!(node.visor.stats().rules.intermediary, 2);
    }
    drop((dialed, accepted));
    common::wait_until("the route group's rules are gone on A", || {
        a.stats().rules.forward == 0 && a.stats().rules.consume == 0
    })
    .await;

    // No route to a stranger: route-setup's NOT_FOUND, nothing left on A.
    let stranger = Keypair::generate().public();
    match a
        .dial_route(stranger, common::port(80), RouteOptions::default())
        .await
    {
        Err(RouteDialError::Setup(status)) => {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
            assert_eq!(
                skywire_proto::status::reason_in(&status, ERROR_DOMAIN).as_deref(),
                Some("no_route")
            );
        }
        other => panic!("{other:?}"),
    }
    // Nobody listens on D's port 81: the handshake fails, and A keeps nothing of it.
    let refused = a
        .dial_route(
            d.public_key(),
            common::port(81),
            RouteOptions {
                max_hops: 3,
                ..RouteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, RouteDialError::Group(_)), "{refused:?}");
    let stats = a.stats().rules;
    assert_eq!(
        (stats.forward, stats.consume, stats.reserved),
        (0, 0, 0),
        "{stats:?}"
    );

    served.abort();
    line.stop().await;
}
