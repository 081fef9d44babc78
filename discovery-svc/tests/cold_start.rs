//! Cold start (ARCHITECTURE §5.3): discovery starts before any dmsg server, with an empty
//! store; the three configured servers come up afterwards; discovery's dmsg side connects to
//! all three without any registration having happened — and a client reaches discovery's
//! gRPC over dmsg through one of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Discovery;
use discovery_svc::run::StoreConfig;
use dmsg::addr::ServerAddr;
use dmsg::discovery::Discovery as _;
use dmsg::identity::Keypair;
use dmsg::server::{Server, ServerConfig};
use skywire_proto::skywire::discovery::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_connects_to_configured_servers_that_start_after_it() {
    let servers: Vec<(Keypair, u16)> = (0..3)
        .map(|_| (Keypair::generate(), common::free_port()))
        .collect();
    let configured = servers
        .iter()
        .map(|(key, port)| ServerAddr {
            pk: key.public(),
            address: format!("127.0.0.1:{port}"),
            pq: false,
        })
        .collect();
    let discovery =
        Discovery::start_with(StoreConfig::Memory, configured, Default::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // its first dials fail: nobody is up

    let mut running = Vec::new();
    for (key, port) in servers.iter() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", *port))
            .await
            .unwrap();
        let server = Server::new(key.clone(), ServerConfig::default());
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        running.push((server, serve));
    }

    let mut raw = discovery.raw().await;
    let all_connected = async {
        loop {
            let status = raw.status(pb::StatusRequest {}).await.unwrap().into_inner();
            if status.dmsg_servers.len() == 3 {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(15), all_connected)
        .await
        .expect("discovery connects to all 3 configured servers");
    assert_eq!(status.store, "memory");
    assert!(status.store_healthy);
    assert!(
        discovery.client.all_servers().await.unwrap().is_empty(),
        "no server registered"
    );
    for (server, _) in &running {
        assert!(
            server.session(&discovery.keypair.public()).is_some(),
            "each server sees discovery"
        );
    }
    discovery.stop().await;
    for (server, serve) in running {
        server.shutdown().await;
        serve.await.unwrap().unwrap();
    }
}
