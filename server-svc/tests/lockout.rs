//! A relay that idle connections cannot lock (issue 12, finding 9; PROTOCOL.md §10). The
//! security review held 520 idle TCP connections to a relay, re-opening each as it timed
//! out, and kept `dmsg-cli` out for 15 s: all 512 handshake slots were theirs. Here an
//! attacker on 127.0.0.2 holds 2,000 and re-opens each as it is closed, for 20 s, against
//! the real `dmsg-server` binary; a client on 127.0.0.1 opening a fresh session every 500 ms
//! gets every one within 1 s, because the attacker only ever spends its own source's share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Scratch, ServerProcess};
use dmsg::client::{Client, ClientConfig};
use dmsg::identity::Keypair;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Idle connections the attacker keeps open.
const ATTACKER_CONNECTIONS: usize = 2_000;
/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(20);

/// The kernel's `TcpExt: ListenOverflows` (connections dropped because a listen queue was
/// full), for the whole machine.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The attacker: `ATTACKER_CONNECTIONS` tasks, each connecting from 127.0.0.2, sending
/// nothing, and re-connecting as soon as the relay closes it, until `stop`. Runs on a
/// runtime of its own (one thread), as another process would. Returns the connections it
/// opened.
fn attack(relay: SocketAddr, stop: CancellationToken) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let opened = Arc::new(AtomicU64::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..ATTACKER_CONNECTIONS {
                let (stop, opened) = (stop.clone(), opened.clone());
                tasks.spawn(async move {
                    while !stop.is_cancelled() {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
                        let Ok(mut tcp) = socket.connect(relay).await else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        let mut buf = [0u8; 16];
                        loop {
                            tokio::select! {
                                () = stop.cancelled() => return,
                                read = tcp.read(&mut buf) => match read {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                },
                            }
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            opened.load(Ordering::Relaxed)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_never_lock_out_another() {
    let scratch = Scratch::new("lockout");
    let relay = ServerProcess::start(&scratch, "relay", &[]);
    relay.wait_accepting().await;
    let overflows_before = listen_overflows();

    let stop = CancellationToken::new();
    let attacker = attack(relay.relay, stop.clone());
    // Let the attacker's first wave land before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut slowest = Duration::ZERO;
    let mut sessions = 0;
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < ATTACK {
        ticks.tick().await;
        let client = Client::new(Keypair::generate(), ClientConfig::default());
        let opened = tokio::time::Instant::now();
        let session = tokio::time::timeout(
            Duration::from_secs(1),
            client.connect(relay.pk, relay.relay),
        )
        .await;
        let took = opened.elapsed();
        assert!(
            matches!(session, Ok(Ok(_))),
            "session {sessions} during the attack: {session:?} after {took:?}"
        );
        slowest = slowest.max(took);
        sessions += 1;
        client.close().await;
    }
    stop.cancel();
    let attacker_connections = tokio::task::spawn_blocking(move || attacker.join().unwrap())
        .await
        .unwrap();

    let stats = relay.stats().await;
    let rejected = |reason: &str| stats.rejects.get(reason).copied().unwrap_or(0);
    let overflows = match (overflows_before, listen_overflows()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    println!("sessions={sessions}");
    println!("slowest_session_ms={}", slowest.as_millis());
    println!("attacker_connections={attacker_connections}");
    println!("source_busy={}", rejected("source_busy"));
    println!("source_rate_limited={}", rejected("source_rate_limited"));
    println!("handshake_timeout={}", rejected("handshake_timeout"));
    println!("listen_overflows={overflows:?}");
    assert!(sessions >= 38, "{sessions} sessions in 20 s");
    assert!(
        attacker_connections >= ATTACKER_CONNECTIONS as u64,
        "the attacker opened {attacker_connections}"
    );
    // The attack's refusals are counted under the source's reasons; the server-wide limits,
    // which would have refused everyone, were never reached.
    assert!(
        rejected("source_busy") + rejected("source_rate_limited") > 0,
        "{:?}",
        stats.rejects
    );
    assert_eq!(rejected("handshake_busy"), 0, "{:?}", stats.rejects);
    assert_eq!(rejected("rate_limited"), 0, "{:?}", stats.rejects);
    // The kernel's listen queue never overflowed (a machine-wide counter: a little slack for
    // whatever else runs here).
    if let Some(overflows) = overflows {
        assert!(overflows < 50, "ListenOverflows grew by {overflows}");
    }
}
