//! Every stream-refusal and session-end code provoked on real loopback TCP
//! (PROTOCOL.md §7.4). Codes provoked elsewhere: NORMAL, REPLACED, SHUTTING_DOWN,
//! NO_SESSION, NO_LISTENER, ACCEPT_QUEUE_FULL, TOO_MANY_STREAMS, CANCELLED, PQ_REQUIRED
//! (`tests/streams.rs`, `tests/pq.rs`); FLOW_CONTROL (`mux/tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::util::{FakeServer, Relay, never_answer, raw_session};
use crate::addr::{DmsgAddr, Port};
use crate::client::{Client, ClientConfig, DialError};
use crate::identity::Keypair;
use crate::mux::{MuxConfig, PingConfig};
use crate::server::{RejectReason, ServerConfig};
use crate::session::OpenAnswer;
use crate::wire::{Code, Mode, StreamRequest};

fn port(n: u16) -> Port {
    Port::new(n).unwrap()
}

/// Sends `request` on a raw session and returns the refusal code.
async fn refusal(session: &crate::session::Session, request: &[u8]) -> Code {
    match session.open(request).unwrap().answer().await {
        Err(OpenAnswer::Rejected(reason)) => reason.code,
        Err(other) => panic!("not a rejection: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

/// MALFORMED_REQUEST, SOURCE_MISMATCH and HANDSHAKE_FAILED (the last from the destination,
/// relayed back through the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_requests_are_refused_with_their_codes() {
    let relay = Relay::start(ServerConfig::default()).await;
    let mallory = Keypair::generate();
    let (handler, _held) = never_answer();
    let (session, _driver) = raw_session(&relay, &mallory, handler).await;
    let (bob, _bob_session) = relay.client().await;
    let _listener = bob.listen(port(80)).unwrap();

    assert_eq!(
        refusal(&session, b"not a request").await,
        Code::MalformedRequest
    );

    let impostor = StreamRequest {
        src: DmsgAddr::new(Keypair::generate().public(), port(49152)),
        dst: DmsgAddr::new(bob.public_key(), port(80)),
        mode: Mode::Classical,
        noise: Bytes::from_static(&[0u8; 48]),
    };
    assert_eq!(
        refusal(&session, &impostor.encode()).await,
        Code::SourceMismatch
    );

    let garbage_handshake = StreamRequest {
        src: DmsgAddr::new(mallory.public(), port(49152)),
        ..impostor
    };
    assert_eq!(
        refusal(&session, &garbage_handshake.encode()).await,
        Code::HandshakeFailed
    );

    let stats = relay.server.stats();
    assert_eq!(stats.rejected(RejectReason::MalformedRequest), 1);
    assert_eq!(stats.rejected(RejectReason::SourceMismatch), 1);
    bob.close().await;
    relay.stop().await;
}

/// DESTINATION_TIMEOUT: the destination is connected but never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_destination_times_out() {
    let relay = Relay::start(ServerConfig {
        open_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let silent = Keypair::generate();
    let (handler, held) = never_answer();
    let (_silent_session, _driver) = raw_session(&relay, &silent, handler).await;
    let (alice, session) = relay.client().await;
    let refused = alice
        .dial_via(&session, DmsgAddr::new(silent.public(), port(80)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            DialError::Rejected {
                code: Code::DestinationTimeout,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "the request did reach the destination"
    );
    assert_eq!(
        relay
            .server
            .stats()
            .rejected(RejectReason::DestinationTimeout),
        1
    );
    alice.close().await;
    relay.stop().await;
}

/// The open deadline is a timer of the client's session mux too: with a client deadline
/// shorter than the relay's, the dial fails as a timeout of its own, and the relay forgets
/// the stream (the mux reset it as CANCELLED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_not_answered_in_the_clients_open_timeout_fails_as_a_timeout() {
    let relay = Relay::start(ServerConfig::default()).await;
    let silent = Keypair::generate();
    let (handler, held) = never_answer();
    let (_silent_session, _driver) = raw_session(&relay, &silent, handler).await;
    let alice = Client::new(
        Keypair::generate(),
        ClientConfig {
            open_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        },
    );
    let session = alice
        .connect(relay.server.public_key(), relay.addr)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let refused = alice
        .dial_via(&session, DmsgAddr::new(silent.public(), port(80)))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, DialError::Timeout(after) if after == Duration::from_millis(200)),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "the request reached the destination"
    );
    assert_eq!(session.stream_count(), 0, "the timed-out stream is gone");
    alice.close().await;
    relay.stop().await;
}

/// WRONG_DESTINATION: a (misbehaving) server forwards a request meant for someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_someone_else_is_refused() {
    let fake = FakeServer::bind().await;
    let client = Client::new(Keypair::generate(), ClientConfig::default());
    let connect = tokio::spawn({
        let client = client.clone();
        let pk = fake.keypair.public();
        let addr = fake.addr;
        async move { client.connect(pk, addr).await.unwrap() }
    });
    let (tcp, read_ahead, mux) = fake.accept().await;
    let _client_session = connect.await.unwrap();
    let (fake_session, driver) = crate::session::Session::from_mux(
        tcp,
        read_ahead,
        mux,
        client.public_key(),
        None,
        crate::noise::PqStatus::Hybrid,
        Arc::new(|_| {}),
    );
    let _driver = tokio::spawn(driver);
    let misrouted = StreamRequest {
        src: DmsgAddr::new(Keypair::generate().public(), port(49152)),
        dst: DmsgAddr::new(Keypair::generate().public(), port(80)),
        mode: Mode::Classical,
        noise: Bytes::from_static(&[0u8; 48]),
    };
    assert_eq!(
        refusal(&fake_session, &misrouted.encode()).await,
        Code::WrongDestination
    );
    client.close().await;
}

/// NOT_ALLOWED: a filtered listener refuses a key it does not admit before any handshake
/// (PROTOCOL.md §7.5), and serves the key it admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_listener_refuses_keys_it_does_not_admit() {
    let relay = Relay::start(ServerConfig::default()).await;
    let (bob, _bob_session) = relay.client().await;
    let (friend, friend_session) = relay.client().await;
    let (stranger, stranger_session) = relay.client().await;
    let admitted = friend.public_key();
    let mut listener = bob
        .listen_filtered(port(80), move |pk| *pk == admitted)
        .unwrap();
    let to_bob = DmsgAddr::new(bob.public_key(), port(80));

    match stranger.dial_via(&stranger_session, to_bob).await {
        Err(DialError::Rejected { code, reason, .. }) => {
            assert_eq!(code, Code::NotAllowed);
            assert!(
                reason.contains(&stranger.public_key().to_string()),
                "{reason}"
            );
        }
        other => panic!("not refused: {other:?}"),
    }
    let mut stream = friend.dial_via(&friend_session, to_bob).await.unwrap();
    let mut accepted = listener.accept().await.unwrap();
    assert_eq!(accepted.remote_addr().pk, friend.public_key());
    stream.write_all(b"hi").await.unwrap();
    let mut hi = [0u8; 2];
    accepted.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");
    for client in [bob, friend, stranger] {
        client.close().await;
    }
    relay.stop().await;
}

/// BAD_RECORD: a record that fails end-to-end authentication (forged or altered on the way)
/// errors the reader and resets the stream back to the sender with BAD_RECORD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_resets_the_stream_as_bad_record() {
    let relay = Relay::start(ServerConfig::default()).await;
    let (alice, session) = relay.client().await;
    let (bob, _bob_session) = relay.client().await;
    let mut listener = bob.listen(port(80)).unwrap();
    let mut stream = alice
        .dial_via(&session, DmsgAddr::new(bob.public_key(), port(80)))
        .await
        .unwrap();
    let mut peer = listener.accept().await.unwrap();
    stream.raw_mut().send_all(&[0x42; 40], false).await.unwrap();
    let error = peer.read(&mut [0u8; 64]).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    let error = loop {
        match stream.write_all(b"more").await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(error) => break error,
        }
    };
    assert!(
        error.to_string().contains(Code::BadRecord.description()),
        "{error}"
    );
    alice.close().await;
    bob.close().await;
    relay.stop().await;
}

/// Starts a client session against a fake server; returns the client, its session, and the
/// fake server's end.
async fn against_fake(
    config: ClientConfig,
) -> (
    Client,
    crate::session::Session,
    tokio::net::TcpStream,
    crate::mux::Mux,
) {
    let fake = FakeServer::bind().await;
    let client = Client::new(Keypair::generate(), config);
    let connect = tokio::spawn({
        let client = client.clone();
        let pk = fake.keypair.public();
        let addr = fake.addr;
        async move { client.connect(pk, addr).await.unwrap() }
    });
    let (tcp, _read_ahead, mux) = fake.accept().await;
    (client, connect.await.unwrap(), tcp, mux)
}

fn fast_pings() -> ClientConfig {
    ClientConfig {
        mux: MuxConfig {
            ping: PingConfig {
                interval: Some(Duration::from_millis(100)),
                deadline: Duration::from_millis(100),
                max_failures: 2,
            },
            ..MuxConfig::default()
        },
        ..ClientConfig::default()
    }
}

/// PING_TIMEOUT: a server that stops answering (its socket open, its process stuck) is
/// detected after two missed deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_fails_its_pings() {
    let (client, session, _silent_tcp, _mux) = against_fake(fast_pings()).await;
    let code = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .unwrap();
    assert_eq!(code, Code::PingTimeout);
    client.close().await;
}

/// Closing a session while its ping is unanswered returns at once (the ping holds no lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_an_unanswered_ping_is_immediate() {
    let config = ClientConfig {
        mux: MuxConfig {
            ping: PingConfig {
                interval: Some(Duration::from_secs(60)),
                deadline: Duration::from_secs(18),
                max_failures: 2,
            },
            ..MuxConfig::default()
        },
        ..ClientConfig::default()
    };
    let (client, session, _silent_tcp, _mux) = against_fake(config).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // the first ping is out, unanswered
    let started = tokio::time::Instant::now();
    session.close(Code::Normal, "bye");
    let code = session.closed().await;
    client.close().await;
    let elapsed = started.elapsed();
    assert_eq!(code, Code::Normal);
    assert!(
        elapsed < Duration::from_millis(100),
        "close took {elapsed:?}"
    );
}

/// PROTOCOL_VIOLATION: garbage after the handshake closes the session (and says why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_session_is_a_protocol_violation() {
    let (client, session, mut tcp, _mux) = against_fake(ClientConfig::default()).await;
    tcp.write_all(&[0xee; 64]).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .unwrap();
    assert_eq!(code, Code::ProtocolViolation);
    client.close().await;
}

/// SESSION_CLOSED: the connection drops without a GOAWAY; the session and its streams fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_closes_the_session() {
    let (client, session, tcp, _mux) = against_fake(ClientConfig::default()).await;
    drop(tcp);
    let code = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .unwrap();
    assert_eq!(code, Code::SessionClosed);
    let refused = client
        .dial_via(
            &session,
            DmsgAddr::new(Keypair::generate().public(), port(1)),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(DialError::Open(_) | DialError::SessionClosed(_))
        ),
        "{refused:?}"
    );
    client.close().await;
}
