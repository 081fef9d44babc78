//! The client lifecycle on paused time (no socket, no sleeping): servers on the in-memory
//! network of the `Dial` / `Listen` seam, discovery as an in-memory `Discovery`, every random
//! choice seeded (`LifecycleConfig::seed`). Timings are asserted in virtual time, exactly as
//! PROTOCOL.md §15 states them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::memnet::MemoryNet;
use dmsg::addr::ServerAddr;
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::entry::{Entry, ServerPart};
use dmsg::identity::Keypair;
use dmsg::memory::MemoryDiscovery;
use dmsg::server::{Server, ServerConfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A relay server on a name of the in-memory network; restartable under the same key.
struct MemoryServer {
    keypair: Keypair,
    name: String,
    running: Option<(Server, JoinHandle<std::io::Result<()>>)>,
}

impl MemoryServer {
    fn new(name: &str) -> Self {
        Self {
            keypair: Keypair::generate(),
            name: name.to_owned(),
            running: None,
        }
    }

    fn start(&mut self, net: &MemoryNet) {
        let listener = net.listen(&self.name);
        let server = Server::new(self.keypair.clone(), ServerConfig::default());
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        self.running = Some((server, serve));
    }

    async fn stop(&mut self) {
        if let Some((server, serve)) = self.running.take() {
            server.shutdown().await;
            serve.await.unwrap().unwrap();
        }
    }

    fn seed(&self) -> ServerAddr {
        ServerAddr {
            pk: self.keypair.public(),
            address: self.name.clone(),
            pq: false,
        }
    }
}

/// Counts dials per name, passing them on to the network.
#[derive(Clone, Default)]
struct CountingNet {
    net: MemoryNet,
    dials: Arc<AtomicUsize>,
}

impl dmsg::net::Dial for CountingNet {
    fn dial<'a>(&'a self, address: &'a str) -> dmsg::net::DialFuture<'a> {
        self.dials.fetch_add(1, Ordering::Relaxed);
        self.net.dial(address)
    }
}

fn config(dialer: dmsg::net::Dialer, lifecycle: LifecycleConfig) -> ClientConfig {
    ClientConfig {
        dialer,
        lifecycle: LifecycleConfig {
            include_default_seeds: false,
            seed: Some(11),
            ..lifecycle
        },
        ..ClientConfig::default()
    }
}

/// Polls `condition` every 10 ms of virtual time; returns how long it took.
async fn virtual_wait(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() <= limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// A server entry stating `sessions` of `max` in use.
fn server_entry(server: &MemoryServer, sessions: i64, max: i64, sequence: u64) -> Entry {
    Entry::server(
        server.keypair.public(),
        sequence,
        ServerPart {
            address: server.name.clone(),
            available_sessions: max - sessions,
            server_type: "test".into(),
            max_sessions: max,
        },
    )
    .signed(&server.keypair)
}

/// §15.1: the first session comes within the start jitter; when every server is down the
/// keepers back off (a few dials in 100 s, not a loop cycling through fresh keepers); when
/// a server is back the client is on it within the 60 s backoff ceiling.
#[tokio::test(start_paused = true)]
async fn servers_down_for_100_s_cost_a_few_dials_and_the_client_returns_within_the_cap() {
    let net = CountingNet::default();
    let mut servers: Vec<MemoryServer> = (0..3)
        .map(|n| MemoryServer::new(&format!("s{n}")))
        .collect();
    for server in &mut servers {
        server.start(&net.net);
    }
    let client = Client::new(
        Keypair::generate(),
        config(
            dmsg::net::Dialer::new(net.clone()),
            LifecycleConfig {
                seeds: servers.iter().map(MemoryServer::seed).collect(),
                ..LifecycleConfig::default()
            },
        ),
    );
    let first = virtual_wait("the first session", Duration::from_secs(2), || {
        !client.sessions().is_empty()
    })
    .await;
    assert!(
        first <= Duration::from_millis(1010),
        "start jitter ≤ 1 s: {first:?}"
    );

    for server in &mut servers {
        server.stop().await;
    }
    let before = net.dials.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(100)).await;
    let dials = net.dials.load(Ordering::Relaxed) - before;
    assert!(
        (3..=40).contains(&dials),
        "dials while every server was down for 100 s: {dials}"
    );

    servers[1].start(&net.net);
    let back = virtual_wait(
        "back on the restarted server",
        Duration::from_secs(61),
        || {
            client
                .sessions()
                .iter()
                .any(|s| s.remote() == servers[1].keypair.public() && !s.is_closed())
        },
    )
    .await;
    println!("{dials} dials in 100 s down; back {back:?} after the restart");
    client.close().await;
    servers[1].stop().await;
}

/// §15.2: the entry is published as soon as the first session is up (no debounce before the
/// first publish), and back within `entry_check` (5 s) of discovery losing it.
#[tokio::test(start_paused = true)]
async fn the_entry_is_published_at_once_and_back_within_5_s_of_a_wipe() {
    let net = MemoryNet::default();
    let mut server = MemoryServer::new("s0");
    server.start(&net);
    let discovery = Arc::new(MemoryDiscovery::default());
    let client = Client::new(
        Keypair::generate(),
        config(
            net.dialer(),
            LifecycleConfig {
                seeds: vec![server.seed()],
                discovery: DiscoveryTarget::Custom(discovery.clone()),
                ..LifecycleConfig::default()
            },
        ),
    );
    let pk = client.public_key();
    virtual_wait("a session", Duration::from_secs(2), || {
        !client.sessions().is_empty()
    })
    .await;
    let published = virtual_wait("the entry", Duration::from_millis(100), || {
        discovery.get(&pk).is_some()
    })
    .await;
    let entry = discovery.get(&pk).unwrap();
    assert_eq!(
        entry.client.unwrap().delegated_servers,
        vec![server.keypair.public()]
    );
    println!("published {published:?} after the session came up");

    discovery.wipe();
    let back = virtual_wait(
        "the entry after a wipe",
        Duration::from_millis(5100),
        || discovery.get(&pk).is_some(),
    )
    .await;
    println!("back {back:?} after the wipe");
    let puts = discovery.puts();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        discovery.puts(),
        puts,
        "nothing changed: no publish in the next minute (refresh is 5 minutes)"
    );
    client.close().await;
    assert!(discovery.get(&pk).is_none(), "close deletes the entry");
    server.stop().await;
}

/// §15.1 balance: a client on a server holding 40 of the fleet's 40 sessions (the other
/// empty) moves — the new session first, then the old one released — and a client on an
/// even fleet stays.
#[tokio::test(start_paused = true)]
async fn a_client_moves_off_an_overloaded_server_and_stays_on_an_even_fleet() {
    let net = MemoryNet::default();
    let mut busy = MemoryServer::new("busy");
    let mut idle = MemoryServer::new("idle");
    busy.start(&net);
    idle.start(&net);
    let discovery = Arc::new(MemoryDiscovery::default());
    discovery.set(server_entry(&busy, 40, 100, 1));
    discovery.set(server_entry(&idle, 0, 100, 1));
    let client = Client::new(
        Keypair::generate(),
        config(
            net.dialer(),
            LifecycleConfig {
                seeds: vec![busy.seed()],
                prefer_seeds: true,
                discovery: DiscoveryTarget::Custom(discovery.clone()),
                rebalance_every: Duration::from_secs(4),
                ..LifecycleConfig::default()
            },
        ),
    );
    let on = |server: &MemoryServer| {
        let sessions = client.sessions();
        sessions.len() == 1 && sessions[0].remote() == server.keypair.public()
    };
    virtual_wait("homed on the busy server", Duration::from_secs(2), || {
        on(&busy)
    })
    .await;
    // excess 20 of 40: each check (every 2–6 s) moves with probability 1/2.
    let moved = virtual_wait("moved to the idle server", Duration::from_secs(60), || {
        on(&idle)
    })
    .await;
    println!("moved {moved:?} after homing");

    discovery.set(server_entry(&busy, 20, 100, 2));
    discovery.set(server_entry(&idle, 21, 100, 2));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(on(&idle), "an even fleet does not move");
    client.close().await;
    busy.stop().await;
    idle.stop().await;
}

/// §15.1 with `min_sessions` = 0 (a dmsg-only server's transit client): every listed server
/// is kept; a server that registers later is picked up at the next 30 s recheck, however
/// often the keepers' states change in between; one that restarts is redialed by its keeper.
#[tokio::test(start_paused = true)]
async fn every_listed_server_is_kept_and_a_late_one_joins_at_the_recheck() {
    let net = MemoryNet::default();
    let mut first = MemoryServer::new("first");
    let mut late = MemoryServer::new("late");
    first.start(&net);
    late.start(&net);
    let discovery = Arc::new(MemoryDiscovery::default());
    discovery.set(server_entry(&first, 0, 100, 1));
    let client = Client::new(
        Keypair::generate(),
        config(
            net.dialer(),
            LifecycleConfig {
                min_sessions: 0,
                publish_entry: false,
                discovery: DiscoveryTarget::Custom(discovery.clone()),
                ..LifecycleConfig::default()
            },
        ),
    );
    let has = |server: &MemoryServer| {
        client
            .sessions()
            .iter()
            .any(|s| s.remote() == server.keypair.public() && !s.is_closed())
    };
    virtual_wait(
        "a session to the first server",
        Duration::from_secs(2),
        || has(&first),
    )
    .await;
    discovery.set(server_entry(&late, 0, 100, 1));
    // The first server restarts meanwhile: its keeper's state changes must not postpone
    // the recheck.
    first.stop().await;
    first.start(&net);
    let joined = virtual_wait("the late server", Duration::from_secs(31), || has(&late)).await;
    virtual_wait("the first server again", Duration::from_secs(5), || {
        has(&first)
    })
    .await;
    println!("the late server joined {joined:?} after it registered");
    client.close().await;
    first.stop().await;
    late.stop().await;
}
