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
            .rejected(RejectReason::HandshakeFailed)
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
