//! The network seam (ARCHITECTURE §2, PROTOCOL.md §3): sessions and relayed streams over
//! `tokio::io::duplex` pipes instead of TCP, through the public `Dial`, `Listen`,
//! `handshake` and `Session::over` — what the visor's transports and a simulator use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::memnet::{MemoryNet, PIPE};
use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig, LifecycleConfig};
use dmsg::handshake;
use dmsg::identity::Keypair;
use dmsg::mux::{MuxConfig, Role};
use dmsg::net::Dialer;
use dmsg::noise::PqSettings;
use dmsg::server::{Server, ServerConfig};
use dmsg::session::{IncomingHandler, IncomingOpen, Session, SessionSetup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn client(dialer: &Dialer) -> Client {
    Client::new(
        Keypair::generate(),
        ClientConfig {
            dialer: dialer.clone(),
            lifecycle: LifecycleConfig {
                include_default_seeds: false,
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    )
}

/// A relay server and two clients on pipes: a relayed end-to-end stream carries 4 MB each
/// way (an echo), with half-close in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_stream_runs_over_in_memory_pipes() {
    let net = MemoryNet::default();
    let listener = net.listen("relay-1");
    let server = Server::new(Keypair::generate(), ServerConfig::default());
    let serve = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let dialer = net.dialer();
    let alice = client(&dialer);
    let bob = client(&dialer);
    let session = alice.connect(server.public_key(), "relay-1").await.unwrap();
    bob.connect(server.public_key(), "relay-1").await.unwrap();
    assert_eq!(session.remote_addr(), None, "a pipe has no socket address");
    assert!(session.pq().is_hybrid());

    let port = Port::new(80).unwrap();
    let mut listener = bob.listen(port).unwrap();
    let mut stream = alice
        .dial_via(&session, DmsgAddr::new(bob.public_key(), port))
        .await
        .unwrap();
    let mut peer = listener.accept().await.unwrap();

    const TOTAL: usize = 4 * 1024 * 1024;
    let echo = tokio::spawn(async move {
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        peer.write_all(&received).await.unwrap();
        peer.shutdown().await.unwrap();
        received.len()
    });
    let payload: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(echo.await.unwrap(), TOTAL);
    assert!(back == payload, "the echo came back altered");
    assert_eq!(server.stats().handshakes.hybrid, 2);

    alice.close().await;
    bob.close().await;
    server.shutdown().await;
    serve.await.unwrap().unwrap();
}

/// Two ends run the session handshake and `Session::over` on a pipe by hand (no client, no
/// server) and move a stream of raw DATA bodies through it.
#[tokio::test]
async fn a_session_runs_over_a_pipe_through_the_public_seam() {
    let (mut near, mut far) = tokio::io::duplex(PIPE);
    let initiator = Keypair::generate();
    let responder = Keypair::generate();
    let responder_pk = responder.public();
    let pq = PqSettings::default();
    let (initiated, responded) = tokio::join!(
        handshake::initiate(&mut near, &initiator, responder_pk, &pq, false),
        handshake::respond(&mut far, &responder, &pq, Default::default()),
    );
    let (initiated, responded) = (initiated.unwrap(), responded.unwrap());
    assert_eq!(responded.established.remote(), initiator.public());

    let (opened_tx, mut opened) = mpsc::unbounded_channel::<IncomingOpen>();
    let accept: IncomingHandler = Arc::new(move |open| {
        let _ = opened_tx.send(open);
    });
    let ignore: IncomingHandler = Arc::new(|open: IncomingOpen| drop(open));
    let (a, a_driver) = Session::over(
        near,
        initiated,
        SessionSetup {
            role: Role::Initiator,
            mux: MuxConfig::default(),
            remote_addr: None,
            incoming: ignore,
        },
    );
    let (b, b_driver) = Session::over(
        far,
        responded,
        SessionSetup {
            role: Role::Responder,
            mux: MuxConfig::default(),
            remote_addr: None,
            incoming: accept,
        },
    );
    let drivers = tokio::spawn(async move { tokio::join!(a_driver, b_driver) });
    a.ready().await.unwrap();
    assert_eq!(a.remote(), responder_pk);
    assert_eq!(b.remote(), initiator.public());

    let pending = a.open(b"hello, responder").unwrap();
    let incoming = opened.recv().await.unwrap();
    assert_eq!(incoming.request(), &Bytes::from_static(b"hello, responder"));
    let mut theirs = incoming.accept(b"welcome").unwrap();
    let (mut ours, body) = pending.answer().await.unwrap();
    assert_eq!(body, Bytes::from_static(b"welcome"));

    ours.send_all(b"ping", true).await.unwrap();
    assert_eq!(
        theirs.recv().await.unwrap(),
        Some((Bytes::from_static(b"ping"), true))
    );
    theirs.send_all(b"pong", true).await.unwrap();
    assert_eq!(
        ours.recv().await.unwrap(),
        Some((Bytes::from_static(b"pong"), true))
    );
    assert_eq!(ours.recv().await.unwrap(), None);
    drop((ours, theirs));

    a.close(dmsg::wire::Code::Normal, "done");
    let (a_code, b_code) = drivers.await.unwrap();
    assert_eq!(a_code, dmsg::wire::Code::Normal);
    assert_eq!(b_code, dmsg::wire::Code::Normal);
}
