//! The Redis read cache on real `redis-server`s and real gRPC clients: coherence across two
//! replicas (1,000 trials each, with and without the invalidation connection), and a 30 s
//! Redis outage under a read load.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Discovery, Redis, redis_store};
use discovery_svc::service::{STALE_METADATA, Ttls};
use discovery_svc::store::tracking::CONNECTION_NAME;
use dmsg::entry::{Entry, ServerPart, pk_to_proto};
use dmsg::identity::{Keypair, PublicKey};
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

/// A write must be seen by every replica within this.
const COHERENCE_BOUND: Duration = Duration::from_millis(100);

type Raw = DiscoveryClient<Channel>;

async fn put(client: &mut Raw, owner: &Keypair, sequence: u64) -> Result<(), tonic::Status> {
    client
        .put_entry(pb::PutEntryRequest {
            entry: Some(
                Entry::client(owner.public(), sequence, vec![])
                    .signed(owner)
                    .to_proto(),
            ),
        })
        .await
        .map(|_| ())
}

/// What a `GetEntry` answered: the sequence and whether it was marked stale.
async fn get(client: &mut Raw, pk: &PublicKey) -> Result<(u64, bool), tonic::Status> {
    let response = client
        .get_entry(pb::GetEntryRequest {
            pk: pk_to_proto(pk),
        })
        .await?;
    let stale = response
        .metadata()
        .get(STALE_METADATA)
        .is_some_and(|value| value == "true");
    Ok((response.into_inner().sequence, stale))
}

/// Kills every invalidation connection (both replicas'); returns how many.
async fn kill_invalidation_connections(
    redis: &mut bb8_redis::redis::aio::MultiplexedConnection,
) -> usize {
    let list: String = bb8_redis::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter(|line| line.contains(&format!(" name={CONNECTION_NAME} ")))
        .filter_map(|line| {
            line.strip_prefix("id=")?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect();
    for id in &ids {
        let _: i64 = bb8_redis::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(redis)
            .await
            .unwrap();
    }
    ids.len()
}

/// 1,000 puts through replica 1, each read back through replica 2 (which held the previous
/// version in its cache): the slowest is reported and within the bound; with `kill`, both
/// replicas' invalidation connections are killed before each put.
async fn coherence_trials(kill: bool) {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let one = Discovery::start(redis_store(&redis, "coherent:")).await;
    let two = Discovery::start(redis_store(&redis, "coherent:")).await;
    let (mut writer, mut reader) = (one.raw().await, two.raw().await);
    let mut admin = bb8_redis::redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let owner = Keypair::generate();
    put(&mut writer, &owner, 1).await.unwrap();
    let (mut slowest, mut killed, mut total) = (Duration::ZERO, 0, Duration::ZERO);
    let mut starts = 1.0;
    for sequence in 2..=1001 {
        // Replica 2's invalidation connection is up — a new one after each kill ...
        let started = Instant::now();
        while two.metric("discovery_cache_tracking_starts_total").await < starts
            || two.metric("discovery_cache_tracking_up").await < 1.0
        {
            assert!(started.elapsed() < Duration::from_secs(5), "no tracking");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ... and it holds the current version (a fill, then a hit).
        let hits = two.metric("discovery_cache_hits_total").await;
        for _ in 0..2 {
            assert_eq!(
                get(&mut reader, &owner.public()).await.unwrap().0,
                sequence - 1
            );
        }
        assert!(
            two.metric("discovery_cache_hits_total").await > hits,
            "trial {sequence}: replica 2 did not serve the old version from its cache"
        );
        if kill {
            killed += kill_invalidation_connections(&mut admin).await;
            starts += 1.0;
        }
        put(&mut writer, &owner, sequence).await.unwrap();
        let stored = Instant::now();
        loop {
            // Timed from when the read was sent: how long its answer travels back is not
            // staleness.
            let asked = stored.elapsed();
            let (seen, stale) = get(&mut reader, &owner.public()).await.unwrap();
            assert!(!stale, "Redis is up: nothing is stale");
            if seen == sequence {
                break;
            }
            assert_eq!(seen, sequence - 1);
            assert!(
                asked < COHERENCE_BOUND,
                "trial {sequence}: replica 2 still returns {seen} when asked {asked:?} after"
            );
        }
        let delay = stored.elapsed();
        total += delay;
        slowest = slowest.max(delay);
        // Once seen, never older again.
        for _ in 0..3 {
            assert_eq!(get(&mut reader, &owner.public()).await.unwrap().0, sequence);
        }
    }
    let families = testkit::metrics::families(&testkit::metrics::scrape(two.admin).await);
    for (family, kind) in [
        ("discovery_cache_hits_total", "counter"),
        ("discovery_cache_misses_total", "counter"),
        ("discovery_cache_invalidations_total", "counter"),
        ("discovery_cache_flushes_total", "counter"),
        ("discovery_cache_stale_reads_total", "counter"),
        ("discovery_cache_tracking_starts_total", "counter"),
        ("discovery_cache_entries", "gauge"),
        ("discovery_cache_bytes", "gauge"),
        ("discovery_cache_max_bytes", "gauge"),
        ("discovery_cache_tracking_up", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert!(
        two.metric("discovery_cache_bytes").await <= two.metric("discovery_cache_max_bytes").await
    );
    let hits = two.metric("discovery_cache_hits_total").await;
    let restarts = two.metric("discovery_cache_tracking_starts_total").await;
    eprintln!(
        "coherence (invalidation connection killed each trial: {kill}): 1000 trials, max \
         {slowest:?}, mean {:?}; replica 2: {hits} cache hits, {restarts} tracking (re)starts, \
         {killed} connections killed",
        total / 1000
    );
    assert!(slowest < COHERENCE_BOUND, "{slowest:?}");
    assert!(
        hits >= 1000.0,
        "the reads before each put were cache hits: {hits}"
    );
    if kill {
        assert!(
            killed >= 1000,
            "each trial killed both replicas' connections: {killed}"
        );
        assert!(
            restarts >= 1000.0,
            "replica 2 reconnected after each: {restarts}"
        );
    }
    one.stop().await;
    two.stop().await;
}

/// A put through one replica is read through the other within 100 ms, 1,000 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_one_replica_is_read_through_the_other_within_100_ms() {
    coherence_trials(false).await;
}

/// The same with the invalidation connections killed before every put: the replica never
/// returns the older entry for longer than the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_invalidation_connection_killed_a_replica_returns_nothing_older_than_the_bound() {
    coherence_trials(true).await;
}

/// How the outage's read load went.
#[derive(Default)]
struct Tally {
    current: AtomicU64,
    stale: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
}

/// Redis stopped for 30 s under a read load: GetEntry for cached keys keeps answering (marked
/// stale), never past an entry's TTL; PutEntry fails UNAVAILABLE within 1 s; after Redis is
/// back, a key changed meanwhile reads as the new entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_30_s_leaves_reads_up_from_the_cache_and_writes_failing_fast() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let port = redis.port;
    let ttls = Ttls {
        server: Duration::from_secs(10),
        client: Duration::from_secs(3600),
    };
    let one = Discovery::start_with(redis_store(&redis, "outage:"), vec![], ttls).await;
    let two = Discovery::start_with(redis_store(&redis, "outage:"), vec![], ttls).await;
    let (mut raw, mut other) = (one.raw().await, two.raw().await);
    let owners: Vec<Keypair> = (0..8).map(|_| Keypair::generate()).collect();
    for owner in &owners {
        put(&mut raw, owner, 1).await.unwrap();
    }
    let server = Keypair::generate();
    raw.put_entry(pb::PutEntryRequest {
        entry: Some(
            Entry::server(
                server.public(),
                1,
                ServerPart {
                    address: "127.0.0.1:1".into(),
                    available_sessions: 1,
                    server_type: String::new(),
                    max_sessions: 1,
                },
            )
            .signed(&server)
            .to_proto(),
        ),
    })
    .await
    .unwrap();
    let server_stored = Instant::now();
    let never_read = Keypair::generate();
    put(&mut raw, &never_read, 1).await.unwrap();
    // Every key but `never_read` is read once: replica 1 holds them.
    let started = Instant::now();
    while one.metric("discovery_cache_entries").await < 9.0 {
        assert!(started.elapsed() < Duration::from_secs(5), "nothing cached");
        for owner in owners.iter().chain([&server]) {
            get(&mut raw, &owner.public()).await.unwrap();
        }
    }

    // The read load: 4 callers over the 8 client keys, all along.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (mut client, tally, stop) = (one.raw().await, tally.clone(), stop.clone());
        let keys: Vec<PublicKey> = owners.iter().map(Keypair::public).collect();
        load.spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                match get(&mut client, &keys[i % keys.len()]).await {
                    Ok((1, false)) => tally.current.fetch_add(1, Ordering::Relaxed),
                    Ok((1, true)) => tally.stale.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("read failed: {status:?}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tally.current.load(Ordering::Relaxed) > 0);

    redis.kill();
    let killed = Instant::now();
    let mut puts = 0;
    let mut server_seen_stale = false;
    while killed.elapsed() < Duration::from_secs(30) {
        let attempt = Instant::now();
        let status = put(&mut raw, &owners[0], 2).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            attempt.elapsed() < Duration::from_secs(1),
            "{:?}",
            attempt.elapsed()
        );
        puts += 1;
        // The server entry: stale until its 10 s TTL runs out, then unknown.
        let asked = server_stored.elapsed();
        match get(&mut raw, &server.public()).await {
            Ok((1, true)) => {
                assert!(
                    asked < ttls.server,
                    "served past its TTL (asked at {asked:?})"
                );
                server_seen_stale = true;
            }
            Ok(other) => panic!("the server entry read as {other:?} while Redis is down"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    server_stored.elapsed() >= ttls.server - Duration::from_millis(500),
                    "refused at {:?} with its TTL left",
                    server_stored.elapsed()
                );
            }
        }
        // Never read: nothing to serve. A small-order key is still refused as such.
        let status = get(&mut raw, &never_read.public()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let status = raw
            .get_entry(pb::GetEntryRequest {
                pk: hex::encode(identity),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(server_seen_stale);
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let outage_stale = tally.stale.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    eprintln!(
        "30 s outage: {} reads current, {outage_stale} stale, {failed} failed; {puts} puts refused",
        tally.current.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "every read of a cached key was answered");
    assert_eq!(tally.wrong.load(Ordering::Relaxed), 0);
    assert!(outage_stale > 1000, "{outage_stale}");
    assert!(one.metric("discovery_cache_stale_reads_total").await >= outage_stale as f64);

    // Redis is back (empty, as it keeps nothing on disk); replica 2 writes a new version of
    // key 0. Replica 1's first answer for it is that version (a stale copy is allowed only
    // within the coherence bound of the write, and marked); key 1 is gone from Redis and
    // never comes back from the cache.
    let _redis = Redis::start_on(port).await.unwrap();
    let back = Instant::now();
    loop {
        match put(&mut other, &owners[0], 2).await {
            Ok(()) => break,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "replica 2 never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = Instant::now();
    let mut stale_after_write = 0;
    let first = loop {
        match get(&mut raw, &owners[0].public()).await {
            Ok((1, true)) if stored.elapsed() < COHERENCE_BOUND => stale_after_write += 1,
            Ok(answer) => break answer,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(
            stored.elapsed() < Duration::from_secs(10),
            "replica 1 never recovered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(first, (2, false), "the changed key reads as its new entry");
    let gone = get(&mut raw, &owners[1].public()).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    eprintln!(
        "after the restart: replica 2 wrote at +{:?}, replica 1 read it at +{:?} \
         ({stale_after_write} stale answers before it)",
        stored - back,
        back.elapsed()
    );
    one.stop().await;
    two.stop().await;
}
