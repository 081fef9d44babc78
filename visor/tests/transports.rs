//! Transports between visors (ROUTING.md §2) and the rule timers at runtime (§5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{link, nodes, port, wait_until};
use dmsg::identity::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use visor::node::{Visor, VisorConfig};
use visor::router::{NextHop, Rule, RuleKind, TableCounts};
use visor::transport::TransportKind;
use visor::transport::frame::{FrameReader, FrameWriter};

/// ROUTING.md §2.4–§2.5 (Done-when e): A and B dialing each other at the same instant end
/// with exactly one transport, the same ID at both ends (the one the low edge dialed); it is
/// registered in discovery signed by both edges, carries a route group, and is gone from the
/// registry once it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simultaneous_dial_leaves_exactly_one_registered_transport() {
    use discovery_client::registry::Registry;
    let discovery = common::Discovery::start().await;
    for _ in 0..3 {
        let net = common::nodes_with(2, discovery.config()).await;
        let (a, b) = (&net[0].visor, &net[1].visor);
        let (from_a, from_b) =
            tokio::join!(a.dial_stcp(b.public_key()), b.dial_stcp(a.public_key()));
        assert!(from_a.is_ok() || from_b.is_ok(), "{from_a:?} {from_b:?}");
        let low = a.public_key().min(b.public_key());
        wait_until("one transport at each end, the low edge's", || {
            let (ta, tb) = (a.transports(), b.transports());
            ta.len() == 1
                && tb.len() == 1
                && ta[0].id == tb[0].id
                && ta[0].dialer == low
                && tb[0].dialer == low
                && !ta[0].is_closed()
                && !tb[0].is_closed()
        })
        .await;
        let id = a.transports()[0].id;

        // Registered, signed by both edges (the registry validated both signatures; so do we).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let entry = loop {
            if let Some(entry) = discovery.registry.transport(&id).await.unwrap() {
                break entry;
            }
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            (entry.edge_a, entry.edge_b),
            (low, a.public_key().max(b.public_key()))
        );
        assert_eq!(entry.kind, "stcp");
        entry
            .validate(discovery_client::entry::unix_nanos_now())
            .expect("both signatures verify");

        let (mut dialed, mut accepted) =
            common::route_group(&[&net[0], &net[1]], &[id], port(1), port(2)).await;
        dialed.write_all(b"one transport").await.unwrap();
        let mut got = [0u8; 13];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one transport");
        drop((dialed, accepted));

        // The high edge goes away: the transport closes, the low edge deregisters it.
        let high = if a.public_key() == low { b } else { a };
        high.shutdown().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while discovery.registry.transport(&id).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still registered after close"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for node in &net {
            node.visor.shutdown().await;
        }
    }
    discovery.stop().await;
}

/// ROUTING.md §2.5: a peer that dials again (it restarted, say) replaces its old connection;
/// the old one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redial_by_the_same_edge_replaces_the_old_connection() {
    let net = nodes(2).await;
    let first = link(&net[0], &net[1]).await;
    let old = net[1].visor.transport(&first).unwrap();
    let again = net[0]
        .visor
        .dial_stcp(net[1].visor.public_key())
        .await
        .unwrap();
    assert_eq!(again.id, first, "same edges, same type, same ID");
    wait_until("the old connection closed at the listener", || {
        old.is_closed()
    })
    .await;
    wait_until("the listener holds the new one", || {
        net[1]
            .visor
            .transport(&first)
            .is_some_and(|t| !std::sync::Arc::ptr_eq(&t, &old))
    })
    .await;
    for node in &net {
        node.visor.shutdown().await;
    }
}

/// Two visors joined by an in-memory transport (frames as on a dmsg transport: no tag).
fn joined(a: &Visor, b: &Visor) -> visor::router::TransportId {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (xr, xw) = tokio::io::split(x);
    let (yr, yw) = tokio::io::split(y);
    let t = a
        .attach(
            b.public_key(),
            TransportKind::Dmsg,
            a.public_key(),
            FrameReader::new(xr, None),
            FrameWriter::new(xw, None),
        )
        .unwrap();
    b.attach(
        a.public_key(),
        TransportKind::Dmsg,
        a.public_key(),
        FrameReader::new(yr, None),
        FrameWriter::new(yw, None),
    )
    .unwrap();
    t.id
}

/// ROUTING.md §5 (Done-when d, paused time): unused reservations are released after 30 s,
/// rules idle past their keep-alive are collected, and a living route group's rules are kept
/// alive by its keep-alives; dropping the group removes its local rules at once.
#[tokio::test(start_paused = true)]
async fn unused_reservations_expire_and_idle_rules_are_collected() {
    let (a, b) = (
        Visor::new(Keypair::generate(), VisorConfig::default()),
        Visor::new(Keypair::generate(), VisorConfig::default()),
    );
    let t = joined(&a, &b);
    // B: two reservations never used, one rule never matched.
    let unused = b.reserve(3).unwrap();
    b.install(Rule::new(
        unused[0],
        RuleKind::Intermediary(NextHop {
            route: unused[0],
            transport: t,
        }),
    ))
    .unwrap();
    // A 1-hop route group A→B that lives on, idle, for the whole test.
    let (a_node, b_node) = (wrap(&a), wrap(&b));
    let (dialed, accepted) = common::route_group(&[&a_node, &b_node], &[t], port(1), port(2)).await;
    assert_eq!(
        b.stats().rules,
        TableCounts {
            reserved: 2,
            consume: 1,
            forward: 1,
            intermediary: 1
        }
    );

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(b.stats().rules.reserved, 2, "not yet: 30 s");
    tokio::time::sleep(Duration::from_secs(90)).await;
    let rules = b.stats().rules;
    assert_eq!(
        rules,
        TableCounts {
            reserved: 0,
            consume: 1,
            forward: 1,
            intermediary: 0
        },
        "after 2 minutes: the reservations released, the idle rule collected, the route \
         group's rules kept alive"
    );
    assert_eq!(a.stats().rules.consume + a.stats().rules.forward, 2);
    assert!(dialed.error().is_none() && accepted.error().is_none());

    drop(dialed);
    assert_eq!(
        a.stats().rules,
        TableCounts::default(),
        "the dialer's rules go with it"
    );
    drop(accepted);
    assert_eq!(b.stats().rules, TableCounts::default());
    a.shutdown().await;
    b.shutdown().await;
}

fn wrap(visor: &Visor) -> common::Node {
    common::Node {
        visor: visor.clone(),
        addr: "127.0.0.1:9".parse().unwrap(),
        keypair: Keypair::generate(),
    }
}

/// ROUTING.md §2.6: a persistent transport is dialed at start through dmsg's one keeper and
/// dialed again after it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_transport_is_dialed_again_after_it_closes() {
    use dmsg::client::keeper::{KeeperConfig, TargetState};
    use visor::transport::persistent::{Persistent, TransportKeepers, TransportLink};
    let net = nodes(2).await;
    let (a, b) = (&net[0].visor, &net[1].visor);
    let mut keepers = TransportKeepers::with_link(
        TransportLink(a.downgrade()),
        KeeperConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            seed: Some(7),
        },
    );
    let target = Persistent {
        kind: TransportKind::Stcp,
        peer: b.public_key(),
    };
    keepers.keep(&target);
    wait_until("the transport is up at both ends", || {
        keepers.states() == vec![(target, TargetState::Up)] && b.transports().len() == 1
    })
    .await;
    let first = b.transports()[0].clone();
    first.close("closed by the test");
    wait_until("dialed again", || {
        b.transports()
            .first()
            .is_some_and(|t| !std::sync::Arc::ptr_eq(t, &first) && !t.is_closed())
            && a.transports().first().is_some_and(|t| !t.is_closed())
    })
    .await;
    keepers.stop().await;
    for node in &net {
        node.visor.shutdown().await;
    }
}

/// ROUTING.md §3.1, §3.4: a frame that breaks the rules (an unknown type) is answered with
/// BYE `protocol_violation` and the transport closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_gets_a_bye_and_closes_the_transport() {
    let visor = Visor::new(Keypair::generate(), VisorConfig::default());
    let peer = Keypair::generate().public();
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let (read, write) = tokio::io::split(ours);
    let transport = visor
        .attach(
            peer,
            TransportKind::Dmsg,
            peer,
            FrameReader::new(read, None),
            FrameWriter::new(write, None),
        )
        .unwrap();
    theirs
        .write_all(&[0x7f, 0, 0, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), theirs.read_to_end(&mut answer))
        .await
        .expect("the transport closes")
        .unwrap();
    assert_eq!(
        answer,
        [0x11, 0, 0, 0, 0, 0, 0, 1, 0x03],
        "BYE protocol_violation"
    );
    // The BYE and the EOF go out first; the transport is marked closed and removed right
    // after.
    wait_until("the transport is closed and removed", || {
        transport.is_closed() && visor.transports().is_empty()
    })
    .await;
    visor.shutdown().await;
}
