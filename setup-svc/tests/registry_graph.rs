//! The transport graph read from a real dmsg-discovery's TransportRegistry, where the visors
//! registered their transports themselves (ROUTING.md §2.4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../visor/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use discovery_client::registry::Registry;
use setup_svc::route_setup::{GraphSource, RegistryGraph};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_comes_from_the_registry() {
    let discovery = common::Discovery::start().await;
    let net = common::nodes_with(4, discovery.config()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(common::link(&net[i], &net[i + 1]).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for id in &ids {
        while discovery.registry.transport(id).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "not registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (a, d) = (net[0].visor.public_key(), net[3].visor.public_key());
    let graph = RegistryGraph(discovery.registry.clone())
        .graph(a, 3)
        .await
        .unwrap();
    let paths = graph.paths(&a, &d, 1, 3);
    assert_eq!(paths.len(), 1);
    assert_eq!(
        paths[0].iter().map(|hop| hop.transport).collect::<Vec<_>>(),
        ids
    );
    // Two hops of reach cannot find D.
    let near = RegistryGraph(discovery.registry.clone())
        .graph(a, 2)
        .await
        .unwrap();
    assert!(near.paths(&a, &d, 1, 3).is_empty());
    for node in &net {
        node.visor.shutdown().await;
    }
    discovery.stop().await;
}
