//! dmsg-discovery benchmarks: `cargo run --release -p discovery-svc --example discovery_bench`.
//!
//! Starts its own `redis-server` on a free port. Everything runs on this machine in one
//! process with a 2-thread runtime (the gRPC client competes for the same cores):
//! - `get_mem_rps` vs `noop_rps`: GetEntry on the memory store against a no-op handler (it
//!   returns at once) on the same kind of endpoint (`service::GrpcEndpoint`: server stack,
//!   health, reflection, drain), 64 calls in flight over 4 HTTP/2 connections;
//!   `get_mem_vs_noop` the median of the per-round ratios;
//! - `get_redis_rps`: the same against the Redis store through its read cache (one key, read
//!   over and over: every read after the first is a hit), `get_redis_uncached_rps` with the
//!   cache off; `get_redis_vs_mem` and `get_redis_uncached_vs_mem` the medians of the
//!   per-round ratios to the memory store (rounds of no-op, memory, cached and uncached Redis
//!   alternate: 9 rounds of 2.5 s, or 3 of 1.5 s with `--quick`);
//! - `put_redis_rps`, `put_redis_uncached_rps`: PutEntry (pre-signed) with the cache on (each
//!   write also sends an invalidation to the replica's tracking connection) and off, and the
//!   median of their ratios `put_cached_vs_uncached`;
//! - `get_redis_p99_ms`: GetEntry latency on Redis (cached) with one call in flight, the
//!   median of three windows' 99th percentiles.
//!
//! The last lines are the summary, one `key=value` per line.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use discovery_svc::run::{Config, Listeners, StoreConfig, run};
use discovery_svc::store::cache::CacheConfig;
use dmsg::entry::{Entry, pk_to_proto};
use dmsg::identity::Keypair;
use middleware::ServerStackConfig;
use observability::HealthStates;
use service::GrpcEndpoint;
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient;
use skywire_proto::skywire::testing::v1::ProbeRequest;
use skywire_proto::testing::{ProbeClient, ProbeService};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const IN_FLIGHT: usize = 64;
/// Connections the in-flight calls are spread over (like many clients).
const CONNECTIONS: usize = 4;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (seconds, rounds) = if quick { (1.5, 3) } else { (2.5, 9) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = runtime.block_on(bench(Duration::from_secs_f64(seconds), rounds));
    println!();
    for (key, value) in summary {
        println!("{key}={value}");
    }
}

async fn bench(window: Duration, rounds: usize) -> Vec<(&'static str, String)> {
    let redis = testkit::Redis::start()
        .await
        .expect("the benchmark needs redis-server (apt-get install redis-server)");
    let mut out = Vec::new();

    // No-op, memory store, Redis store with and without its read cache, in alternating
    // rounds (the machine is shared: ratios of the same round, then their median).
    let noop_stop = CancellationToken::new();
    let noop_addr = start_noop(&noop_stop).await;
    let mem = start_discovery(StoreConfig::Memory).await;
    let mem_owner = seed(&mem.1).await;
    let on_redis = start_discovery(StoreConfig::redis(redis.url(), "bench:")).await;
    let redis_owner = seed(&on_redis.1).await;
    let uncached = start_discovery(StoreConfig::Redis {
        url: redis.url(),
        prefix: "bench:".into(),
        cache: CacheConfig::disabled(),
    })
    .await;
    let (mut noops, mut gets, mut redis_gets, mut uncached_gets) = (vec![], vec![], vec![], vec![]);
    let (mut mem_vs_noop, mut redis_vs_mem, mut uncached_vs_mem) = (vec![], vec![], vec![]);
    for round in 1..=rounds {
        let noop = rate(window, noop_call(channels(noop_addr).await)).await;
        let get = rate(window, get_call(channels(mem.1).await, mem_owner.clone())).await;
        let get_redis = rate(
            window,
            get_call(channels(on_redis.1).await, redis_owner.clone()),
        )
        .await;
        let get_uncached = rate(
            window,
            get_call(channels(uncached.1).await, redis_owner.clone()),
        )
        .await;
        eprintln!(
            "round {round}: no-op {noop:.0}/s, memory {get:.0}/s, Redis cached {get_redis:.0}/s, \
             uncached {get_uncached:.0}/s"
        );
        noops.push(noop);
        gets.push(get);
        redis_gets.push(get_redis);
        uncached_gets.push(get_uncached);
        mem_vs_noop.push(get / noop);
        redis_vs_mem.push(get_redis / get);
        uncached_vs_mem.push(get_uncached / get);
    }
    let (noop, get_mem) = (middle(noops), middle(gets));
    let (get_redis, get_uncached) = (middle(redis_gets), middle(uncached_gets));
    out.push(("noop_rps", format!("{noop:.0}")));
    out.push(("get_mem_rps", format!("{get_mem:.0}")));
    out.push(("get_mem_vs_noop", format!("{:.3}", middle(mem_vs_noop))));
    out.push(("get_redis_vs_mem", format!("{:.3}", middle(redis_vs_mem))));
    out.push((
        "get_redis_uncached_vs_mem",
        format!("{:.3}", middle(uncached_vs_mem)),
    ));

    // PutEntry with and without the cache (its invalidation connection gets a push per
    // write), alternating.
    let (mut puts, mut uncached_puts, mut put_ratios) = (vec![], vec![], vec![]);
    for _ in 0..2 {
        let put = put_rate(window, channels(on_redis.1).await).await;
        let put_uncached = put_rate(window, channels(uncached.1).await).await;
        puts.push(put);
        uncached_puts.push(put_uncached);
        put_ratios.push(put / put_uncached);
    }
    // The machine is shared: the median of three windows' p99.
    let mut p99s = Vec::new();
    for _ in 0..3 {
        p99s.push(latency_p99(window, channel(on_redis.1).await, redis_owner.clone()).await);
    }
    let p99 = middle(p99s);
    out.push(("get_redis_rps", format!("{get_redis:.0}")));
    out.push(("get_redis_uncached_rps", format!("{get_uncached:.0}")));
    out.push(("put_redis_rps", format!("{:.0}", middle(puts))));
    out.push((
        "put_redis_uncached_rps",
        format!("{:.0}", middle(uncached_puts)),
    ));
    out.push((
        "put_cached_vs_uncached",
        format!("{:.3}", middle(put_ratios)),
    ));
    out.push(("get_redis_p99_ms", format!("{p99:.3}")));
    mem.0.cancel();
    on_redis.0.cancel();
    uncached.0.cancel();
    noop_stop.cancel();
    out
}

fn middle(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

async fn start_discovery(store: StoreConfig) -> (CancellationToken, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let config = Config {
        keypair: Keypair::generate(),
        store,
        servers: vec![],
        ttls: Default::default(),
        connector: Default::default(),
        pq: Default::default(),
        server_stack: ServerStackConfig::default(),
        grace: std::time::Duration::from_secs(2),
    };
    tokio::spawn(run(config, Listeners::grpc(listener), stop.clone()));
    (stop, addr)
}

/// A no-op handler (the probe's unary call) on the same kind of endpoint as discovery's (the
/// server stack, health, reflection, the drain wrapper), so that the ratio to it is the cost
/// of the store path alone.
async fn start_noop(stop: &CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (endpoint, health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(ProbeService::new().into_server())
        .build(&HealthStates::new(), stop)
        .unwrap();
    tokio::spawn(endpoint.serve_tcp(listener, stop.clone(), Duration::from_secs(1)));
    tokio::spawn(health);
    addr
}

/// `CONNECTIONS` channels to `addr`.
async fn channels(addr: SocketAddr) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(channel(addr).await);
    }
    out
}

async fn channel(addr: SocketAddr) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {addr}");
}

/// Stores one client entry (reachable through two servers) to read back; returns the request
/// that reads it. A client entry, as most dials look up, lives 60 min: longer than the bench.
async fn seed(addr: &SocketAddr) -> pb::GetEntryRequest {
    let owner = Keypair::generate();
    let servers = vec![Keypair::generate().public(), Keypair::generate().public()];
    let entry = Entry::client(owner.public(), 1, servers).signed(&owner);
    let mut client = DiscoveryClient::new(channel(*addr).await);
    client
        .put_entry(pb::PutEntryRequest {
            entry: Some(entry.to_proto()),
        })
        .await
        .unwrap();
    pb::GetEntryRequest {
        pk: pk_to_proto(&owner.public()),
    }
}

type Call =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Round-robin over `channels`.
fn pick(channels: Vec<Channel>) -> impl Fn() -> Channel + Send + Sync {
    let next = AtomicU64::new(0);
    move || channels[next.fetch_add(1, Ordering::Relaxed) as usize % channels.len()].clone()
}

fn noop_call(channels: Vec<Channel>) -> Call {
    let channel = pick(channels);
    Arc::new(move || {
        let mut client = ProbeClient::new(channel());
        Box::pin(async move {
            client.unary(ProbeRequest::default()).await.unwrap();
        })
    })
}

fn get_call(channels: Vec<Channel>, request: pb::GetEntryRequest) -> Call {
    let channel = pick(channels);
    Arc::new(move || {
        let mut client = DiscoveryClient::new(channel());
        let request = request.clone();
        Box::pin(async move {
            client.get_entry(request).await.unwrap();
        })
    })
}

/// Calls per second with `IN_FLIGHT` calls outstanding, over `window`.
async fn rate(window: Duration, call: Call) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (call, done, stop) = (call.clone(), done.clone(), stop.clone());
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                call().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // warm up
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let calls = done.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    calls as f64 / elapsed.as_secs_f64()
}

/// PutEntry per second on Redis: each worker owns a key and sends pre-signed updates.
async fn put_rate(window: Duration, channels: Vec<Channel>) -> f64 {
    let per_worker = 4000;
    let updates: Vec<Vec<pb::PutEntryRequest>> = (0..IN_FLIGHT)
        .map(|_| {
            let owner = Keypair::generate();
            (1..=per_worker)
                .map(|sequence| pb::PutEntryRequest {
                    entry: Some(
                        Entry::client(owner.public(), sequence, vec![])
                            .signed(&owner)
                            .to_proto(),
                    ),
                })
                .collect()
        })
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for (i, requests) in updates.into_iter().enumerate() {
        let (done, stop) = (done.clone(), stop.clone());
        let mut client = DiscoveryClient::new(channels[i % channels.len()].clone());
        workers.spawn(async move {
            for request in requests {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                client.put_entry(request).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let calls = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    calls as f64 / elapsed.as_secs_f64()
}

/// The 99th percentile of GetEntry latency with one call in flight, in milliseconds.
async fn latency_p99(window: Duration, channel: Channel, request: pb::GetEntryRequest) -> f64 {
    let mut client = DiscoveryClient::new(channel);
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < window {
        let t = Instant::now();
        client.get_entry(request.clone()).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: usize| samples[samples.len() * q / 100];
    eprintln!(
        "latency ({} calls): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        at(50),
        at(90),
        at(99),
        samples[samples.len() - 1]
    );
    at(99)
}
