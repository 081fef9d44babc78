//! Stream behaviour through a relay on loopback TCP: flow control, memory bounds, session
//! replacement and the stream-open error codes (PROTOCOL.md §6, §7, §10).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, addr, connected, port};
use dmsg::client::{ClientConfig, DialError};
use dmsg::identity::Keypair;
use dmsg::server::{RejectReason, ServerConfig};
use dmsg::wire::{Code, INITIAL_STREAM_WINDOW, MAX_DATA_BODY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PROTOCOL.md §6: a stream whose reader stalls does not stop another stream on the same
/// session from moving 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_does_not_stop_a_sibling_moving_100_mb() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(port(80)).unwrap();

    let mut stalled = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let stalled_peer = listener.accept().await.unwrap(); // never read
    let stuck = tokio::spawn(async move {
        let block = vec![1u8; 1 << 20];
        loop {
            if stalled.write_all(&block).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // the stalled stream fills its windows

    let mut moving = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let mut sink = listener.accept().await.unwrap();
    const TOTAL: usize = 100 * 1024 * 1024;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while got < TOTAL {
            let n = sink.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF after {got} bytes");
            got += n;
        }
        got
    });
    let block = vec![2u8; 1 << 20];
    let sent = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..TOTAL / block.len() {
            moving.write_all(&block).await.unwrap();
        }
    })
    .await;
    assert!(sent.is_ok(), "the sibling stream stalled");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .unwrap()
            .unwrap(),
        TOTAL
    );
    assert!(
        !stuck.is_finished(),
        "the stalled stream is still blocked, not failed"
    );
    stuck.abort();
    drop(stalled_peer);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §6: against a peer that never reads, a writer can hand over no more than the
/// windows along the path: its writes block instead of buffering without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_peer_bounds_what_the_sender_buffers() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(port(80)).unwrap();
    let mut stream = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let _never_read = listener.accept().await.unwrap();

    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let block = vec![3u8; 8 * 1024];
        while let Ok(n) = stream.write(&block).await {
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = written.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        total,
        written.load(std::sync::atomic::Ordering::Relaxed),
        "the writer is blocked"
    );
    // Two hops of stream window plus one frame held by the relay.
    let bound = 2 * INITIAL_STREAM_WINDOW as usize + MAX_DATA_BODY;
    assert!(total <= bound, "{total} bytes accepted, bound {bound}");
    assert!(
        total >= INITIAL_STREAM_WINDOW as usize,
        "at least one window was used: {total}"
    );
    assert!(session.stream_count() >= 1);
    writer.abort();
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §7.3: NO_SESSION, NO_LISTENER and ACCEPT_QUEUE_FULL reach the dialer with
/// their codes, and the server counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_dialer_with_their_codes() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;

    let nobody = dmsg::addr::DmsgAddr::new(Keypair::generate().public(), port(80));
    let refused = alice.dial_via(&session, nobody).await.unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::NoSession,
                ..
            }
        ),
        "{refused}"
    );

    let refused = alice.dial_via(&session, addr(&bob, 81)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::NoListener,
                ..
            }
        ),
        "{refused}"
    );

    let _listener = bob.listen(port(80)).unwrap(); // never accepts
    let mut held = Vec::new();
    for _ in 0..dmsg::wire::ACCEPT_BACKLOG {
        held.push(alice.dial_via(&session, addr(&bob, 80)).await.unwrap());
    }
    let refused = alice.dial_via(&session, addr(&bob, 80)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::AcceptQueueFull,
                ..
            }
        ),
        "{refused}"
    );
    let stats = server.server.stats();
    assert_eq!(stats.rejected(RejectReason::NoSession), 1);
    assert_eq!(stats.rejected(RejectReason::DestinationRejected), 2);
    drop(held);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §7.3: a destination at its stream limit refuses with TOO_MANY_STREAMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_refuses_with_too_many_streams() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let tight = ClientConfig {
        mux: dmsg::mux::MuxConfig {
            max_streams: 2,
            ..dmsg::mux::MuxConfig::default()
        },
        ..ClientConfig::default()
    };
    let (bob, _bob_session) = connected(&server, tight).await;
    let mut listener = bob.listen(port(80)).unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(alice.dial_via(&session, addr(&bob, 80)).await.unwrap());
        held.push(listener.accept().await.unwrap());
    }
    let refused = alice.dial_via(&session, addr(&bob, 80)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::TooManyStreams,
                ..
            }
        ),
        "{refused}"
    );
    drop(held);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §6.2: a stream dropped before it finished reaches the other end as a
/// CANCELLED reset (which, like a TCP reset, discards what was not read yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_is_reset_as_cancelled() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(port(80)).unwrap();
    let mut stream = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let mut peer = listener.accept().await.unwrap();
    stream.write_all(b"half a message").await.unwrap();
    drop(stream);
    let mut buf = vec![0u8; 64];
    let error = loop {
        match peer.read(&mut buf).await {
            Ok(0) => panic!("a clean EOF instead of a reset"),
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(
        error.to_string().contains(Code::Cancelled.description()),
        "{error}"
    );
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §6.2: write, shut down and drop at once — before the peer read anything —
/// loses nothing: the peer reads all 10 MB and a clean EOF through the relay, and only its
/// own writes learn that nobody reads them any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shut_down_and_dropped_at_once_delivers_every_byte_and_eof() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(port(80)).unwrap();
    let mut stream = alice.dial_via(&session, addr(&bob, 80)).await.unwrap();
    let mut peer = listener.accept().await.unwrap();

    let payload: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        stream.write_all(&payload).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
    });
    // The reader starts late, so the writer's last windows' worth is still unread (buffered
    // at the relay and at bob) when the writer drops its handle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = Vec::with_capacity(TOTAL);
    tokio::time::timeout(Duration::from_secs(60), peer.read_to_end(&mut received))
        .await
        .expect("the reader finished")
        .expect("a clean EOF, not a reset");
    writer.await.unwrap();
    assert_eq!(received.len(), TOTAL);
    assert!(received == expected, "the bytes arrived altered");

    let error = loop {
        match peer.write_all(b"anyone there?").await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    peer.shutdown().await.unwrap();
    drop(peer);
    common::wait_until("the relay forgets the stream", || {
        server.server.stats().streams == 0
    })
    .await;
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// PROTOCOL.md §10: newest session wins — a second session from the same key replaces the
/// first (which is told REPLACED), and the old session's end never evicts the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_session_from_a_key_wins() {
    let server = TestServer::start(ServerConfig::default()).await;
    let key = Keypair::generate();
    let first = dmsg::client::Client::new(key.clone(), ClientConfig::default());
    let old = first
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    let second = dmsg::client::Client::new(key.clone(), ClientConfig::default());
    let new = second
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), old.closed())
            .await
            .unwrap(),
        Code::Replaced
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // let the old session's task finish
    let current = server
        .server
        .session(&key.public())
        .expect("the new session stays");
    assert!(!current.is_closed());
    assert_eq!(server.server.session_count(), 1);
    assert!(!new.is_closed());
    first.close().await;
    second.close().await;
    server.stop().await;
}

/// PROTOCOL.md §5.2: a client closing says NORMAL; a server shutting down says SHUTTING_DOWN;
/// the server advertises free sessions (advisory) and keeps accepting past its maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ends_carry_their_reason_and_max_sessions_is_advisory() {
    let server = TestServer::start(ServerConfig {
        max_sessions: 1,
        ..ServerConfig::default()
    })
    .await;
    let (alice, _a) = connected(&server, ClientConfig::default()).await;
    let (bob, bob_session) = connected(&server, ClientConfig::default()).await;
    assert_eq!(
        server.server.session_count(),
        2,
        "accepts past max_sessions"
    );
    assert_eq!(server.server.available_sessions(), -1);

    let on_server = server.server.session(&alice.public_key()).unwrap();
    alice.close().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), on_server.closed())
            .await
            .unwrap(),
        Code::Normal
    );

    server.server.shutdown().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), bob_session.closed())
            .await
            .unwrap(),
        Code::ShuttingDown
    );
    bob.close().await;
    server.serve.await.unwrap().unwrap();
}

/// PROTOCOL.md §6: hundreds of streams writing at once on one session share its credit
/// without one spending another's reservation, and a session whose output backs up keeps
/// reading (it is what frees the peer): every stream completes. Regression for a credit race
/// and a read/write deadlock between client and relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_streams_share_one_session_and_all_complete() {
    const STREAMS: usize = 400;
    let server = TestServer::start(ServerConfig::default()).await;
    let (alice, session) = connected(&server, ClientConfig::default()).await;
    let (bob, _bob_session) = connected(
        &server,
        ClientConfig {
            accept_backlog: STREAMS,
            ..ClientConfig::default()
        },
    )
    .await;
    let mut listener = bob.listen(port(7)).unwrap();
    let echo = tokio::spawn(async move {
        let mut echoes = tokio::task::JoinSet::new();
        for _ in 0..STREAMS {
            let mut stream = listener.accept().await.unwrap();
            echoes.spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await.unwrap();
                stream.write_all(&data).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
        while let Some(done) = echoes.join_next().await {
            done.unwrap();
        }
    });
    let dst = addr(&bob, 7);
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let alice = alice.clone();
        let session = session.clone();
        streams.spawn(async move {
            let mut stream = alice.dial_via(&session, dst).await.unwrap();
            let payload = vec![(i % 251) as u8; 64 * 1024];
            stream.write_all(&payload).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, payload);
        });
    }
    let all = async {
        while let Some(done) = streams.join_next().await {
            done.unwrap();
        }
        echo.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every stream completes");
    assert_eq!(server.server.stats().streams_total, STREAMS as u64);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}
