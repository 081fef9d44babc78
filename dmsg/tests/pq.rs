//! Post-quantum policy and downgrade resistance on real loopback sessions (PROTOCOL.md §4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Proxy, Rewrite, TestServer, addr, connected, port};
use dmsg::client::{Client, ClientConfig, ConnectError, DialError};
use dmsg::identity::Keypair;
use dmsg::noise::{HandshakeError, PqPolicy, PqSettings, PqStatus, RequireReason};
use dmsg::server::{RejectReason, ServerConfig};
use dmsg::wire::{Code, HandshakeRefusal};

fn classical_only() -> PqSettings {
    PqSettings {
        enabled: false,
        ..PqSettings::default()
    }
}

fn client_config(pq: PqSettings) -> ClientConfig {
    ClientConfig {
        pq,
        ..ClientConfig::default()
    }
}

/// PROTOCOL.md §4.5: under `Prefer`, a classical-only peer completes — session and stream —
/// and the PQ-capable end counts the downgrade (and logs a WARN naming the peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classical_only_peer_completes_under_prefer_and_is_counted() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (legacy, legacy_session) = connected(&server, client_config(classical_only())).await;
    assert_eq!(legacy_session.pq(), PqStatus::Classical);
    let on_server = server.server.session(&legacy.public_key()).unwrap();
    assert_eq!(on_server.pq(), PqStatus::Classical);
    let stats = server.server.stats().handshakes;
    assert_eq!((stats.classical, stats.downgrades, stats.hybrid), (1, 1, 0));

    // A PQ-capable client dialing the legacy one gets a classical stream, counted.
    let (modern, modern_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = legacy.listen(port(7)).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().pq() });
    let stream = modern
        .dial_via(&modern_session, addr(&legacy, 7))
        .await
        .unwrap();
    assert_eq!(stream.pq(), PqStatus::Classical);
    assert_eq!(accept.await.unwrap(), PqStatus::Classical);
    let counts = modern.handshake_stats();
    assert_eq!(counts.downgrades, 1, "{counts:?}");
    assert_eq!(counts.hybrid, 1, "its own session was hybrid");
    assert_eq!(
        legacy.handshake_stats().downgrades,
        0,
        "classical by choice is no downgrade"
    );
    drop(stream);
    modern.close().await;
    legacy.close().await;
    server.stop().await;
}

/// PROTOCOL.md §4.5: a peer known to advertise PQ that completes classical is refused with
/// the typed error — sessions (client side and server side) and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_advertising_pq_cannot_complete_classical() {
    // The server is classical-only, but the client knows it advertises PQ.
    let legacy_server = TestServer::start(ServerConfig {
        pq: classical_only(),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::new(Keypair::generate(), ClientConfig::default());
    let refused = client
        .connect_with(legacy_server.server.public_key(), legacy_server.addr, true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ConnectError::Handshake(HandshakeError::PqRequired {
                reason: RequireReason::PeerAdvertises,
                ..
            })
        ),
        "{refused}"
    );
    assert_eq!(legacy_server.server.session_count(), 0);

    // The server knows the client advertises PQ; the client comes classical-only.
    let legacy_client = Keypair::generate();
    let known = legacy_client.public();
    let server = TestServer::start(ServerConfig {
        pq: PqSettings {
            known_pq: Some(Arc::new(move |pk| *pk == known)),
            ..PqSettings::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let downgraded = Client::new(legacy_client, client_config(classical_only()));
    let refused = downgraded
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ConnectError::Refused(Code::PqRequired)),
        "{refused}"
    );
    assert_eq!(server.server.stats().handshakes.pq_refused, 1);

    // Streams: a dialer that knows the destination advertises PQ refuses a classical stream.
    let (modern, modern_session) = connected(&server, ClientConfig::default()).await;
    let (legacy, _legacy_session) = connected(&server, client_config(classical_only())).await;
    let _listener = legacy.listen(port(7)).unwrap();
    let refused = modern
        .dial_via_with(&modern_session, addr(&legacy, 7), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Handshake(HandshakeError::PqRequired { .. })
        ),
        "{refused}"
    );
    // And a destination that requires PQ refuses a classical stream with code PQ_REQUIRED.
    let strict = Client::new(
        Keypair::generate(),
        client_config(PqSettings {
            policy: PqPolicy::Require,
            ..PqSettings::default()
        }),
    );
    strict
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    let _strict_listener = strict.listen(port(9)).unwrap();
    let legacy_session = legacy.session(&server.server.public_key()).unwrap();
    let refused = legacy
        .dial_via(&legacy_session, addr(&strict, 9))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::PqRequired,
                ..
            }
        ),
        "{refused}"
    );
    for c in [&client, &downgraded, &modern, &legacy, &strict] {
        c.close().await;
    }
    legacy_server.stop().await;
    server.stop().await;
}

/// PROTOCOL.md §4.5: the `Require` policy (`--require-pq`, `SKYWIRE_REQUIRE_PQ=1`): a server
/// with it refuses a classical client with PQ_REQUIRED before the handshake, and a client with
/// it refuses a classical-only server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_pq_refuses_classical() {
    let strict_server = TestServer::start(ServerConfig {
        pq: PqSettings::with_required(true),
        ..ServerConfig::default()
    })
    .await;
    let legacy = Client::new(Keypair::generate(), client_config(classical_only()));
    let refused = legacy
        .connect(strict_server.server.public_key(), strict_server.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ConnectError::Handshake(HandshakeError::Refused(HandshakeRefusal::PqRequired))
        ),
        "{refused}"
    );
    // Counted for its reason, not only as a failed handshake (security review, finding 10).
    let stats = strict_server.server.stats();
    assert_eq!(stats.handshakes.pq_refused, 1, "{stats:?}");
    assert_eq!(
        stats.rejected(RejectReason::HandshakeFailed),
        1,
        "{stats:?}"
    );

    let legacy_server = TestServer::start(ServerConfig {
        pq: classical_only(),
        ..ServerConfig::default()
    })
    .await;
    let strict_client = Client::new(
        Keypair::generate(),
        client_config(PqSettings::with_required(true)),
    );
    let refused = strict_client
        .connect(legacy_server.server.public_key(), legacy_server.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ConnectError::Handshake(HandshakeError::PqRequired {
                reason: RequireReason::Policy,
                ..
            })
        ),
        "{refused}"
    );
    strict_server.stop().await;
    legacy_server.stop().await;
}

/// Message 1 from the client: preamble (7) ‖ length (2) ‖ XK message 1 (1233).
const CLIENT_PREFIX: usize = 7 + 2 + 1233;
/// Message 2 from the server: status (1) ‖ length (2) ‖ XK message 2 (1137).
const SERVER_PREFIX: usize = 1 + 2 + 1137;

/// PROTOCOL.md §4.2–§4.3: a man in the middle that rewrites the mode, strips the ML-KEM key
/// or ciphertext, or alters them, never produces a session — least of all a silently
/// classical one. Each case fails on both ends and nothing is counted as established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_cannot_downgrade_or_strip_pq() {
    type Edit = fn(Vec<u8>) -> Vec<u8>;
    type Side = Option<(usize, Edit)>;
    let cases: Vec<(&str, Side, Side)> = vec![
        (
            "mode byte hybrid→classical",
            Some((CLIENT_PREFIX, |mut b| {
                b[6] = 0;
                b
            })),
            None,
        ),
        (
            "encapsulation key stripped",
            Some((CLIENT_PREFIX, |b| {
                let mut out = b[..7].to_vec();
                out.extend_from_slice(&48u16.to_be_bytes());
                out.extend_from_slice(&b[9..9 + 48]);
                out
            })),
            None,
        ),
        (
            "encapsulation key altered",
            Some((CLIENT_PREFIX, |mut b| {
                b[9 + 32 + 500] ^= 0x55;
                b
            })),
            None,
        ),
        (
            "ciphertext stripped",
            None,
            Some((SERVER_PREFIX, |b| {
                let mut out = b[..1].to_vec();
                out.extend_from_slice(&48u16.to_be_bytes());
                out.extend_from_slice(&b[3..3 + 48]);
                out
            })),
        ),
        (
            "ciphertext altered",
            None,
            Some((SERVER_PREFIX, |mut b| {
                b[3 + 32 + 700] ^= 0x55;
                b
            })),
        ),
    ];
    for (name, up, down) in cases {
        let server = TestServer::start(ServerConfig::default()).await;
        let rewrite = |r: Side| {
            r.map(|(len, edit)| Rewrite {
                len,
                apply: Box::new(edit),
            })
        };
        let proxy = Proxy::start(server.addr, rewrite(up), rewrite(down)).await;
        let client = Client::new(Keypair::generate(), ClientConfig::default());
        let result = client.connect(server.server.public_key(), proxy.addr).await;
        assert!(result.is_err(), "{name}: the handshake must fail");
        assert_eq!(client.handshake_stats().classical, 0, "{name}");
        assert_eq!(client.handshake_stats().hybrid, 0, "{name}");
        common::wait_until("the server saw the failure", || {
            server
                .server
                .stats()
                .rejected(RejectReason::HandshakeFailed)
                == 1
        })
        .await;
        let stats = server.server.stats();
        assert_eq!(stats.sessions, 0, "{name}");
        assert_eq!(
            (stats.handshakes.classical, stats.handshakes.hybrid),
            (0, 0),
            "{name}"
        );
        client.close().await;
        server.stop().await;
    }
}

/// PROTOCOL.md §7.1: the stream request travels sealed under the session keys: the
/// destination's key never appears in the bytes of either hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_key_never_appears_on_the_wire() {
    let server = TestServer::start(ServerConfig::default()).await;
    let alice_hop = Proxy::start(server.addr, None, None).await;
    let bob_hop = Proxy::start(server.addr, None, None).await;
    let alice = Client::new(Keypair::generate(), ClientConfig::default());
    let session = alice
        .connect(server.server.public_key(), alice_hop.addr)
        .await
        .unwrap();
    let bob = Client::new(Keypair::generate(), ClientConfig::default());
    bob.connect(server.server.public_key(), bob_hop.addr)
        .await
        .unwrap();
    let mut listener = bob.listen(port(80)).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap() });
    let stream = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let _accepted = accept.await.unwrap();

    let key = bob.public_key();
    for (hop, proxy) in [("alice↔server", &alice_hop), ("server↔bob", &bob_hop)] {
        let captured = proxy.captured();
        assert!(captured.len() > 2_000, "{hop}: the open was captured");
        assert!(
            !common::contains(&captured, key.as_bytes()),
            "{hop}: destination key in clear"
        );
        assert!(
            !common::contains(&captured, &key.to_x25519()),
            "{hop}: its X25519 form in clear"
        );
        assert!(
            !common::contains(&captured, key.to_string().as_bytes()),
            "{hop}: its hex in clear"
        );
    }
    drop(stream);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §4.5 (the security review's finding 8): a seed marked `PK@HOST:PORT#pq` is
/// known to offer the hybrid, so the client's lifecycle never accepts a classical session
/// from it — with no env var and the default `Prefer` policy — and counts each refusal.
/// The same seed unmarked connects (classical, a counted downgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_marked_pq_never_completes_classical_in_the_lifecycle() {
    let legacy_server = TestServer::start(ServerConfig {
        pq: classical_only(),
        ..ServerConfig::default()
    })
    .await;
    let marked: dmsg::addr::ServerAddr = format!(
        "{}@{}#pq",
        legacy_server.server.public_key(),
        legacy_server.addr
    )
    .parse()
    .unwrap();
    assert!(marked.pq);
    let client_with = |seed: dmsg::addr::ServerAddr| {
        Client::new(
            Keypair::generate(),
            ClientConfig {
                lifecycle: dmsg::client::LifecycleConfig {
                    seeds: vec![seed],
                    start_jitter: std::time::Duration::ZERO,
                    ..dmsg::client::LifecycleConfig::default()
                },
                ..ClientConfig::default()
            },
        )
    };
    let client = client_with(marked.clone());
    common::wait_until("the keeper's classical handshakes are refused", || {
        client.handshake_stats().pq_refused >= 2
    })
    .await;
    assert!(client.connected_servers().is_empty());
    assert_eq!(legacy_server.server.session_count(), 0);
    assert_eq!(client.handshake_stats().classical, 0);
    client.close().await;

    let unmarked = dmsg::addr::ServerAddr {
        pq: false,
        ..marked
    };
    let client = client_with(unmarked);
    common::wait_until("the unmarked seed connects", || {
        !client.connected_servers().is_empty()
    })
    .await;
    assert_eq!(client.handshake_stats().downgrades, 1);
    client.close().await;
    legacy_server.stop().await;
}

/// PROTOCOL.md §4.5, the responder's side: a peer whose signed entry says `pq_capable` never
/// keeps a classical session or stream. The server looks the entry up after accept (without
/// holding accept up), closes the classical session with PQ_REQUIRED and refuses the peer's
/// next classical handshake; a listening client refuses a classical stream from a dialer
/// whose entry it saw. Every refusal counts in `pq_refused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_and_a_listening_client_refuse_a_classical_initiator_whose_entry_says_pq() {
    let discovery = Arc::new(dmsg::memory::MemoryDiscovery::default());
    let legacy_key = Keypair::generate();
    let legacy_pk = legacy_key.public();
    // The entry says PQ (what the peer published before losing it, or a downgraded build).
    discovery.set(dmsg::entry::Entry::client(legacy_pk, 1, Vec::new()).signed(&legacy_key));

    let server = TestServer::start(ServerConfig::default()).await;
    server.server.look_up_peers_in(discovery.clone());
    let legacy = Client::new(legacy_key, client_config(classical_only()));
    let session = legacy
        .connect(server.server.public_key(), server.addr)
        .await
        .expect("the handshake itself completes: the server does not wait on discovery");
    assert_eq!(session.pq(), PqStatus::Classical);
    let code = tokio::time::timeout(std::time::Duration::from_secs(5), session.closed())
        .await
        .expect("the server closes the classical session once it saw the entry");
    assert_eq!(code, Code::PqRequired);
    assert_eq!(server.server.stats().handshakes.pq_refused, 1);
    assert!(
        server
            .server
            .pq_peers()
            .advertises(&legacy_pk, tokio::time::Instant::now())
    );
    let refused = legacy
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ConnectError::Refused(Code::PqRequired)),
        "{refused}"
    );
    assert_eq!(server.server.stats().handshakes.pq_refused, 2);
    assert_eq!(server.server.session_count(), 0);

    // A classical peer whose entry does not say PQ keeps its session.
    let honest_key = Keypair::generate();
    let mut honest_entry = dmsg::entry::Entry::client(honest_key.public(), 1, Vec::new());
    honest_entry.pq_capable = false;
    discovery.set(honest_entry.signed(&honest_key));
    let honest = Client::new(honest_key, client_config(classical_only()));
    let honest_session = honest
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    common::wait_until("the server looked the honest peer up", || {
        server
            .server
            .pq_peers()
            .lookup(&honest.public_key(), tokio::time::Instant::now())
            .is_some()
    })
    .await;
    assert!(!honest_session.is_closed());
    assert_eq!(server.server.stats().handshakes.pq_refused, 2);

    // The listening client saw the legacy peer's entry; a plain relay (no lookups) carries
    // the stream open, and the listener refuses the classical stream.
    let relay = TestServer::start(ServerConfig::default()).await;
    let listener_client = Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: dmsg::client::LifecycleConfig {
                discovery: dmsg::client::DiscoveryTarget::Custom(discovery.clone()),
                publish_entry: false,
                ..dmsg::client::LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    );
    listener_client
        .connect(relay.server.public_key(), relay.addr)
        .await
        .unwrap();
    listener_client.destination_entry(&legacy_pk).await.unwrap();
    let _listener = listener_client.listen(port(9)).unwrap();
    let legacy_session = legacy
        .connect(relay.server.public_key(), relay.addr)
        .await
        .unwrap();
    let refused = legacy
        .dial_via(&legacy_session, addr(&listener_client, 9))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::PqRequired,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(listener_client.handshake_stats().pq_refused, 1);
    assert_eq!(listener_client.handshake_stats().classical, 0);
    for client in [&legacy, &honest, &listener_client] {
        client.close().await;
    }
    server.stop().await;
    relay.stop().await;
}
