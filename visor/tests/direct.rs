//! Direct route groups (ROUTING.md §6.7, the `--direct` path): one hop over a transport made
//! on demand, set up by the two ends alone — no route-setup, no rules installed from
//! outside — with visors in one process over real loopback TCP and a real dmsg relay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{nodes, port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use visor::node::direct::{DirectDialError, MAX_PENDING_OPENS, OPEN_EXPIRY};
use visor::packet::{CloseCode, FrameType, Header, RouteId};
use visor::router::TableCounts;
use visor::transport::queue::OutFrame;

/// Sends `payload` on `group`, half-closes, and reads what comes back to EOF.
async fn exchange(group: visor::route_group::RouteGroup, payload: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(group);
    let payload = payload.to_vec();
    let sender = tokio::spawn(async move {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
        write
    });
    let mut back = Vec::new();
    read.read_to_end(&mut back).await.unwrap();
    drop(sender.await.unwrap());
    back
}

/// Echoes every route group on `listener`: reads to EOF, writes it back, closes.
fn echo(mut listener: visor::node::RouteListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(group) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tokio::io::split(group);
                let mut got = Vec::new();
                read.read_to_end(&mut got).await.unwrap();
                write.write_all(&got).await.unwrap();
                write.shutdown().await.unwrap();
            });
        }
    })
}

/// A dials B directly with no transport yet: an stcp one is made (B is in A's pk_table), one
/// hop, and 1 MiB goes each way with the half-close passed on; a second dial reuses the
/// transport; when the groups close, neither end keeps a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dial_makes_a_transport_and_moves_bytes_both_ways() {
    let net = nodes(2).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let server = echo(b.listen(port(80)).unwrap());
    assert!(a.transports().is_empty());
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    for _ in 0..2 {
        let group = a.dial_direct(b.public_key(), port(80), None).await.unwrap();
        assert_eq!(group.addr().remote, b.public_key());
        assert_eq!(exchange(group, &payload).await, payload);
    }
    assert_eq!(
        a.transports().len(),
        1,
        "the second dial reused the transport"
    );
    assert_eq!(
        a.transports()[0].kind,
        visor::transport::TransportKind::Stcp
    );
    for visor in [a, b] {
        wait_until("no rule is left", || {
            let stats = visor.stats();
            stats.route_groups == 0 && stats.rules == TableCounts::default()
        })
        .await;
    }
    server.abort();
}

/// Over an existing dmsg transport (through a real relay) the dial takes that transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dial_rides_an_existing_dmsg_transport() {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(2, &relay).await;
    let id = common::link_dmsg(&net[0], &net[1]).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let server = echo(b.listen(port(80)).unwrap());
    let group = a.dial_direct(b.public_key(), port(80), None).await.unwrap();
    assert_eq!(exchange(group, b"over dmsg").await, b"over dmsg");
    assert_eq!(a.transports().len(), 1);
    assert_eq!(a.transports()[0].id, id);
    server.abort();
    drop(net);
    relay.stop().await;
}

/// Nothing published on the port: the dial fails `no_listener` at once and neither end
/// holds a rule or a reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dial_to_an_unpublished_port_is_refused_and_leaves_nothing() {
    let net = nodes(2).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let started = tokio::time::Instant::now();
    let error = a
        .dial_direct(b.public_key(), port(99), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DirectDialError::Refused {
                code: CloseCode::NoListener,
                ..
            }
        ),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    for visor in [a, b] {
        assert_eq!(visor.stats().rules, TableCounts::default());
    }
}

/// A peer that sends OPENs and never a handshake costs a bounded share: at most
/// MAX_PENDING_OPENS answered opens (two rules each) per transport, the rest refused
/// `busy`; after OPEN_EXPIRY every rule is gone and a real dial works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_without_a_handshake_cost_a_bounded_share_and_expire() {
    let net = nodes(2).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let server = echo(b.listen(port(80)).unwrap());
    let transport = a.dial_stcp(b.public_key()).await.unwrap();
    let sent = MAX_PENDING_OPENS + 16;
    for n in 0..sent {
        let key = RouteId::new(1_000 + n as u32).unwrap();
        let frame = OutFrame {
            header: Header::for_route(FrameType::Open, key, 4),
            body: Bytes::from_static(&[0xc3, 0x50, 0, 80]),
        };
        transport.send(frame).unwrap();
    }
    // Every OPENED comes back to A as a stray (nothing of A waits for these keys).
    wait_until("every OPEN is answered", || {
        a.stats().dropped(visor::router::DropReason::UnknownRoute) == sent as u64
    })
    .await;
    let held = b.stats().rules;
    assert_eq!(
        (held.consume, held.forward),
        (MAX_PENDING_OPENS, MAX_PENDING_OPENS),
        "{held:?}"
    );
    // A real dial is refused while the slots are taken…
    let busy = a
        .dial_direct(b.public_key(), port(80), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            busy,
            DirectDialError::Refused {
                code: CloseCode::Busy,
                ..
            }
        ),
        "{busy}"
    );
    // …and works once they expire, with every rule of the silent opens gone.
    tokio::time::sleep(OPEN_EXPIRY + Duration::from_millis(500)).await;
    assert_eq!(b.stats().rules, TableCounts::default());
    let group = a.dial_direct(b.public_key(), port(80), None).await.unwrap();
    assert_eq!(exchange(group, b"after").await, b"after");
    server.abort();
}

/// The control API (`VisorControl.Routes`, over a real gRPC connection) lists a live route
/// group with the stream bytes each way, and its two rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_lists_a_live_route_group_with_its_bytes() {
    use skywire_proto::skywire::visor::v1 as pb;
    use skywire_proto::skywire::visor::v1::visor_control_client::VisorControlClient;
    use skywire_proto::skywire::visor::v1::visor_control_server::VisorControlServer;

    let net = nodes(2).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let mut listener = b.listen(port(80)).unwrap();
    let mut dialed = a.dial_direct(b.public_key(), port(80), None).await.unwrap();
    let mut accepted = listener.accept().await.unwrap();
    dialed.write_all(&[7u8; 1000]).await.unwrap();
    let mut got = [0u8; 1000];
    accepted.read_exact(&mut got).await.unwrap();
    accepted.write_all(b"back").await.unwrap();
    let mut back = [0u8; 4];
    dialed.read_exact(&mut back).await.unwrap();

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VisorControlServer::new(
                visor::control::ControlService::new(
                    a.clone(),
                    net[0].addr,
                    visor::control::ControlParts::new(a, Duration::from_secs(10)).unwrap(),
                ),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(tcp)),
    );
    let mut control = VisorControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let routes = control
        .routes(pb::RoutesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(routes.route_groups.len(), 1, "{routes:?}");
    let group = &routes.route_groups[0];
    assert_eq!(group.remote_pk, b.public_key().to_string());
    assert_eq!((group.bytes_sent, group.bytes_received), (1000, 4));
    assert_eq!(group.remote_port, 80);
    let kinds: Vec<&str> = routes.rules.iter().map(|r| r.r#type.as_str()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(
        kinds.contains(&"consume") && kinds.contains(&"forward"),
        "{kinds:?}"
    );
    let status = control
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.transports, status.route_groups), (1, 1));
    assert_eq!(status.pk, a.public_key().to_string());
    server.abort();
}
