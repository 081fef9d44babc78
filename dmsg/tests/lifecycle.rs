//! The client lifecycle against an in-process server on loopback: `close()` at any moment —
//! even while the maintenance loop is half-way through a connect — returns promptly and
//! leaves no task behind, a connect abandoned by its caller closes its session, and dropping
//! every handle without `close()` shuts the client down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use dmsg::addr::ServerAddr;
use dmsg::client::{Client, ClientConfig, LifecycleConfig};
use dmsg::identity::Keypair;
use dmsg::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_at_any_moment_returns_and_leaves_no_task() {
    let server = TestServer::start(ServerConfig::default()).await;
    let seed = ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
        pq: false,
    };
    for round in 0..40u64 {
        let client = Client::new(
            Keypair::generate(),
            ClientConfig {
                lifecycle: LifecycleConfig {
                    seeds: vec![seed.clone()],
                    start_jitter: Duration::ZERO,
                    ..LifecycleConfig::default()
                },
                ..ClientConfig::default()
            },
        );
        // Close somewhere in the first few milliseconds: before, during or after the connect.
        tokio::time::sleep(Duration::from_micros(round * 150)).await;
        tokio::time::timeout(Duration::from_secs(5), client.close())
            .await
            .unwrap_or_else(|_| panic!("close hung in round {round}"));
        assert_eq!(client.task_count(), 0, "round {round}");
    }
    common::wait_until("every session ended at the server", || {
        server.server.session_count() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_abandoned_by_its_caller_closes_its_session() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = Client::new(Keypair::generate(), ClientConfig::default());
    let pk = server.server.public_key();
    for round in 0..40u64 {
        let connect = client.connect(pk, server.addr);
        let _ = tokio::time::timeout(Duration::from_micros(200 + round * 100), connect).await;
    }
    // Whatever the rounds left half-done is closed; at most one session (the table's) lives.
    common::wait_until("abandoned sessions closed", || {
        server.server.session_count() <= 1 && client.sessions().len() <= 1
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), client.close())
        .await
        .expect("close returns");
    assert_eq!(client.task_count(), 0);
    server.stop().await;
}

/// Dropping every `Client` handle without `close()` — with its lifecycle running, sessions
/// up, a listener and a stream open — ends all its tasks: the runtime's task count and the
/// server's sessions return to where they were, and the stream still held fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_without_close_shuts_the_client_down() {
    let server = TestServer::start(ServerConfig::default()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let seed = ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
        pq: false,
    };
    let config = ClientConfig {
        lifecycle: LifecycleConfig {
            seeds: vec![seed],
            start_jitter: Duration::ZERO,
            ..LifecycleConfig::default()
        },
        ..ClientConfig::default()
    };
    let alice = Client::new(Keypair::generate(), config.clone());
    let bob = Client::new(Keypair::generate(), config);
    let session = alice
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    common::wait_until("bob's lifecycle connected", || !bob.sessions().is_empty()).await;
    let (listener, stream, mut peer) = common::stream_in_use(&alice, &session, &bob).await;
    assert!(metrics.num_alive_tasks() > baseline);
    assert_eq!(server.server.session_count(), 2);

    let extra_handle = alice.clone();
    drop((alice, extra_handle, bob, listener, session));
    common::wait_until("every task of both clients ended", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
    common::wait_until("the server saw both sessions end", || {
        server.server.session_count() == 0
    })
    .await;
    let mut rest = Vec::new();
    assert!(
        peer.read_to_end(&mut rest).await.is_err(),
        "a stream of a dropped client fails"
    );
    drop((stream, peer));
    server.stop().await;
}

/// One session per (client, server): the lifecycle and twenty concurrent `connect` calls all
/// want a session to the same server at once; they share one connect, the server ends with
/// exactly one session from the client, and every stream opened on the answers completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_to_one_server_shares_one_session() {
    let server = TestServer::start(ServerConfig::default()).await;
    let seed = ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
        pq: false,
    };
    let (bob, _bob_session) = common::connected(&server, ClientConfig::default()).await;
    let mut listener = bob.listen(common::port(7)).unwrap();
    let echo = tokio::spawn(async move {
        let mut served = 0;
        while let Some(mut stream) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).await.unwrap();
                stream.write_all(&buf).await.unwrap();
                stream.shutdown().await.unwrap();
            });
            served += 1;
            if served == 20 {
                return served;
            }
        }
        served
    });
    let alice = Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: LifecycleConfig {
                seeds: vec![seed],
                start_jitter: Duration::ZERO,
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    );
    let callers: Vec<_> = (0..20u8)
        .map(|i| {
            let alice = alice.clone();
            let server_pk = server.server.public_key();
            let addr = server.addr;
            let dst = common::addr(&bob, 7);
            tokio::spawn(async move {
                let session = alice.connect(server_pk, addr).await.unwrap();
                let mut stream = alice.dial_via(&session, dst).await.unwrap();
                let message = vec![i; 1000];
                stream.write_all(&message).await.unwrap();
                stream.shutdown().await.unwrap();
                let mut back = Vec::new();
                stream.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, message, "caller {i}");
                session.id()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for caller in callers {
        ids.push(caller.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every caller got the same session");
    assert_eq!(echo.await.unwrap(), 20, "no stream lost");
    assert_eq!(alice.sessions().len(), 1);
    assert_eq!(
        server.server.session_count(),
        2,
        "alice's one session and bob's"
    );
    assert_eq!(
        server.server.stats().sessions_total,
        2,
        "no session was replaced"
    );
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

/// A TCP listener that accepts and then never answers: a server hung mid-handshake.
async fn silent_server() -> (ServerAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let pk = Keypair::generate().public();
    (ServerAddr::new(pk, address), held)
}

/// The lifecycle keeps its servers through the one session keeper, concurrently: four
/// servers that hang every handshake (5 s deadline each) do not hold back the session to
/// the one that works. (Sequential dials reached it only after the hung ones, in the
/// shuffled seed order: 4 in 5 runs waited 5 s or more.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_servers_do_not_hold_back_the_working_one() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut seeds = vec![ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
        pq: false,
    }];
    let mut silent = Vec::new();
    for _ in 0..4 {
        let (addr, task) = silent_server().await;
        seeds.push(addr);
        silent.push(task);
    }
    let client = Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: LifecycleConfig {
                seeds,
                min_sessions: 0,
                start_jitter: Duration::ZERO,
                include_default_seeds: false,
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    );
    let started = tokio::time::Instant::now();
    common::wait_until("a session to the working server", || {
        !client.sessions().is_empty()
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the working server waited for the hung ones: {took:?}"
    );
    client.close().await;
    for task in silent {
        task.abort();
    }
    server.stop().await;
}

/// A released target's session is closed; a kept one is redialed after its session ends,
/// within the backoff base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_redial_a_lost_session_and_close_a_released_one() {
    use dmsg::client::keeper::{KeeperConfig, SessionKeepers, TargetState};

    let server = TestServer::start(ServerConfig::default()).await;
    let target = ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
        pq: false,
    };
    let client = Client::new(Keypair::generate(), ClientConfig::default());
    let mut keepers = SessionKeepers::new(
        &client,
        KeeperConfig {
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
            seed: Some(7),
        },
    );
    assert!(keepers.keep(&target));
    assert!(!keepers.keep(&target), "the same target is kept once");
    let is_up = |keepers: &SessionKeepers| keepers.states() == vec![(target.pk, TargetState::Up)];
    common::wait_until("the target is up", || is_up(&keepers)).await;
    let first = client.session(&target.pk).unwrap();
    first.close(dmsg::wire::Code::Normal, "test drops it");
    common::wait_until("a new session replaced the lost one", || {
        client
            .session(&target.pk)
            .is_some_and(|session| session.id() != first.id() && !session.is_closed())
    })
    .await;
    common::wait_until("the target is up again", || is_up(&keepers)).await;
    keepers.release(&target.pk);
    assert!(keepers.is_empty());
    common::wait_until("the released session closed at the server", || {
        server.server.session_count() == 0
    })
    .await;
    keepers.stop().await;
    client.close().await;
    server.stop().await;
}
