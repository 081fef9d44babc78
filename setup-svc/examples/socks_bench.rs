//! skysocks benchmarks: `cargo run --release -p setup-svc --example socks_bench [-- --quick]`.
//!
//! Four visors A–B–C–D in one process (stcp transports in a line, dmsg sessions to one
//! relay), route-setup on dmsg port 36 of its own dmsg client; C runs skysocks, A runs
//! skysocks-client through it over the 2-hop route A–B–C (dialed through route-setup, as the
//! binary does), a TCP sink on loopback behind the exit.
//! - `route_2hop_gbps`: a bare route group A → C over the same two hops, one direction —
//!   the baseline, measured in the same run, in rounds alternating with
//! - `socks_mbps`: one SOCKS5 connection through the proxy to the sink, one direction
//!   (the tunnel's mux on top of the route group);
//! - `socks_vs_route`: the ratio of the medians;
//! - `socks_connects_per_s`: new SOCKS connections (greeting, CONNECT, the exit's connect,
//!   the reply) one after another over the one established tunnel;
//! - `socks_route_setup_calls`: DialRouteGroup calls route-setup saw during those
//!   connections (goal 0: a connection costs no route setup).
//!
//! The last lines are the summary, one `key=value` per line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../../visor/tests/common/mod.rs"]
mod common;
#[path = "../tests/support/line.rs"]
mod line;

use std::net::SocketAddr;
use std::time::Duration;

use line::Line;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use visor::apps::skysocks::Skysocks;
use visor::apps::skysocks_client::{ClientConfig, SkysocksClient};
use visor::route_dial::RouteOptions;

const MIB: usize = 1024 * 1024;

struct Sizes {
    rounds: usize,
    mib: usize,
    connects: usize,
}

fn main() {
    bench::main(
        Sizes {
            rounds: 3,
            mib: 32,
            connects: 300,
        },
        Sizes {
            rounds: 5,
            mib: 128,
            connects: 2_000,
        },
        |sizes| async move { run(&sizes).await },
    );
}

/// A TCP sink: reads to EOF, answers the byte count (u64), closes.
async fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = tcp.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    addr
}

/// Greets the proxy and CONNECTs to `target`; the connection, once the reply is 0.
async fn socks_connect(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let SocketAddr::V4(v4) = target else {
        unreachable!()
    };
    let mut message = vec![5, 1, 0, 5, 1, 0, 1];
    message.extend_from_slice(&v4.ip().octets());
    message.extend_from_slice(&v4.port().to_be_bytes());
    tcp.write_all(&message).await.unwrap();
    let mut answer = [0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..2], &[5, 0], "greeting");
    assert_eq!(answer[3], 0, "the exit's reply");
    tcp
}

/// Writes `total` bytes to `writer`, half-closes; the seconds it took for `done` to resolve.
async fn timed_send<W, F>(mut writer: W, total: usize, done: F) -> f64
where
    W: tokio::io::AsyncWrite + Unpin,
    F: Future<Output = u64>,
{
    let chunk = vec![0x5au8; 256 * 1024];
    let started = Instant::now();
    let send = async {
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            writer.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
        writer.shutdown().await.unwrap();
    };
    let (_, received) = tokio::join!(send, done);
    assert_eq!(received, total as u64);
    started.elapsed().as_secs_f64()
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// DialRouteGroup calls route-setup has counted in this process.
fn setups() -> f64 {
    observability::metrics::process_registry()
        .gather()
        .iter()
        .filter(|family| family.name() == "route_setup_setups_total")
        .flat_map(|family| {
            family
                .get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
        })
        .sum()
}

async fn run(sizes: &Sizes) -> Vec<(&'static str, String)> {
    let line = Line::start(true).await;
    let net = &line.net;
    let (core, served) = line.serve_route_setup();
    let (a, c) = (&net[0].visor, &net[2].visor);
    let exit = Skysocks::start(c).unwrap();
    let socks_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = socks_listener.local_addr().unwrap();
    let client = SkysocksClient::start(a, ClientConfig::new(c.public_key()), socks_listener);
    let target = sink().await;
    // The tunnel is up once one connection goes through.
    let first = socks_connect(proxy, target).await;
    drop(first);

    // The baseline: a bare route group A → C, a listener at C counting what arrives.
    let mut bare = c.listen(common::port(90)).unwrap();
    let total = sizes.mib * MIB;
    let (mut route, mut socks) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        let (dialed, accepted) = tokio::join!(
            a.dial_route(c.public_key(), common::port(90), RouteOptions::default()),
            bare.accept()
        );
        let (dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
        let received = async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                match accepted.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n as u64,
                }
            }
        };
        let seconds = timed_send(dialed, total, received).await;
        route.push(total as f64 * 8.0 / seconds / 1e9);

        let tcp = socks_connect(proxy, target).await;
        let (mut read, write) = tcp.into_split();
        let counted = async move {
            let mut count = [0u8; 8];
            read.read_exact(&mut count).await.unwrap();
            u64::from_be_bytes(count)
        };
        let seconds = timed_send(write, total, counted).await;
        socks.push(total as f64 * 8.0 / seconds / 1e6);
    }
    let route_gbps = median(&mut route);
    let socks_mbps = median(&mut socks);
    eprintln!("route {route_gbps:.2} Gbit/s, socks {socks_mbps:.0} Mbit/s");

    let before = setups();
    // The counter is live: the tunnel and every baseline route group were set up through it.
    assert!(
        before >= (sizes.rounds + 1) as f64,
        "route-setup counted {before} setups"
    );
    let started = Instant::now();
    for _ in 0..sizes.connects {
        let mut tcp = socks_connect(proxy, target).await;
        tcp.shutdown().await.unwrap();
        let mut count = [0u8; 8];
        tcp.read_exact(&mut count).await.unwrap();
    }
    let per_s = sizes.connects as f64 / started.elapsed().as_secs_f64();
    let calls = setups() - before;
    eprintln!("{per_s:.0} SOCKS connections/s, {calls} route setups meanwhile");

    client.shutdown().await;
    exit.shutdown().await;
    served.abort();
    core.drain().await;
    drop(bare);
    tokio::time::sleep(Duration::from_millis(100)).await;
    line.stop().await;
    vec![
        ("route_2hop_gbps", format!("{route_gbps:.3}")),
        ("socks_mbps", format!("{socks_mbps:.0}")),
        (
            "socks_vs_route",
            format!("{:.3}", socks_mbps / (route_gbps * 1e3)),
        ),
        ("socks_connects_per_s", format!("{per_s:.0}")),
        ("socks_route_setup_calls", format!("{calls:.0}")),
    ]
}
