//! The relay server's defences on real loopback TCP (PROTOCOL.md §4.1, §10): accept rate
//! limit, handshake cap, handshake deadline and version refusal — each refusal counted by
//! reason, none of them stopping the server from serving well-behaved clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, connected};
use dmsg::client::{Client, ClientConfig, ConnectError};
use dmsg::identity::Keypair;
use dmsg::noise::HandshakeError;
use dmsg::server::{RejectReason, ServerConfig};
use dmsg::wire::{HandshakeRefusal, Mode, Preamble};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A burst of connections beyond the token bucket is cut off at once and counted; the
/// server keeps accepting once tokens refill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_beyond_the_rate_limit_are_dropped_and_counted() {
    let server = TestServer::start(ServerConfig {
        accept_rate: 5.0,
        accept_burst: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(TcpStream::connect(server.addr).await.unwrap());
    }
    common::wait_until("the excess is refused", || {
        server.server.stats().rejected(RejectReason::RateLimited) >= 7
    })
    .await;
    assert_eq!(server.server.stats().rejected(RejectReason::RateLimited), 7);
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(400)).await; // tokens refill
    let (client, _session) = connected(&server, ClientConfig::default()).await;
    client.close().await;
    server.stop().await;
}

/// With every handshake slot held by a silent connection, a new client is refused "busy" at
/// once (a typed error), and the slot frees when the silent one hits the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_cap_are_refused_busy_and_stalled_ones_time_out() {
    let server = TestServer::start(ServerConfig {
        max_handshakes: 1,
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let silent = TcpStream::connect(server.addr).await.unwrap(); // holds the only slot
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Client::new(Keypair::generate(), ClientConfig::default());
    let refused = client
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ConnectError::Handshake(HandshakeError::Refused(HandshakeRefusal::Busy))
        ),
        "{refused}"
    );
    assert_eq!(
        server.server.stats().rejected(RejectReason::HandshakeBusy),
        1
    );

    common::wait_until("the silent handshake hits its deadline", || {
        server
            .server
            .stats()
            .rejected(RejectReason::HandshakeTimeout)
            == 1
    })
    .await;
    client
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    drop(silent);
    client.close().await;
    server.stop().await;
}

/// PROTOCOL.md §9: a client speaking another version is told the version the server speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_version_is_refused_with_the_supported_one() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut preamble = Preamble::session(Mode::Hybrid).encode();
    preamble[4] = 9;
    tcp.write_all(&preamble).await.unwrap();
    let mut answer = [0u8; 2];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        HandshakeRefusal::decode(answer[0], answer[1]),
        Some(HandshakeRefusal::UnsupportedVersion(
            dmsg::wire::PROTOCOL_VERSION
        ))
    );
    assert_eq!(
        tcp.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "then the server hangs up"
    );
    server.stop().await;
}

/// Closing a session fails its streams promptly: a blocked reader returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_fails_its_streams_promptly() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(common::port(80)).unwrap();
    let baseline_ports = alice.ports_in_use();
    let mut stream = alice
        .dial_via(&session, common::addr(&bob, 80))
        .await
        .unwrap();
    let _peer = listener.accept().await.unwrap();
    assert_eq!(
        alice.ports_in_use(),
        baseline_ports + 1,
        "the dial holds an ephemeral port"
    );
    let reader = tokio::spawn(async move {
        let result = stream.read(&mut [0u8; 16]).await;
        (result, stream)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    session.close(dmsg::wire::Code::Normal, "bye");
    let (result, stream) = tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(200));
    drop(stream);
    assert_eq!(
        alice.ports_in_use(),
        baseline_ports,
        "the port is released with the stream"
    );
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// Connects to `to` from the loopback address `source` (e.g. 127.0.0.2, another host).
async fn connect_from(source: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the server sends until it closes (at most 2 s).
async fn rest_of<T: tokio::io::AsyncRead + Unpin>(tcp: &mut T) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    rest
}

/// An initiator of our own, honest up to message 2: it sends the preamble and message 1,
/// reads message 2, and then either stops (`claim` `None`: never sends message 3) or sends
/// message 3 claiming the identity `claim`, whatever its real key. Returns what the server
/// sent after message 2 until it closed.
async fn hostile_initiator<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tcp: &mut T,
    server: dmsg::identity::PublicKey,
    claim: Option<dmsg::identity::PublicKey>,
) -> Vec<u8> {
    use dmsg::wire::Pattern;
    let local = Keypair::generate();
    let (mut expect, msg1) =
        dmsg::noise::initiate(Pattern::Xk, &local, server, Mode::Hybrid, &[]).unwrap();
    let mut first = Preamble::session(Mode::Hybrid).encode().to_vec();
    first.extend_from_slice(&(msg1.len() as u16).to_be_bytes());
    first.extend_from_slice(&msg1);
    tcp.write_all(&first).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), 0, "the server answers");
    let len = usize::from(tcp.read_u16().await.unwrap());
    let mut msg2 = vec![0u8; len];
    tcp.read_exact(&mut msg2).await.unwrap();
    if let Some(identity) = claim {
        expect.claim_identity(identity);
        let msg3 = expect.read_answer(&msg2).unwrap().confirm.unwrap();
        let mut framed = (msg3.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg3);
        tcp.write_all(&framed).await.unwrap();
    }
    rest_of(tcp).await
}

/// PROTOCOL.md §10: a connection must deliver its first handshake message within the
/// first-message deadline (1 s by default), however long the whole handshake may take; it is
/// then told so (`ff 00`), closed, and counted as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_message_deadline() {
    let server = TestServer::start(ServerConfig {
        first_message_timeout: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(rest_of(&mut silent).await, [0xff, 0x00]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(
        server
            .server
            .stats()
            .rejected(RejectReason::HandshakeTimeout),
        1
    );
    server.stop().await;
}

/// PROTOCOL.md §4.1: once the server has answered (status 0 and message 2), a stalled
/// handshake is only closed at the deadline — the timeout refusal `ff 00` is never sent
/// after message 2 (the security review saw it sent anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_stalled_after_message_2_is_closed_without_a_refusal() {
    let server = TestServer::start(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let after_msg2 = hostile_initiator(&mut tcp, server.server.public_key(), None).await;
    assert_eq!(after_msg2, Vec::<u8>::new(), "nothing after message 2");
    common::wait_until("the stalled handshake is counted", || {
        server
            .server
            .stats()
            .rejected(RejectReason::HandshakeTimeout)
            == 1
    })
    .await;
    server.stop().await;
}

/// PROTOCOL.md §1: an initiator claiming a small-order identity in message 3 — each of the
/// eight encodings — fails the handshake with a typed error (`PayloadError::Identity`) and
/// is counted as a failed handshake; no session comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_order_identity_fails_the_session_handshake_and_is_counted() {
    // The typed error, from the responder over a pipe.
    let responder = Keypair::generate();
    let (mut near, mut far) = tokio::io::duplex(8192);
    let server_side = {
        let responder = responder.clone();
        tokio::spawn(async move {
            dmsg::handshake::respond(
                &mut far,
                &responder,
                &dmsg::noise::PqSettings::default(),
                Default::default(),
            )
            .await
        })
    };
    let weak: [u8; 32] = hex::decode(dmsg::identity::SMALL_ORDER_KEYS[0])
        .unwrap()
        .try_into()
        .unwrap();
    let weak = dmsg::identity::PublicKey::unchecked(weak);
    hostile_initiator(&mut near, responder.public(), Some(weak)).await;
    let refused = server_side.await.unwrap().unwrap_err();
    assert!(
        matches!(
            refused,
            HandshakeError::Payload(dmsg::noise::PayloadError::Identity)
        ),
        "{refused}"
    );

    // Counted by a real server, for every small-order encoding.
    let server = TestServer::start(ServerConfig::default()).await;
    for text in dmsg::identity::SMALL_ORDER_KEYS {
        let weak =
            dmsg::identity::PublicKey::unchecked(hex::decode(text).unwrap().try_into().unwrap());
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        hostile_initiator(&mut tcp, server.server.public_key(), Some(weak)).await;
    }
    common::wait_until("every forged identity is counted", || {
        server
            .server
            .stats()
            .rejected(RejectReason::HandshakeFailed)
            == 8
    })
    .await;
    assert_eq!(server.server.session_count(), 0);
    server.stop().await;
}

/// PROTOCOL.md §10: one source address spends its own share — at most `max_handshakes` in
/// progress (more are refused busy) and its own accept bucket (beyond it, dropped) — while
/// a client from another address connects as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_over_its_limits_is_refused_and_others_are_not() {
    let server = TestServer::start(ServerConfig {
        per_source: dmsg::admission::SourceLimits {
            accept_rate: 0.01,
            accept_burst: 4,
            max_handshakes: 2,
        },
        first_message_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let attacker = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_from(attacker, server.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..2 {
        let mut busy = connect_from(attacker, server.addr).await;
        assert_eq!(rest_of(&mut busy).await, HandshakeRefusal::Busy.encode());
    }
    let mut dropped = connect_from(attacker, server.addr).await;
    assert_eq!(rest_of(&mut dropped).await, Vec::<u8>::new(), "dropped");
    let stats = server.server.stats();
    assert_eq!(stats.rejected(RejectReason::SourceBusy), 2);
    assert_eq!(stats.rejected(RejectReason::SourceRateLimited), 1);
    assert_eq!(stats.rejected(RejectReason::HandshakeBusy), 0);
    assert_eq!(stats.rejected(RejectReason::RateLimited), 0);

    let (client, _session) = connected(&server, ClientConfig::default()).await;
    client.close().await;
    drop(held);
    server.stop().await;
}
