//! The read cache of the Redis store: entries kept in this process and made coherent by Redis
//! itself (server-assisted client-side caching, [`super::tracking`]).
//!
//! The logic here has no IO and takes `now` from its caller; the tracking connection feeds it
//! three inputs — keys invalidated, the tracking state, heartbeats confirmed — and the store's
//! reads ask it three questions:
//!
//! - [`EntryCache::fresh`]: a copy that may be served as the store's answer. Only while the
//!   tracking connection is up, only if it was filled under that same connection (its
//!   *generation*), only while its TTL lasts, and only while the newest confirmed heartbeat
//!   was sent at most [`CacheConfig::staleness_bound`] ago: Redis sends invalidations and the
//!   heartbeat's reply on one connection, in order, so every write Redis applied before that
//!   heartbeat was sent has already been taken out of the cache (see [`super::tracking`]),
//!   and no copy is older than the bound.
//! - [`EntryCache::ticket`] before a read of Redis and [`EntryCache::fill`] after it: the copy
//!   goes in only if nothing invalidated its shard, and the tracking generation did not change,
//!   in between (a read that raced a write is never cached).
//! - [`EntryCache::last_known`]: any copy whose TTL has not run out, whatever its generation,
//!   for when Redis cannot be read at all (the caller marks the answer stale).
//!
//! When the tracking connection is lost, every copy becomes stale at once (kept only for
//! [`EntryCache::last_known`]); when a new one is up, the cache is flushed, since whatever
//! changed in between was never announced.
//!
//! Memory is bounded by [`CacheConfig::max_bytes`] (encoded entry bytes plus a fixed overhead
//! per copy), split evenly over the shards; a full shard evicts by second chance (CLOCK).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use prost::Message;
use skywire_proto::skywire::discovery::v1 as pb;
use tokio::time::Instant;

/// Shards of the cache (keys are public keys, so evenly spread): a fill that raced an
/// invalidation of another key in its shard is dropped, so more shards waste fewer fills.
const SHARDS: usize = 64;
/// Why the whole cache was flushed (`discovery_cache_flushes_total{reason}`).
const FLUSH_REASONS: [&str; 3] = ["tracking_restarted", "redis_answered", "redis_flushed"];
/// Bytes counted per copy besides twice its encoded entry (its strings and vectors on the
/// heap, with allocation headers and capacity slack): the map slot at a low load factor and
/// two clock slots.
const OVERHEAD_BYTES: usize = 2 * std::mem::size_of::<(KeyBytes, Cached)>() + 2 * 32;

pub use super::KeyBytes;

/// How the cache is sized and how stale a copy may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most bytes the copies may take (0: no cache; every read goes to Redis).
    pub max_bytes: usize,
    /// Longest time a copy is served after a write to it that this replica has not yet heard
    /// of (a lost or slow invalidation connection): copies are served only while a heartbeat
    /// sent at most this long ago has been answered.
    pub staleness_bound: Duration,
    /// How often the invalidation connection sends its heartbeat.
    pub heartbeat_every: Duration,
}

impl Default for CacheConfig {
    /// 64 MiB, copies at most 80 ms behind Redis, a heartbeat every 20 ms.
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            staleness_bound: Duration::from_millis(80),
            heartbeat_every: Duration::from_millis(20),
        }
    }
}

impl CacheConfig {
    /// The same, with no cache at all.
    pub fn disabled() -> Self {
        Self {
            max_bytes: 0,
            ..Self::default()
        }
    }

    /// Whether copies are kept at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

/// A copy of one entry.
struct Cached {
    entry: pb::Entry,
    /// Bytes counted against the budget.
    size: usize,
    /// When Redis drops the entry (its TTL).
    expires: Instant,
    /// When it was read from Redis.
    fetched: Instant,
    /// The tracking generation it was filled under.
    generation: u64,
    /// Used since the clock hand last passed (second chance).
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    copies: HashMap<KeyBytes, Cached>,
    /// Keys in fill order, for the clock hand; may hold keys already gone (skipped).
    clock: VecDeque<KeyBytes>,
    bytes: usize,
    /// Invalidations applied to this shard, for tickets.
    invalidations: u64,
}

impl Shard {
    /// Drops `key`'s copy, keeping the gauges true.
    fn remove(&mut self, key: &KeyBytes, metrics: &CacheMetrics) -> bool {
        match self.copies.remove(key) {
            Some(copy) => {
                self.bytes -= copy.size;
                metrics.forget(copy.size);
                true
            }
            None => false,
        }
    }

    /// Evicts until `size` more bytes fit in `budget`.
    fn make_room(&mut self, size: usize, budget: usize, metrics: &CacheMetrics) {
        while self.bytes + size > budget {
            let Some(key) = self.clock.pop_front() else {
                break;
            };
            match self.copies.get_mut(&key) {
                Some(copy) if copy.referenced => {
                    copy.referenced = false;
                    self.clock.push_back(key);
                }
                Some(_) => {
                    self.remove(&key, metrics);
                    metrics.evictions.inc();
                }
                None => {}
            }
        }
    }

    /// Drops clock slots of keys no longer cached once they outnumber the copies.
    fn compact_clock(&mut self) {
        if self.clock.len() > 2 * self.copies.len() + 16 {
            let copies = &self.copies;
            self.clock.retain(|key| copies.contains_key(key));
        }
    }

    /// Drops every copy; returns how many there were.
    fn clear(&mut self, metrics: &CacheMetrics) -> usize {
        let dropped = self.copies.len();
        metrics
            .entries
            .sub(i64::try_from(self.copies.len()).unwrap_or(i64::MAX));
        metrics
            .bytes
            .sub(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        self.copies.clear();
        self.clock.clear();
        self.bytes = 0;
        self.invalidations += 1;
        dropped
    }
}

/// Proof that a read of Redis started while the cache could take its answer.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    shard: usize,
    invalidations: u64,
    generation: u64,
}

/// A copy served while Redis could not be read.
#[derive(Clone, Debug)]
pub struct StaleCopy {
    /// The entry as last read.
    pub entry: pb::Entry,
    /// How long ago it was read from Redis.
    pub age: Duration,
}

/// The cache's counters, registered on the process's `/metrics`.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    invalidations: IntCounter,
    evictions: IntCounter,
    flushes: IntCounterVec,
    stale_reads: IntCounter,
    tracking_starts: IntCounter,
    entries: IntGauge,
    bytes: IntGauge,
    max_bytes: IntGauge,
    tracking_up: IntGauge,
}

impl CacheMetrics {
    fn new(max_bytes: usize) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let metrics = Self {
            hits: counter(
                "discovery_cache_hits_total",
                "GetEntry reads answered from the Redis read cache",
            )?,
            misses: counter(
                "discovery_cache_misses_total",
                "GetEntry reads that went to Redis (no fresh copy)",
            )?,
            invalidations: counter(
                "discovery_cache_invalidations_total",
                "Keys invalidated by Redis (a write through any replica) or by this replica's writes",
            )?,
            evictions: counter(
                "discovery_cache_evictions_total",
                "Copies evicted to stay within the cache's size bound",
            )?,
            flushes: IntCounterVec::new(
                Opts::new(
                    "discovery_cache_flushes_total",
                    "Flushes of a cache holding copies, by reason (tracking_restarted, redis_answered, redis_flushed)",
                ),
                &["reason"],
            )?,
            stale_reads: counter(
                "discovery_cache_stale_reads_total",
                "GetEntry reads answered from a stale copy because Redis could not be read",
            )?,
            tracking_starts: counter(
                "discovery_cache_tracking_starts_total",
                "Invalidation connections set up (the first, and one after each loss)",
            )?,
            entries: gauge("discovery_cache_entries", "Copies in the Redis read cache")?,
            bytes: gauge(
                "discovery_cache_bytes",
                "Bytes the copies take (encoded entries plus a fixed overhead each)",
            )?,
            max_bytes: gauge(
                "discovery_cache_max_bytes",
                "The bound on discovery_cache_bytes (--redis-cache-mib)",
            )?,
            tracking_up: gauge(
                "discovery_cache_tracking_up",
                "1 while the invalidation connection to Redis is up (copies may be served fresh)",
            )?,
        };
        metrics
            .max_bytes
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        // Every reason's series exists from the start, at 0.
        for reason in FLUSH_REASONS {
            metrics.flushes.with_label_values(&[reason]);
        }
        Ok(metrics)
    }

    /// Every metric, to register.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.hits.clone()),
            Box::new(self.misses.clone()),
            Box::new(self.invalidations.clone()),
            Box::new(self.evictions.clone()),
            Box::new(self.flushes.clone()),
            Box::new(self.stale_reads.clone()),
            Box::new(self.tracking_starts.clone()),
            Box::new(self.entries.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.max_bytes.clone()),
            Box::new(self.tracking_up.clone()),
        ]
    }

    fn keep(&self, size: usize) {
        self.entries.inc();
        self.bytes.add(i64::try_from(size).unwrap_or(i64::MAX));
    }

    fn forget(&self, size: usize) {
        self.entries.dec();
        self.bytes.sub(i64::try_from(size).unwrap_or(i64::MAX));
    }
}

/// Entries read from Redis, kept coherent by Redis's invalidations. A handle: the store and
/// its tracking connection share one.
pub struct EntryCache {
    config: CacheConfig,
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    /// Bumped when the tracking connection is lost and when a new one is up.
    generation: AtomicU64,
    tracking: AtomicBool,
    /// Set when the tracking connection is lost with copies in the cache; cleared by a flush.
    holds_stale: AtomicBool,
    /// When the newest answered heartbeat was sent, in µs since `epoch`.
    confirmed_at: AtomicU64,
    epoch: Instant,
    metrics: CacheMetrics,
}

impl EntryCache {
    /// An empty cache; copies are served only once [`EntryCache::tracking_started`] is called.
    pub fn new(config: CacheConfig, now: Instant) -> Result<Self, prometheus::Error> {
        Ok(Self {
            config,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: config.max_bytes / SHARDS,
            generation: AtomicU64::new(0),
            tracking: AtomicBool::new(false),
            holds_stale: AtomicBool::new(false),
            confirmed_at: AtomicU64::new(0),
            epoch: now,
            metrics: CacheMetrics::new(config.max_bytes)?,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Its counters, to register.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    fn shard_of(key: &KeyBytes) -> usize {
        // Keys are public keys: their bytes are already uniform.
        usize::from(key[0]) % SHARDS
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A poisoned shard is still consistent: every update completes before it unlocks.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether copies filled under the current generation may be served as fresh `now`.
    fn serving(&self, now: Instant) -> bool {
        self.tracking.load(Ordering::Acquire)
            && self
                .micros(now)
                .saturating_sub(self.confirmed_at.load(Ordering::Acquire))
                <= u64::try_from(self.config.staleness_bound.as_micros()).unwrap_or(u64::MAX)
    }

    /// A copy of `key`'s entry that may be served as fresh, counted as a hit or a miss.
    pub fn fresh(&self, key: &KeyBytes, now: Instant) -> Option<pb::Entry> {
        let found = self.serving(now).then(|| {
            let generation = self.generation.load(Ordering::Acquire);
            let mut shard = self.shard(Self::shard_of(key));
            let copy = shard.copies.get_mut(key)?;
            if copy.generation != generation || copy.expires <= now {
                return None;
            }
            copy.referenced = true;
            Some(copy.entry.clone())
        });
        match found.flatten() {
            Some(entry) => {
                self.metrics.hits.inc();
                Some(entry)
            }
            None => {
                self.metrics.misses.inc();
                None
            }
        }
    }

    /// Taken before reading `key` from Redis; `None` while the answer could not be cached
    /// (no tracking connection, or no cache).
    pub fn ticket(&self, key: &KeyBytes) -> Option<Ticket> {
        if !self.config.enabled() || !self.tracking.load(Ordering::Acquire) {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let index = Self::shard_of(key);
        let invalidations = self.shard(index).invalidations;
        Some(Ticket {
            shard: index,
            invalidations,
            generation,
        })
    }

    /// Keeps `entry`, read from Redis with `ticket` taken before the read, which was sent at
    /// `read_at` and found `ttl` left (so the copy expires no later than the entry), unless
    /// anything invalidated its shard or the tracking connection changed since the ticket.
    pub fn fill(
        &self,
        ticket: Ticket,
        key: &KeyBytes,
        entry: &pb::Entry,
        ttl: Duration,
        read_at: Instant,
    ) {
        let size = 2 * entry.encoded_len() + OVERHEAD_BYTES;
        if size > self.shard_budget || ttl.is_zero() {
            return;
        }
        let mut shard = self.shard(ticket.shard);
        if shard.invalidations != ticket.invalidations
            || self.generation.load(Ordering::Acquire) != ticket.generation
            || !self.tracking.load(Ordering::Acquire)
        {
            return;
        }
        shard.remove(key, &self.metrics);
        shard.make_room(size, self.shard_budget, &self.metrics);
        shard.copies.insert(
            *key,
            Cached {
                entry: entry.clone(),
                size,
                expires: read_at + ttl,
                fetched: read_at,
                generation: ticket.generation,
                referenced: false,
            },
        );
        shard.clock.push_back(*key);
        shard.bytes += size;
        self.metrics.keep(size);
        shard.compact_clock();
    }

    /// Any copy of `key` whose TTL has not run out, however old, counted as a stale read: for
    /// when Redis cannot be read.
    pub fn last_known(&self, key: &KeyBytes, now: Instant) -> Option<StaleCopy> {
        let mut shard = self.shard(Self::shard_of(key));
        let copy = shard.copies.get(key)?;
        if copy.expires <= now {
            shard.remove(key, &self.metrics);
            return None;
        }
        let stale = StaleCopy {
            entry: copy.entry.clone(),
            age: now.saturating_duration_since(copy.fetched),
        };
        drop(shard);
        self.metrics.stale_reads.inc();
        Some(stale)
    }

    /// Redis says `key` changed (or this replica wrote it): its copy goes, and a read of its
    /// shard in flight will not be cached.
    pub fn invalidate(&self, key: &KeyBytes) {
        let mut shard = self.shard(Self::shard_of(key));
        shard.invalidations += 1;
        shard.remove(key, &self.metrics);
        drop(shard);
        self.metrics.invalidations.inc();
    }

    /// Every copy goes (Redis flushed its data, or a key it named could not be read).
    pub fn invalidate_all(&self) {
        self.flush("redis_flushed");
    }

    /// The tracking connection is gone: no copy is served fresh any more (they stay, for
    /// [`EntryCache::last_known`]), and no read in flight is cached.
    pub fn tracking_lost(&self) {
        self.tracking.store(false, Ordering::Release);
        self.holds_stale.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.tracking_up.set(0);
    }

    /// Whether the tracking connection is up.
    pub fn tracking_up(&self) -> bool {
        self.tracking.load(Ordering::Acquire)
    }

    /// Redis answered a command: if the tracking connection is down, the copies it left are
    /// flushed, since a fresh read is possible now (stale copies are only for when none is).
    pub fn redis_answered(&self) {
        if !self.tracking.load(Ordering::Acquire) && self.holds_stale.swap(false, Ordering::AcqRel)
        {
            self.flush("redis_answered");
        }
    }

    /// A new tracking connection is up (its heartbeat answered at `confirmed`): what changed
    /// while there was none was never announced, so the cache starts empty.
    pub fn tracking_started(&self, confirmed: Instant) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.tracking_starts.inc();
        self.flush("tracking_restarted");
        self.confirmed_at
            .store(self.micros(confirmed), Ordering::Release);
        self.tracking.store(true, Ordering::Release);
        self.metrics.tracking_up.set(1);
    }

    /// A heartbeat sent at `sent` was answered: every invalidation Redis sent before it has
    /// been applied.
    pub fn confirmed(&self, sent: Instant) {
        self.confirmed_at
            .fetch_max(self.micros(sent), Ordering::AcqRel);
    }

    /// Drops every copy; counted under `reason` when there was any.
    fn flush(&self, reason: &str) {
        self.holds_stale.store(false, Ordering::Release);
        let dropped: usize = (0..SHARDS)
            .map(|index| self.shard(index).clear(&self.metrics))
            .sum();
        if dropped > 0 {
            self.metrics.flushes.with_label_values(&[reason]).inc();
        }
    }

    /// Copies held now (walks every shard).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).copies.len()).sum()
    }

    /// Whether no copy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held now (walks every shard).
    pub fn bytes(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn entry(sequence: u64) -> pb::Entry {
        pb::Entry {
            sequence,
            version: "v".repeat(40),
            ..pb::Entry::default()
        }
    }

    fn key(n: u8) -> KeyBytes {
        let mut key = [0u8; 32];
        key[0] = n;
        key[31] = n.wrapping_mul(7);
        key
    }

    /// A cache with tracking up at `now`.
    fn tracked(now: Instant) -> EntryCache {
        let cache = EntryCache::new(CacheConfig::default(), now).unwrap();
        cache.tracking_started(now);
        cache
    }

    fn filled(cache: &EntryCache, k: &KeyBytes, sequence: u64, now: Instant) {
        let ticket = cache.ticket(k).expect("tracking is up");
        cache.fill(ticket, k, &entry(sequence), TTL, now);
    }

    /// Copies are served only while a heartbeat sent within the staleness bound is confirmed.
    #[test]
    fn copies_are_fresh_only_within_the_staleness_bound_of_a_confirmed_heartbeat() {
        let start = Instant::now();
        let cache = EntryCache::new(CacheConfig::default(), start).unwrap();
        assert!(
            cache.ticket(&key(1)).is_none(),
            "no tracking yet: nothing is cached"
        );
        cache.tracking_started(start);
        filled(&cache, &key(1), 1, start);
        assert_eq!(cache.fresh(&key(1), start).unwrap().sequence, 1);
        let bound = cache.config().staleness_bound;
        assert!(cache.fresh(&key(1), start + bound).is_some());
        let late = start + bound + Duration::from_millis(1);
        assert!(
            cache.fresh(&key(1), late).is_none(),
            "no heartbeat confirmed since"
        );
        cache.confirmed(start + Duration::from_millis(20));
        assert!(
            cache.fresh(&key(1), late).is_some(),
            "a newer heartbeat came back"
        );
        assert_eq!(cache.metrics.hits.get(), 3);
        assert_eq!(cache.metrics.misses.get(), 1);
    }

    /// A read that raced an invalidation is not cached; one that did not is.
    #[test]
    fn a_fill_after_an_invalidation_of_its_shard_is_dropped() {
        let now = Instant::now();
        let cache = tracked(now);
        let ticket = cache.ticket(&key(2)).unwrap();
        cache.invalidate(&key(2));
        cache.fill(ticket, &key(2), &entry(1), TTL, now);
        assert!(
            cache.fresh(&key(2), now).is_none(),
            "the answer may predate the write"
        );
        filled(&cache, &key(2), 2, now);
        assert_eq!(cache.fresh(&key(2), now).unwrap().sequence, 2);
        cache.invalidate(&key(2));
        assert!(cache.fresh(&key(2), now).is_none());
        assert_eq!(cache.metrics.entries.get(), 0);
        assert_eq!(cache.metrics.bytes.get(), 0);
    }

    /// Tracking lost: nothing fresh, copies kept for `last_known` until their TTL; a read of
    /// Redis that worked, or a new tracking connection, flushes them.
    #[test]
    fn a_lost_tracking_connection_leaves_only_stale_copies_until_redis_answers() {
        let now = Instant::now();
        let cache = tracked(now);
        filled(&cache, &key(3), 1, now);
        let ticket = cache.ticket(&key(4)).unwrap();
        cache.tracking_lost();
        cache.fill(ticket, &key(4), &entry(1), TTL, now);
        assert!(
            cache.fresh(&key(4), now).is_none(),
            "read in flight when tracking was lost"
        );
        assert!(cache.fresh(&key(3), now).is_none());
        assert!(cache.ticket(&key(3)).is_none());
        let later = now + Duration::from_secs(10);
        let stale = cache.last_known(&key(3), later).unwrap();
        assert_eq!(stale.entry.sequence, 1);
        assert_eq!(stale.age, Duration::from_secs(10));
        assert!(
            cache.last_known(&key(3), now + TTL).is_none(),
            "its TTL ran out"
        );
        filled_before_loss_then_answered(&cache, now);
    }

    fn filled_before_loss_then_answered(cache: &EntryCache, now: Instant) {
        cache.tracking_started(now);
        filled(cache, &key(5), 1, now);
        cache.tracking_lost();
        assert!(cache.last_known(&key(5), now).is_some());
        cache.redis_answered();
        assert!(
            cache.last_known(&key(5), now).is_none(),
            "Redis answers: no stale copy"
        );
        cache.tracking_started(now);
        filled(cache, &key(5), 2, now);
        cache.tracking_lost();
        cache.tracking_started(now);
        assert!(cache.is_empty(), "a new tracking connection starts empty");
        assert_eq!(cache.metrics.entries.get(), 0);
    }

    /// A copy is never served past the TTL Redis gave it.
    #[test]
    fn a_copy_expires_with_its_redis_ttl() {
        let now = Instant::now();
        let cache = tracked(now);
        let ticket = cache.ticket(&key(6)).unwrap();
        cache.fill(ticket, &key(6), &entry(1), Duration::from_millis(30), now);
        cache.confirmed(now + Duration::from_millis(40));
        assert!(
            cache
                .fresh(&key(6), now + Duration::from_millis(29))
                .is_some()
        );
        assert!(
            cache
                .fresh(&key(6), now + Duration::from_millis(30))
                .is_none()
        );
    }

    /// The byte bound holds, and a copy read since the clock hand passed gets a second chance.
    #[test]
    fn the_byte_bound_holds_and_recently_read_copies_survive_eviction() {
        let now = Instant::now();
        // Room for five copies a shard.
        let copy_size = 2 * entry(1).encoded_len() + OVERHEAD_BYTES;
        let config = CacheConfig {
            max_bytes: SHARDS * 5 * copy_size,
            ..CacheConfig::default()
        };
        let cache = EntryCache::new(config, now).unwrap();
        cache.tracking_started(now);
        // Every key in shard 0.
        let in_shard = |n: u8| {
            let mut k = key(0);
            k[1] = n;
            k
        };
        filled(&cache, &in_shard(0), 1, now);
        for n in 1..50 {
            assert!(
                cache.fresh(&in_shard(0), now).is_some(),
                "kept while read ({n})"
            );
            filled(&cache, &in_shard(n), 1, now);
            assert!(cache.bytes() <= 5 * copy_size, "{}", cache.bytes());
        }
        assert_eq!(cache.len(), 5);
        assert!(cache.metrics.evictions.get() >= 40);
        assert_eq!(
            cache.metrics.bytes.get(),
            i64::try_from(cache.bytes()).unwrap()
        );
        let disabled = EntryCache::new(CacheConfig::disabled(), now).unwrap();
        disabled.tracking_started(now);
        assert!(disabled.ticket(&key(1)).is_none());
    }

    /// Redis flushed its data: every copy goes, and reads in flight are not cached.
    #[test]
    fn a_flush_of_redis_empties_the_cache() {
        let now = Instant::now();
        let cache = tracked(now);
        for n in 0..10 {
            filled(&cache, &key(n), 1, now);
        }
        let ticket = cache.ticket(&key(20)).unwrap();
        cache.invalidate_all();
        cache.fill(ticket, &key(20), &entry(1), TTL, now);
        assert!(cache.is_empty());
        assert_eq!(cache.metrics.entries.get(), 0);
    }
}
