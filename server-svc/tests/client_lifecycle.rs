//! The dmsg client lifecycle against `dmsg-server` processes and a real discovery: seeded
//! fallback when discovery is unreachable or empty, no task left after `close()`, re-homing
//! and republishing when its server dies, and `dial` by address with errors naming the step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{DiscoveryHandle, Scratch, ServerProcess, eventually};
use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::dial::{AttemptFailure, DialByAddrError};
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::identity::Keypair;
use dmsg::wire::Code;
use testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(lifecycle: LifecycleConfig) -> Client {
    Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: LifecycleConfig {
                start_jitter: Duration::from_millis(200),
                publish_debounce: Duration::from_millis(100),
                ..lifecycle
            },
            ..ClientConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_discovery_unreachable_the_client_connects_through_its_seeds() {
    let scratch = Scratch::new("unreachable");
    let server = ServerProcess::start(&scratch, "server", &[]);
    server.wait_accepting().await;
    let client = client(LifecycleConfig {
        seeds: vec![server.seed()],
        discovery: DiscoveryTarget::Tcp(format!("http://127.0.0.1:{}", free_port())),
        ..LifecycleConfig::default()
    });
    // The object exists at once (no optional states); the session follows in the background.
    assert!(client.connected_servers().is_empty());
    eventually(
        "connected through the seed",
        Duration::from_secs(10),
        || client.connected_servers() == vec![server.pk],
    )
    .await;
    client.close().await;
    assert_eq!(client.task_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_discovery_falls_back_to_the_seeds_and_the_entry_names_them() {
    let scratch = Scratch::new("empty");
    // Not registered anywhere: discovery lists no server at all.
    let server = ServerProcess::start(&scratch, "server", &[]);
    server.wait_accepting().await;
    let discovery = DiscoveryHandle::start().await;
    let client = client(LifecycleConfig {
        seeds: vec![server.seed()],
        discovery: DiscoveryTarget::Tcp(discovery.url()),
        ..LifecycleConfig::default()
    });
    eventually(
        "connected through the seed",
        Duration::from_secs(10),
        || client.connected_servers() == vec![server.pk],
    )
    .await;
    discovery
        .wait_entry(&client.public_key(), Duration::from_secs(10), |e| {
            e.client
                .as_ref()
                .is_some_and(|c| c.delegated_servers == vec![server.pk])
        })
        .await;
    client.close().await;
    assert!(
        discovery.entry(&client.public_key()).await.is_none(),
        "close deletes the entry"
    );
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_task_of_the_client_running() {
    let scratch = Scratch::new("close");
    let server = ServerProcess::start(&scratch, "server", &[]);
    server.wait_accepting().await;
    let discovery = DiscoveryHandle::start().await;
    let lifecycle = || LifecycleConfig {
        seeds: vec![server.seed()],
        discovery: DiscoveryTarget::Tcp(discovery.url()),
        ..LifecycleConfig::default()
    };
    let a = client(lifecycle());
    let b = client(lifecycle());
    for c in [&a, &b] {
        eventually("connected and published", Duration::from_secs(10), || {
            c.published_sequence().is_some()
        })
        .await;
    }
    // Exercise everything that spawns: a listener with a live stream, a dial by address,
    // the ping responder.
    let port = Port::new(4000).unwrap();
    let mut listener = a.listen(port).unwrap();
    let mut stream = b.dial(DmsgAddr::new(a.public_key(), port)).await.unwrap();
    let mut accepted = listener.accept().await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    accepted.read_exact(&mut byte).await.unwrap();
    let rtt = b.ping(a.public_key()).await.unwrap();
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    assert!(a.task_count() > 0 && b.task_count() > 0);

    for c in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(10), c.close())
            .await
            .expect("close returns");
        assert_eq!(c.task_count(), 0, "every task of the client ended");
    }
    drop((stream, accepted, listener));
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_server_dies_the_client_rehomes_and_republishes() {
    let scratch = Scratch::new("rehome");
    let discovery = DiscoveryHandle::start().await;
    let url = discovery.url();
    let mut servers = vec![
        ServerProcess::start(&scratch, "s1", &["--discovery", &url]),
        ServerProcess::start(&scratch, "s2", &["--discovery", &url]),
    ];
    for server in &servers {
        discovery
            .wait_entry(&server.pk, Duration::from_secs(15), |e| e.server.is_some())
            .await;
    }
    let client = client(LifecycleConfig {
        discovery: DiscoveryTarget::Tcp(url.clone()),
        reconnect_base: Duration::from_millis(200),
        ..LifecycleConfig::default()
    });
    eventually("connected to one server", Duration::from_secs(10), || {
        client.connected_servers().len() == 1
    })
    .await;
    let home = client.connected_servers()[0];
    discovery
        .wait_entry(&client.public_key(), Duration::from_secs(10), |e| {
            e.client
                .as_ref()
                .is_some_and(|c| c.delegated_servers == vec![home])
        })
        .await;
    // A dialer caches the client's entry (naming `home`) by dialing it once.
    let port = Port::new(4000).unwrap();
    let mut listener = client.listen(port).unwrap();
    let dialer = self::client(LifecycleConfig {
        discovery: DiscoveryTarget::Tcp(url.clone()),
        reconnect_base: Duration::from_millis(200),
        ..LifecycleConfig::default()
    });
    eventually("the dialer connected", Duration::from_secs(10), || {
        !dialer.connected_servers().is_empty()
    })
    .await;
    let dst = DmsgAddr::new(client.public_key(), port);
    drop(dialer.dial(dst).await.unwrap());
    drop(listener.accept().await.unwrap());

    // kill -9 the home server: no goodbye, its entry stays in discovery until it expires.
    let index = servers.iter().position(|s| s.pk == home).unwrap();
    servers[index].process.kill();
    let other = servers[1 - index].pk;
    eventually(
        "re-homed on the other server",
        Duration::from_secs(15),
        || client.connected_servers() == vec![other],
    )
    .await;
    discovery
        .wait_entry(&client.public_key(), Duration::from_secs(10), |e| {
            e.client
                .as_ref()
                .is_some_and(|c| c.delegated_servers == vec![other])
        })
        .await;
    // The dialer's cached entry is stale now; one dial still finds the client, by asking
    // discovery again when the cached way leads nowhere.
    eventually("the dialer is connected", Duration::from_secs(15), || {
        dialer.connected_servers() == vec![other]
    })
    .await;
    let mut stream = tokio::time::timeout(Duration::from_secs(15), dialer.dial(dst))
        .await
        .expect("dial returns")
        .expect("a stale cached entry is refreshed within the same dial");
    let mut accepted = listener.accept().await.unwrap();
    stream.write_all(b"y").await.unwrap();
    let mut byte = [0u8; 1];
    accepted.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"y");
    drop((stream, accepted, listener));
    dialer.close().await;
    client.close().await;
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_errors_name_the_step_that_failed() {
    let scratch = Scratch::new("dial-errors");
    let discovery = DiscoveryHandle::start().await;
    let url = discovery.url();
    let mut server = ServerProcess::start(&scratch, "server", &["--discovery", &url]);
    discovery
        .wait_entry(&server.pk, Duration::from_secs(15), |e| e.server.is_some())
        .await;
    let lifecycle = || LifecycleConfig {
        discovery: DiscoveryTarget::Tcp(url.clone()),
        dial_timeout: Duration::from_secs(5),
        ..LifecycleConfig::default()
    };
    let target = client(lifecycle());
    let dialer = client(lifecycle());
    eventually("target published", Duration::from_secs(10), || {
        target.published_sequence().is_some()
    })
    .await;

    // Nobody has this key.
    let stranger = Keypair::generate().public();
    let error = dialer
        .dial(DmsgAddr::new(stranger, Port::new(1).unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DialByAddrError::NoEntry(pk) if pk == stranger),
        "{error}"
    );

    // The target is there but does not listen on the port: its answer comes back at once.
    let error = dialer
        .dial(DmsgAddr::new(target.public_key(), Port::new(5).unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            DialByAddrError::Refused(dmsg::client::DialError::Rejected {
                code: Code::NoListener,
                ..
            })
        ),
        "{error}"
    );

    // A dial that works leaves the target's entry in the dialer's cache.
    let _listening = target.listen(Port::new(9).unwrap()).unwrap();
    let stream = dialer
        .dial(DmsgAddr::new(target.public_key(), Port::new(9).unwrap()))
        .await
        .unwrap();
    drop(stream);

    // Its only server dies: every attempt fails — through the cached entry, then through
    // discovery's (the same servers) — and the error lists each attempt actually made.
    server.process.kill();
    let _ = server.process.wait_exit(Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    let error = dialer
        .dial(DmsgAddr::new(target.public_key(), Port::new(9).unwrap()))
        .await
        .unwrap_err();
    assert!(
        !error.to_string().contains("no attempt was made"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "within the dial timeout"
    );
    match &error {
        DialByAddrError::AllAttemptsFailed { attempts, .. } => {
            assert!(!attempts.is_empty(), "{error}");
            for attempt in attempts {
                assert!(
                    matches!(
                        attempt.failure,
                        AttemptFailure::Connect(_) | AttemptFailure::Stream(_)
                    ),
                    "{attempt}"
                );
            }
        }
        DialByAddrError::Timeout { .. } => {}
        other => panic!("unexpected {other}"),
    }
    assert!(
        error.to_string().contains(&server.pk.to_string()),
        "{error}"
    );
    target.close().await;
    dialer.close().await;
    discovery.stop().await;
}
