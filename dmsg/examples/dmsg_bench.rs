//! dmsg benchmarks: `cargo run --release -p dmsg --example dmsg_bench [-- --quick]`.
//!
//! Everything runs on this machine in one run, so the ratios compare like with like:
//! - relay vs direct: one stream A → server → B, against the same end-to-end encryption
//!   A → B over plain TCP, against a plain tokio TCP splice proxy;
//! - handshakes: sessions accepted per second by one server with concurrent dialers,
//!   classical vs hybrid;
//! - idle sessions: the server's RSS growth per idle session (the server runs in a child
//!   process so only its memory is measured);
//! - 1,000 concurrent streams over one session.
//!
//! The last lines are the summary, one `key=value` per line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod baselines;

use baselines::{direct_e2e_gbps, middle, relay_gbps, start_server, transfer};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig};
use dmsg::identity::{Keypair, PublicKey};
use dmsg::noise::PqSettings;
use dmsg::server::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

struct Sizes {
    transfer: usize,
    rounds: usize,
    handshake_secs: f64,
    dialers: usize,
    idle_sessions: usize,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            transfer: 256 << 20,
            rounds: 3,
            handshake_secs: 1.0,
            dialers: 32,
            idle_sessions: 1_000,
        }
    } else {
        Sizes {
            transfer: 1 << 30,
            rounds: 5,
            handshake_secs: 2.0,
            dialers: 64,
            idle_sessions: 10_000,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve-idle") {
        return serve_idle();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let sizes = sizes(quick);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = runtime.block_on(run(&sizes, only.as_deref()));
    println!();
    for (key, value) in summary {
        println!("{key}={value}");
    }
}

/// Runs every section, or only `only` (`throughput`, `handshakes`, `idle`, `streams`).
async fn run(sizes: &Sizes, only: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    out.push(("quick", u8::from(sizes.transfer < 1 << 30).to_string()));
    let wanted = |section: &str| only.is_none_or(|o| o == section);

    if wanted("throughput") {
        // The three paths alternate within each round, and the ratio is taken per round, so
        // drift on a shared machine hits both sides of the ratio alike.
        let (mut relays, mut directs, mut splices, mut ratios) = (vec![], vec![], vec![], vec![]);
        for _ in 0..sizes.rounds {
            let relay = relay_gbps(sizes.transfer).await;
            let direct = direct_e2e_gbps(sizes.transfer).await;
            relays.push(relay);
            directs.push(direct);
            ratios.push(relay / direct);
            splices.push(plain_splice_gbps(sizes.transfer).await);
        }
        let (relay, direct, splice, ratio) = (
            middle(relays),
            middle(directs),
            middle(splices),
            middle(ratios),
        );
        eprintln!(
            "throughput: relay {relay:.2} Gbit/s, direct e2e {direct:.2}, plain splice {splice:.2}"
        );
        out.push(("relay_gbps", format!("{relay:.2}")));
        out.push(("direct_e2e_gbps", format!("{direct:.2}")));
        out.push(("plain_splice_gbps", format!("{splice:.2}")));
        out.push(("relay_vs_direct_ratio", format!("{ratio:.3}")));
    }
    if wanted("handshakes") {
        let classical = handshake_rate(false, sizes).await;
        let hybrid = handshake_rate(true, sizes).await;
        eprintln!("handshakes: classical {classical:.0}/s, hybrid {hybrid:.0}/s");
        out.push(("hs_classical_per_s", format!("{classical:.0}")));
        out.push(("hs_hybrid_per_s", format!("{hybrid:.0}")));
        out.push(("hybrid_cost_ratio", format!("{:.3}", classical / hybrid)));
    }
    if wanted("idle") {
        let (kib, sessions) = idle_session_kib(sizes.idle_sessions).await;
        eprintln!("idle sessions: {kib:.2} KiB each at {sessions}");
        out.push(("idle_sessions", sessions.to_string()));
        out.push(("idle_session_kib", format!("{kib:.2}")));
    }
    if wanted("streams") {
        let ok = thousand_streams().await;
        out.push(("streams_1000_ok", u8::from(ok).to_string()));
    }
    out
}

/// Per-source limits out of the way: every dialer of a bench comes from 127.0.0.1, and
/// what is measured is the server's own capacity.
fn one_source_is_everyone() -> dmsg::admission::SourceLimits {
    dmsg::admission::SourceLimits {
        accept_rate: 1e9,
        accept_burst: u32::MAX,
        max_handshakes: usize::MAX,
    }
}

/// A plain tokio TCP splice proxy, no encryption.
async fn plain_splice_gbps(total: usize) -> f64 {
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let splice = tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await.unwrap();
        let mut outbound = TcpStream::connect(sink_addr).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    let (client, accepted) = tokio::join!(TcpStream::connect(proxy_addr), sink.accept());
    let rate = transfer(client.unwrap(), accepted.unwrap().0, total).await;
    splice.abort();
    rate
}

/// Sessions accepted per second by one server while `dialers` tasks connect and hang up.
async fn handshake_rate(hybrid: bool, sizes: &Sizes) -> f64 {
    let pq = || PqSettings {
        enabled: hybrid,
        ..PqSettings::default()
    };
    let (server, addr, task) = start_server(ServerConfig {
        pq: pq(),
        per_source: one_source_is_everyone(),
        ..ServerConfig::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut dialers = tokio::task::JoinSet::new();
    for _ in 0..sizes.dialers {
        let stop = stop.clone();
        let pk = server.public_key();
        let config = ClientConfig {
            pq: pq(),
            ..ClientConfig::default()
        };
        dialers.spawn(async move {
            let client = Client::new(Keypair::generate(), config);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(session) = client.connect(pk, addr).await {
                    session.close(dmsg::wire::Code::Normal, "bench");
                    session.closed().await;
                }
            }
            client.close().await;
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // warm up
    let before = server.stats().sessions_total;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(sizes.handshake_secs)).await;
    let accepted = server.stats().sessions_total - before;
    let rate = accepted as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while dialers.join_next().await.is_some() {}
    let stats = server.stats();
    let mode_count = if hybrid {
        stats.handshakes.hybrid
    } else {
        stats.handshakes.classical
    };
    assert!(mode_count > 0, "handshakes ran in the expected mode");
    server.shutdown().await;
    task.await.unwrap().unwrap();
    rate
}

/// Child process: a relay server that prints its address and key, then runs until stdin closes.
fn serve_idle() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (server, addr, _task) = start_server(ServerConfig {
            max_sessions: 100_000,
            per_source: one_source_is_everyone(),
            ..ServerConfig::default()
        })
        .await;
        println!("{addr} {}", server.public_key());
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut line = String::new();
        while stdin.read_line(&mut line).await.unwrap_or(0) > 0 {
            line.clear();
        }
        server.shutdown().await;
    });
}

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's RSS growth per idle session at `count` sessions.
async fn idle_session_kib(count: usize) -> (f64, usize) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("--serve-idle")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let mut parts = line.split_whitespace();
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let pk: PublicKey = parts.next().unwrap().parse().unwrap();

    // Warm the server up with a few sessions so one-time allocations are not counted.
    let mut clients = Vec::with_capacity(count + 50);
    for _ in 0..50 {
        let client = Client::new(Keypair::generate(), ClientConfig::default());
        client.connect(pk, addr).await.unwrap();
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut connecting = tokio::task::JoinSet::new();
    let mut made = 0;
    while made < count {
        while connecting.len() < 64 && made < count {
            made += 1;
            connecting.spawn(async move {
                let client = Client::new(Keypair::generate(), ClientConfig::default());
                for _ in 0..5 {
                    if client.connect(pk, addr).await.is_ok() {
                        return client;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("could not open an idle session");
            });
        }
        if let Some(client) = connecting.join_next().await {
            clients.push(client.unwrap());
        }
    }
    while let Some(client) = connecting.join_next().await {
        clients.push(client.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // settle: handshake buffers released
    let after = rss_kib(pid);
    let per_session = (after - before) / count as f64;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    for client in clients {
        client.close().await;
    }
    (per_session, count)
}

/// 1,000 concurrent streams over one session, each echoing 64 KiB.
async fn thousand_streams() -> bool {
    let (server, addr, task) = start_server(ServerConfig::default()).await;
    let alice = Client::new(Keypair::generate(), ClientConfig::default());
    // All 1,000 arrive at once: the listener's backlog must hold them.
    let bob = Client::new(
        Keypair::generate(),
        ClientConfig {
            accept_backlog: 1000,
            ..ClientConfig::default()
        },
    );
    let session = alice.connect(server.public_key(), addr).await.unwrap();
    bob.connect(server.public_key(), addr).await.unwrap();
    let mut listener = bob.listen(Port::new(7).unwrap()).unwrap();
    let echo = tokio::spawn(async move {
        let mut echoes = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let mut stream = listener.accept().await.unwrap();
            echoes.spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await.unwrap();
                stream.write_all(&data).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
        while let Some(done) = echoes.join_next().await {
            done.unwrap();
        }
    });
    let dst = DmsgAddr::new(bob.public_key(), Port::new(7).unwrap());
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let alice = alice.clone();
        let session = session.clone();
        streams.spawn(async move {
            let mut stream = alice.dial_via(&session, dst).await.unwrap();
            let payload = vec![(i % 251) as u8; 64 * 1024];
            stream.write_all(&payload).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            back == payload
        });
    }
    let mut ok = 0;
    while let Some(result) = streams.join_next().await {
        ok += usize::from(result.unwrap_or(false));
    }
    echo.await.unwrap();
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
    eprintln!("1000 streams: {ok} completed");
    ok == 1000
}
