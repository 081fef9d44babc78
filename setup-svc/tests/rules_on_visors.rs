//! The rules `rules::route_group_rules` makes, installed on real visors over loopback stcp
//! along a path `paths` found: a 3-hop route group moves bytes both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../visor/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use setup_svc::paths::Graph;
use setup_svc::rules::{ids_needed, route_group_rules};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_rules_carry_a_three_hop_route_group() {
    let net = common::nodes(4).await;
    let mut transports = Vec::new();
    for i in 0..3 {
        let id = common::link(&net[i], &net[i + 1]).await;
        transports.push((net[i].visor.public_key(), net[i + 1].visor.public_key(), id));
    }
    let graph = Graph::new(transports);
    let (a, d) = (net[0].visor.public_key(), net[3].visor.public_key());
    let forward = graph.paths(&a, &d, 1, 3).remove(0);
    let reverse = graph.paths(&d, &a, 1, 3).remove(0);
    assert_eq!((forward.len(), reverse.len()), (3, 3));

    let by_key: HashMap<_, _> = net
        .iter()
        .map(|n| (n.visor.public_key(), &n.visor))
        .collect();
    let reserved = ids_needed(&forward, &reverse)
        .into_iter()
        .map(|(pk, n)| (pk, by_key[&pk].reserve(n).unwrap()))
        .collect();
    let rules = route_group_rules(
        (a, common::port(5)),
        (d, common::port(80)),
        &forward,
        &reverse,
        &reserved,
        Duration::from_secs(30),
    )
    .unwrap();
    for (pk, list) in &rules.intermediaries {
        for rule in list {
            by_key[pk].install(*rule).unwrap();
        }
    }
    for rule in rules.destination {
        by_key[&d].install(rule).unwrap();
    }
    let mut listener = net[3].visor.listen(common::port(80)).unwrap();
    let (dialed, accepted) = tokio::join!(
        net[0]
            .visor
            .dial(rules.initiator_forward, rules.initiator_consume),
        listener.accept()
    );
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    dialed.write_all(b"over three hops").await.unwrap();
    let mut got = [0u8; 15];
    accepted.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"over three hops");
    accepted.write_all(b"and back").await.unwrap();
    let mut back = [0u8; 8];
    dialed.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"and back");
    drop((dialed, accepted));
    for node in &net {
        node.visor.shutdown().await;
    }
}
