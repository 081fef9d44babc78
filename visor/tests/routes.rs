//! Route groups through visors in one process over real loopback TCP (ROUTING.md §6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{link, nodes, pattern, port, route_group};
use dmsg::noise::PqStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use visor::route_group::RouteGroupError;

const MIB: usize = 1024 * 1024;

/// Writes `total` bytes of pattern `seed` and shuts the write side down.
async fn send(mut writer: impl tokio::io::AsyncWrite + Unpin, seed: u8, total: usize) {
    let mut offset = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while offset < total {
        let n = chunk.len().min(total - offset);
        for (i, byte) in chunk[..n].iter_mut().enumerate() {
            *byte = pattern(seed, offset + i);
        }
        writer.write_all(&chunk[..n]).await.unwrap();
        offset += n;
    }
    writer.shutdown().await.unwrap();
}

/// Reads to EOF, checking every byte against pattern `seed`; returns the count.
async fn receive(mut reader: impl tokio::io::AsyncRead + Unpin, seed: u8) -> usize {
    let mut offset = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            return offset;
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            assert_eq!(*byte, pattern(seed, offset + i), "byte {}", offset + i);
        }
        offset += n;
    }
}

/// ROUTING.md §6 (Done-when a): A–B over stcp, B–C over dmsg through a real dmsg relay,
/// rules installed through the library; a route group A→C moves 64 MiB each way at once,
/// every byte checked, then EOF both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_group_over_stcp_and_dmsg_moves_64_mib_each_way() {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(3, &relay).await;
    let ab = link(&net[0], &net[1]).await;
    let bc = common::link_dmsg(&net[1], &net[2]).await;
    assert_eq!(
        net[2].visor.transport(&bc).unwrap().kind,
        visor::transport::TransportKind::Dmsg
    );
    let (dialed, accepted) =
        route_group(&[&net[0], &net[1], &net[2]], &[ab, bc], port(1), port(80)).await;
    assert_eq!(dialed.pq(), PqStatus::Hybrid);
    assert_eq!(accepted.addr().remote, net[0].visor.public_key());

    let total = 64 * MIB;
    let (a_read, a_write) = tokio::io::split(dialed);
    let (c_read, c_write) = tokio::io::split(accepted);
    let moved = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(
            send(a_write, 1, total),
            send(c_write, 2, total),
            receive(c_read, 1),
            receive(a_read, 2),
        )
    })
    .await
    .expect("64 MiB each way within 120 s");
    assert_eq!((moved.2, moved.3), (total, total));
    let b = net[1].visor.stats();
    assert_eq!(b.drops.iter().map(|(_, n)| n).sum::<u64>(), 0, "{b:?}");
    assert!(relay.server.stats().bytes_relayed >= 2 * total as u64);
    for node in &net {
        node.visor.shutdown().await;
    }
    relay.stop().await;
}

/// The `RouteGroupError` inside an IO error from a route group.
fn route_error(error: &std::io::Error) -> Option<&RouteGroupError> {
    error.get_ref()?.downcast_ref::<RouteGroupError>()
}

/// ROUTING.md §6.6 (Done-when b): when the intermediary B stops, A's and C's reads and
/// writes fail with a typed error within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_intermediary_stops_both_ends_fail_within_a_second() {
    // The topology of Done-when a: stcp A–B, dmsg B–C.
    let relay = common::Relay::start().await;
    let net = common::nodes_on(3, &relay).await;
    let ab = link(&net[0], &net[1]).await;
    let bc = common::link_dmsg(&net[1], &net[2]).await;
    let (mut dialed, mut accepted) =
        route_group(&[&net[0], &net[1], &net[2]], &[ab, bc], port(1), port(80)).await;
    dialed.write_all(b"hello").await.unwrap();
    let mut hello = [0u8; 5];
    accepted.read_exact(&mut hello).await.unwrap();

    let stopped = tokio::time::Instant::now();
    let b = net[1].visor.clone();
    let stopping = tokio::spawn(async move { b.shutdown().await });
    for (end, group) in [("A", &mut dialed), ("C", &mut accepted)] {
        let mut buf = [0u8; 16];
        let error = tokio::time::timeout(Duration::from_secs(1), group.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{end}'s read did not fail within 1 s"))
            .expect_err("a read on a broken route fails");
        assert_eq!(
            route_error(&error),
            Some(&RouteGroupError::TransportClosed),
            "{end}: {error}"
        );
        let error = group
            .write_all(b"more")
            .await
            .expect_err("a write fails too");
        assert!(route_error(&error).is_some(), "{end}: {error}");
    }
    assert!(stopped.elapsed() < Duration::from_secs(1));
    stopping.await.unwrap();
    for node in [&net[0], &net[2]] {
        node.visor.shutdown().await;
    }
    relay.stop().await;
}

/// ROUTING.md §6.4 (Done-when c): a route group whose reader stalls does not stop a second
/// one on the same transports from moving 100 MB, and the intermediary's queues stay within
/// the windows (its own counters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_route_group_does_not_block_another_on_the_same_transports() {
    let net = nodes(3).await;
    let ab = link(&net[0], &net[1]).await;
    let bc = link(&net[1], &net[2]).await;
    let path = [&net[0], &net[1], &net[2]];
    let (mut stalled_tx, _stalled_rx) = route_group(&path, &[ab, bc], port(1), port(80)).await;
    let (busy_tx, busy_rx) = route_group(&path, &[ab, bc], port(2), port(81)).await;

    // The stalled group's writer fills its window and then waits for credit forever.
    let stalled = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if stalled_tx.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let total = 100_000_000;
    let (moved, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(receive(busy_rx, 3), send(busy_tx, 3, total))
    })
    .await
    .expect("100 MB beside a stalled route group within 120 s");
    assert_eq!(moved, total);

    let b = &net[1].visor;
    let window = visor::route_group::ROUTE_WINDOW;
    let packet = visor::packet::MAX_PACKET;
    for transport in b.transports() {
        let stats = transport.stats();
        assert!(
            stats.queue_high_water <= 2 * (window + packet),
            "B's queue to {} peaked at {} bytes: more than the two windows",
            transport.peer,
            stats.queue_high_water
        );
    }
    assert_eq!(b.stats().drops.iter().map(|(_, n)| n).sum::<u64>(), 0);
    stalled.abort();
    for node in &net {
        node.visor.shutdown().await;
    }
}

/// ROUTING.md §1, §3.3 (Done-when g): what the intermediary receives and sends contains no
/// plaintext of a known payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediary_never_sees_the_payload() {
    // Every visor is reached through a recording proxy: `recorders[1]` holds all of A–B,
    // `recorders[2]` all of B–C — everything B reads and writes.
    let (net, recorders) = common::nodes_recorded(3).await;
    let ab = link(&net[0], &net[1]).await;
    let bc = link(&net[1], &net[2]).await;
    let (mut dialed, mut accepted) =
        route_group(&[&net[0], &net[1], &net[2]], &[ab, bc], port(1), port(80)).await;
    let secret: Vec<u8> = b"the quick brown fox jumps over the lazy visor, "
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    dialed.write_all(&secret).await.unwrap();
    let mut got = vec![0u8; secret.len()];
    accepted.read_exact(&mut got).await.unwrap();
    accepted.write_all(&secret).await.unwrap();
    dialed.read_exact(&mut got).await.unwrap();
    assert_eq!(got, secret);

    let needle = &secret[..32];
    for (hop, recorder) in [("A-B", &recorders[1]), ("B-C", &recorders[2])] {
        let captured = recorder.captured();
        assert!(
            captured.len() > 2 * secret.len(),
            "{hop}: the payload crossed it ({} bytes)",
            captured.len()
        );
        assert!(
            !common::contains(&captured, needle),
            "{hop}: plaintext of the payload on the wire"
        );
    }
    for node in &net {
        node.visor.shutdown().await;
    }
}

/// ROUTING.md §6.2, §6.6: a dial that fails halfway — no listener at the far end, or no
/// answer at all — fails with a typed error and leaves no route group and no local rule
/// behind (the handle's drop guard), at the dialer and at the far end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_leaves_nothing_behind() {
    let net = nodes(2).await;
    let ab = link(&net[0], &net[1]).await;
    let path = [&net[0], &net[1]];

    // Nobody listens on the far port: the far end answers CLOSE no_listener.
    let route = common::install_route(&path, &[ab], port(1), port(99));
    let refused = net[0]
        .visor
        .dial(route.forward, route.consume)
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        RouteGroupError::Hop(visor::packet::CloseCode::NoListener)
    );
    let a = net[0].visor.stats();
    assert_eq!((a.route_groups, a.rules), (0, Default::default()), "{a:?}");
    assert_eq!(net[1].visor.stats().route_groups, 0);

    // The far end never answers (its rules were never installed): the handshake times out.
    let ids = net[0].visor.reserve(2).unwrap();
    let far = net[1].visor.reserve(1).unwrap();
    let descriptor = visor::router::RouteDescriptor {
        src_pk: net[0].visor.public_key(),
        dst_pk: net[1].visor.public_key(),
        src_port: port(2),
        dst_port: port(80),
    };
    let forward = visor::router::Rule::new(
        ids[0],
        visor::router::RuleKind::Forward {
            descriptor,
            next: visor::router::NextHop {
                route: far[0],
                transport: ab,
            },
        },
    );
    let consume = visor::router::Rule::new(
        ids[1],
        visor::router::RuleKind::Consume(descriptor.reversed()),
    );
    let started = tokio::time::Instant::now();
    let silent = net[0].visor.dial(forward, consume).await.unwrap_err();
    assert_eq!(
        silent,
        RouteGroupError::HandshakeTimeout(visor::route_group::ROUTE_HANDSHAKE_TIMEOUT)
    );
    assert!(started.elapsed() < Duration::from_secs(7));
    let a = net[0].visor.stats();
    assert_eq!((a.route_groups, a.rules), (0, Default::default()), "{a:?}");
    assert!(
        net[1]
            .visor
            .stats()
            .dropped(visor::router::DropReason::UnknownRoute)
            >= 1,
        "the far end counted the handshake for a route it does not have"
    );
    for node in &net {
        node.visor.shutdown().await;
    }
}
