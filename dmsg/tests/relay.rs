//! Streams relayed between two clients through an in-process server on loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, addr, connected, port};
use dmsg::client::ClientConfig;
use dmsg::noise::PqStatus;
use dmsg::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PROTOCOL.md §7, §10: A dials B's listener through the server; bytes flow both ways,
/// end-to-end hybrid, and half-close ends each direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_relays_bytes_both_ways_end_to_end_hybrid() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, alice_session) = connected(&server, ClientConfig::default()).await;
    let (bob, bob_session) = connected(&server, ClientConfig::default()).await;
    assert_eq!(alice_session.pq(), PqStatus::Hybrid);
    assert_eq!(bob_session.pq(), PqStatus::Hybrid);
    let mut listener = bob.listen(port(80)).unwrap();

    let echo = tokio::spawn(async move {
        let mut stream = listener.accept().await.unwrap();
        assert_eq!(stream.pq(), PqStatus::Hybrid);
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        stream.write_all(&received).await.unwrap();
        stream.shutdown().await.unwrap();
        (received.len(), stream.remote_addr())
    });

    let mut stream = alice
        .dial_via(&alice_session, addr(&bob, 80))
        .await
        .unwrap();
    assert_eq!(stream.pq(), PqStatus::Hybrid);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
    let (len, remote) = echo.await.unwrap();
    assert_eq!(len, payload.len());
    assert_eq!(remote, stream.local_addr());

    let stats = server.server.stats();
    assert_eq!(stats.streams_total, 1);
    assert!(stats.bytes_relayed >= 2 * payload.len() as u64);
    assert_eq!(stats.handshakes.hybrid, 2);
    drop(bob_session);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// Dropping every `Server` handle and its `serve` future without `shutdown()` — with two
/// sessions and a relayed stream up — shuts it down: the clients' sessions end with
/// SHUTTING_DOWN, the relayed stream fails, and the runtime's task count returns to where it
/// was before the server started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_server_handle_shuts_it_down() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, alice_session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let (listener, stream, mut peer) = common::stream_in_use(&alice, &alice_session, &bob).await;

    let TestServer { server, serve, .. } = server;
    serve.abort();
    let _ = serve.await;
    drop(server);
    let code = tokio::time::timeout(std::time::Duration::from_secs(5), alice_session.closed())
        .await
        .expect("the session ends");
    assert_eq!(code, dmsg::wire::Code::ShuttingDown);
    let mut rest = Vec::new();
    assert!(
        peer.read_to_end(&mut rest).await.is_err(),
        "the stream fails"
    );
    drop((stream, peer, listener, alice_session));
    alice.close().await;
    bob.close().await;
    common::wait_until("every task of the server ended", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
}
