//! `dmsg-server` as a child process on loopback: it accepts before discovery exists and
//! registers once it appears; its data plane's death shows in health and the exit code; a
//! publish in flight at shutdown never leaves an entry behind; dmsg-only registration; the
//! admin endpoint (reflection, Stats, /metrics) and `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::delay_store::{DelayStore, Event};
use common::{DiscoveryHandle, Scratch, ServerProcess, eventually};
use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::identity::Keypair;
use futures::StreamExt;
use skywire_proto::skywire::server::v1::registration::State;
use testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;

/// A lifecycle client seeded with `seeds`, discovery at `discovery`.
fn seeded_client(seeds: Vec<dmsg::addr::ServerAddr>, discovery: DiscoveryTarget) -> Client {
    Client::new(
        Keypair::generate(),
        ClientConfig {
            lifecycle: LifecycleConfig {
                seeds,
                discovery,
                start_jitter: Duration::from_millis(100),
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_discovery_accepts_seeded_clients_then_registers() {
    let scratch = Scratch::new("cold-server");
    let discovery_port = free_port();
    let url = format!("http://127.0.0.1:{discovery_port}");
    let mut server = ServerProcess::start(
        &scratch,
        "server",
        &["--discovery", &url, "--registration-backoff-cap-secs", "2"],
    );
    server.wait_accepting().await;

    // Ready means accepting: SERVING although discovery does not exist.
    testkit::grpc::wait_health(
        server.admin_channel().await,
        "",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    let stats = server.stats().await;
    assert_eq!(stats.registration.as_ref().unwrap().state(), State::Pending);

    // Clients that know it from seeds connect, with discovery unreachable, and talk.
    let unreachable = DiscoveryTarget::Tcp(url.clone());
    let listener_client = seeded_client(vec![server.seed()], unreachable.clone());
    let dialer = seeded_client(vec![server.seed()], unreachable);
    for client in [&listener_client, &dialer] {
        eventually(
            "the client connects through its seed",
            Duration::from_secs(10),
            || client.connected_servers() == vec![server.pk],
        )
        .await;
    }
    let port = Port::new(9000).unwrap();
    let mut listener = listener_client.listen(port).unwrap();
    let session = dialer.session(&server.pk).unwrap();
    let mut stream = dialer
        .dial_via(&session, DmsgAddr::new(listener_client.public_key(), port))
        .await
        .unwrap();
    let mut accepted = listener.accept().await.unwrap();
    stream.write_all(b"before discovery").await.unwrap();
    let mut buf = [0u8; 16];
    accepted.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before discovery");

    // Discovery comes up where the server expects it: the server registers by itself.
    let discovery = DiscoveryHandle::start_on(
        discovery_port,
        Arc::new(discovery_svc::store::memory::MemoryStore::new()),
        Vec::new(),
    )
    .await;
    let entry = discovery
        .wait_entry(&server.pk, Duration::from_secs(15), |e| e.server.is_some())
        .await;
    assert_eq!(entry.server.unwrap().address, server.relay.to_string());
    let stats = server.wait_registered().await;
    let registration = stats.registration.clone().unwrap();
    assert_eq!(registration.via, "tcp");
    assert!(
        registration.failed_attempts == 0 && stats.sessions == 2,
        "{stats:?}"
    );
    // The clients, retrying in the background, publish their entries too.
    discovery
        .wait_entry(&dialer.public_key(), Duration::from_secs(40), |e| {
            e.client
                .as_ref()
                .is_some_and(|c| c.delegated_servers == vec![server.pk])
        })
        .await;

    drop((stream, accepted, listener));
    listener_client.close().await;
    dialer.close().await;
    server.process.stop_cleanly().await;
    assert!(
        discovery.entry(&server.pk).await.is_none(),
        "the entry is deleted on shutdown"
    );
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_accept_loop_turns_health_not_serving_and_exits_non_zero() {
    let scratch = Scratch::new("dead-relay");
    // 64 descriptors: the connections below exhaust them, so accept fails with EMFILE until
    // the accept loop gives up (it tolerates ~4 s of failures first). The per-source limits
    // would refuse (and close) them long before that, so they are lifted here: this is
    // about the accept loop dying, not admission.
    let mut server = ServerProcess::start_with(
        &scratch,
        "server",
        &[
            "--source-max-handshakes",
            "1000",
            "--source-accept-burst",
            "1000",
            "--first-message-timeout-ms",
            "5000",
        ],
        Some(64),
    );
    server.wait_accepting().await;
    let channel = server.admin_channel().await;
    testkit::grpc::wait_health(
        channel.clone(),
        "",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Hold connections that never handshake: every one the server accepts takes a descriptor
    // for the 5 s handshake deadline, and the rest wait in the backlog.
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(server.relay).await {
            held.push(tcp);
        }
    }

    let not_serving = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(update)) = watch.next().await {
            if update.status() == ServingStatus::NotServing {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(not_serving, Ok(true), "health turns NOT_SERVING");
    let exit = server.process.wait_exit(Duration::from_secs(20)).await;
    assert!(!exit.success(), "the process exits non-zero: {exit:?}");
    let log = std::fs::read_to_string(scratch.path().join("server.log")).unwrap();
    assert!(log.contains("accept loop died"), "{log}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_publish_in_flight_leaves_no_entry() {
    let scratch = Scratch::new("in-flight");
    let store = DelayStore::new();
    let discovery =
        DiscoveryHandle::start_on(free_port(), Arc::new(store.clone()), Vec::new()).await;
    let mut server = ServerProcess::start(&scratch, "server", &["--discovery", &discovery.url()]);
    discovery
        .wait_entry(&server.pk, Duration::from_secs(15), |e| e.server.is_some())
        .await;

    // Every further write of the server's entry is held 3 s in the store; a session change
    // makes the server republish, and the write is then in flight.
    store.arm(server.pk, Duration::from_secs(3));
    let client = seeded_client(vec![server.seed()], DiscoveryTarget::None);
    eventually(
        "a put is held in the store",
        Duration::from_secs(15),
        || {
            store
                .events()
                .iter()
                .any(|e| matches!(e, Event::PutHeld(_)))
        },
    )
    .await;
    server.process.terminate();
    let exit = server.process.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "clean exit: {exit:?}");

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        discovery.entry(&server.pk).await.is_none(),
        "no entry 5 s after shutdown; store saw {:?}",
        store.events()
    );
    let events = store.events();
    let held = events
        .iter()
        .position(|e| matches!(e, Event::PutHeld(_)))
        .unwrap();
    let landed = events
        .iter()
        .rposition(|e| matches!(e, Event::PutDone(..)))
        .unwrap();
    let deleted = events
        .iter()
        .position(|e| matches!(e, Event::Delete(_)))
        .expect("the entry was deleted");
    assert!(
        held < landed && landed < deleted,
        "the held publish completed before the delete: {events:?}"
    );
    client.close().await;
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dmsg_only_mode_the_server_registers_through_another_server() {
    let scratch = Scratch::new("dmsg-only");
    let mut relay = ServerProcess::start(&scratch, "relay", &[]);
    relay.wait_accepting().await;
    // Discovery has no TCP endpoint the server knows; it is connected to `relay` only.
    let discovery = DiscoveryHandle::start_on(
        free_port(),
        Arc::new(discovery_svc::store::memory::MemoryStore::new()),
        vec![relay.seed()],
    )
    .await;
    let relay_seed = relay.seed().to_string();
    let discovery_pk = discovery.keypair.public().to_string();
    let mut server = ServerProcess::start(
        &scratch,
        "server",
        &[
            "--discovery-pk",
            &discovery_pk,
            "--servers",
            &relay_seed,
            "--registration-backoff-cap-secs",
            "2",
        ],
    );
    discovery
        .wait_entry(&server.pk, Duration::from_secs(30), |e| e.server.is_some())
        .await;
    let registration = server.wait_registered().await.registration.unwrap();
    assert_eq!(registration.via, "dmsg");

    server.process.stop_cleanly().await;
    assert!(
        discovery.entry(&server.pk).await.is_none(),
        "deleted through dmsg on shutdown"
    );
    relay.process.stop_cleanly().await;
    discovery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_serves_reflection_stats_and_metrics() {
    let scratch = Scratch::new("admin");
    let mut server = ServerProcess::start(&scratch, "server", &[]);
    server.wait_accepting().await;
    testkit::grpc::assert_reflection_lists(
        server.admin_channel().await,
        &["skywire.server.v1.Admin", "grpc.health.v1.Health"],
    )
    .await;
    let client = seeded_client(vec![server.seed()], DiscoveryTarget::None);
    eventually("connected", Duration::from_secs(10), || {
        !client.connected_servers().is_empty()
    })
    .await;
    let stats = server.stats().await;
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.handshakes_pq, 1, "PQ hybrid by default: {stats:?}");
    assert_eq!(stats.registration.unwrap().state(), State::Disabled);

    let mut tcp = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for line in [
        "dmsg_server_sessions_open 1",
        "dmsg_server_relay_up 1",
        "dmsg_server_handshakes_total{outcome=\"hybrid\"} 1",
        "dmsg_server_registered 0",
    ] {
        assert!(response.contains(line), "{line} missing from\n{response}");
    }
    client.close().await;
    server.process.stop_cleanly().await;
}

#[test]
fn help_explains_every_flag() {
    testkit::process::assert_help_mentions(
        env!("CARGO_BIN_EXE_dmsg-server"),
        &[
            "--config",
            "--listen",
            "--public-address",
            "--admin",
            "--key-file",
            "--discovery ",
            "--discovery-pk",
            "--servers",
            "--max-sessions",
            "--registration-backoff-cap-secs",
            "/metrics",
        ],
    );
}
