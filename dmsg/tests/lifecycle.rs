//! The client lifecycle against an in-process server on loopback: `close()` at any moment —
//! even while the maintenance loop is half-way through a connect — returns promptly and
//! leaves no task behind, and a connect abandoned by its caller closes its session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use dmsg::addr::ServerAddr;
use dmsg::client::{Client, ClientConfig, LifecycleConfig};
use dmsg::identity::Keypair;
use dmsg::server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_at_any_moment_returns_and_leaves_no_task() {
    let server = TestServer::start(ServerConfig::default()).await;
    let seed = ServerAddr {
        pk: server.server.public_key(),
        address: server.addr.to_string(),
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
