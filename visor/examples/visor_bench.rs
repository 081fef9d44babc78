//! visor benchmarks: `cargo run --release -p visor --example visor_bench [-- --quick]`.
//!
//! Everything runs on this machine in one run, alternating within each round so drift on a
//! shared machine hits both sides of a ratio alike:
//! - the dmsg bench's baselines (the same code, `#[path]`-included): `direct_e2e_gbps`
//!   (end-to-end encryption A → B over one TCP connection, no server) and `relay_gbps` (one
//!   stream A → dmsg server → B);
//! - a route group A → B over one stcp transport, and A → B → C over two (an intermediary in
//!   the middle, the shape of the relay), and A → B → C over dmsg transports;
//! - the route-group handshake over two hops;
//! - the packets per second one intermediary forwards (1 KiB writes).
//!
//! The last lines are the summary, one `key=value` per line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../dmsg/examples/baselines/mod.rs"]
mod baselines;
#[path = "../tests/common/mod.rs"]
mod common;

use baselines::{direct_e2e_gbps, gbps, middle, relay_gbps, transfer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

struct Sizes {
    transfer: usize,
    rounds: usize,
    opens: usize,
    small_writes: usize,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            transfer: 256 << 20,
            rounds: 3,
            opens: 50,
            small_writes: 100_000,
        }
    } else {
        Sizes {
            transfer: 1 << 30,
            rounds: 5,
            opens: 200,
            small_writes: 400_000,
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = sizes(quick);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = runtime.block_on(run(&sizes));
    println!();
    for (key, value) in summary {
        println!("{key}={value}");
    }
}

async fn run(sizes: &Sizes) -> Vec<(&'static str, String)> {
    let mut out = vec![("quick", u8::from(sizes.transfer < 1 << 30).to_string())];
    let (mut directs, mut relays, mut one_hop, mut two_hop) = (vec![], vec![], vec![], vec![]);
    let (mut one_vs_direct, mut two_vs_relay, mut dmsg_two) = (vec![], vec![], vec![]);
    for round in 0..sizes.rounds {
        let direct = direct_e2e_gbps(sizes.transfer).await;
        let one = route_gbps(1, sizes.transfer).await;
        let relay = relay_gbps(sizes.transfer).await;
        let two = route_gbps(2, sizes.transfer).await;
        let over_dmsg = route_dmsg_2hop_gbps(sizes.transfer).await;
        eprintln!(
            "round {round}: direct {direct:.2} Gbit/s, 1 hop {one:.2}, relay {relay:.2}, \
             2 hops {two:.2}, 2 dmsg hops {over_dmsg:.2}"
        );
        one_vs_direct.push(one / direct);
        two_vs_relay.push(two / relay);
        directs.push(direct);
        relays.push(relay);
        one_hop.push(one);
        two_hop.push(two);
        dmsg_two.push(over_dmsg);
    }
    out.push(("direct_e2e_gbps", format!("{:.2}", middle(directs))));
    out.push(("relay_gbps", format!("{:.2}", middle(relays))));
    out.push(("route_1hop_gbps", format!("{:.2}", middle(one_hop))));
    out.push(("route_2hop_gbps", format!("{:.2}", middle(two_hop))));
    out.push((
        "route_1hop_vs_direct",
        format!("{:.3}", middle(one_vs_direct)),
    ));
    out.push((
        "route_2hop_vs_relay",
        format!("{:.3}", middle(two_vs_relay)),
    ));
    out.push(("route_dmsg_2hop_gbps", format!("{:.2}", middle(dmsg_two))));
    let open_ms = route_open_ms(sizes.opens).await;
    out.push(("route_open_ms_p50", format!("{open_ms:.2}")));
    let kpps = intermediary_kpps(sizes.small_writes).await;
    out.push(("intermediary_kpps", format!("{kpps:.0}")));
    out
}

/// A route group over `hops` stcp transports (1: A → B; 2: A → B → C), Gbit/s one way.
async fn route_gbps(hops: usize, total: usize) -> f64 {
    let net = common::nodes(hops + 1).await;
    let mut links = Vec::new();
    for i in 0..hops {
        links.push(common::link(&net[i], &net[i + 1]).await);
    }
    let path: Vec<&common::Node> = net.iter().collect();
    let (dialed, accepted) =
        common::route_group(&path, &links, common::port(1), common::port(80)).await;
    let rate = transfer(dialed, accepted, total).await;
    for node in &net {
        node.visor.shutdown().await;
    }
    rate
}

/// A → B → C over dmsg transports through one relay, Gbit/s one way.
async fn route_dmsg_2hop_gbps(total: usize) -> f64 {
    let relay = common::Relay::start().await;
    let net = common::nodes_on(3, &relay).await;
    let ab = common::link_dmsg(&net[0], &net[1]).await;
    let bc = common::link_dmsg(&net[1], &net[2]).await;
    let path: Vec<&common::Node> = net.iter().collect();
    let (dialed, accepted) =
        common::route_group(&path, &[ab, bc], common::port(1), common::port(80)).await;
    let rate = transfer(dialed, accepted, total).await;
    for node in &net {
        node.visor.shutdown().await;
    }
    relay.stop().await;
    rate
}

/// The median time of `count` route-group handshakes over two stcp hops, ms.
async fn route_open_ms(count: usize) -> f64 {
    let net = common::nodes(3).await;
    let ab = common::link(&net[0], &net[1]).await;
    let bc = common::link(&net[1], &net[2]).await;
    let path: Vec<&common::Node> = net.iter().collect();
    let mut listener = net[2].visor.listen(common::port(80)).unwrap();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let src = common::port(1000 + u16::try_from(i).unwrap());
        let route = common::install_route(&path, &[ab, bc], src, common::port(80));
        let started = Instant::now();
        let (dialed, accepted) = tokio::join!(
            net[0].visor.dial(route.forward, route.consume),
            listener.accept()
        );
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        drop((dialed.unwrap(), accepted.unwrap()));
    }
    for node in &net {
        node.visor.shutdown().await;
    }
    middle(samples)
}

/// Packets per second (thousands) the intermediary of A → B → C forwards, with 1 KiB
/// writes (one record each) one way.
async fn intermediary_kpps(writes: usize) -> f64 {
    let net = common::nodes(3).await;
    let ab = common::link(&net[0], &net[1]).await;
    let bc = common::link(&net[1], &net[2]).await;
    let path: Vec<&common::Node> = net.iter().collect();
    let (mut dialed, mut accepted) =
        common::route_group(&path, &[ab, bc], common::port(1), common::port(80)).await;
    let received_before = net[1].visor.transport(&bc).unwrap().stats().bytes_sent;
    let started = Instant::now();
    let send = tokio::spawn(async move {
        let block = [0x5au8; 1024];
        for _ in 0..writes {
            dialed.write_all(&block).await.unwrap();
        }
        dialed.shutdown().await.unwrap();
        dialed
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < writes * 1024 {
        let n = accepted.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got += n;
    }
    let elapsed = started.elapsed();
    drop(send.await.unwrap());
    let forwarded = net[1].visor.transport(&bc).unwrap().stats().bytes_sent - received_before;
    eprintln!(
        "intermediary: {writes} packets of 1 KiB in {:.2} s ({:.2} Gbit/s forwarded)",
        elapsed.as_secs_f64(),
        gbps(usize::try_from(forwarded).unwrap(), elapsed)
    );
    for node in &net {
        node.visor.shutdown().await;
    }
    writes as f64 / elapsed.as_secs_f64() / 1e3
}
