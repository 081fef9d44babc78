//! Which new connections a server spends handshake work on (PROTOCOL.md §10). First the
//! limits of the connection's **source** — an accept token bucket and a cap on handshakes in
//! progress, per IPv4 address or IPv6 /64 — then the server-wide ones (a token bucket, a cap
//! on handshakes). So one source, be it an attacker holding thousands of idle connections or
//! a runaway client, spends its own share and never anyone else's: a refused source costs an
//! `accept` and a map lookup, and takes no server-wide token.
//!
//! Plain data with `now` passed in; the table sits behind one mutex that is never held across
//! an await.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What one source may do before its connections are refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceLimits {
    /// Sustained accepts per second from one source.
    pub accept_rate: f64,
    /// Accepts one source may make in a burst.
    pub accept_burst: u32,
    /// Handshakes one source may have in progress at once.
    pub max_handshakes: usize,
}

impl Default for SourceLimits {
    /// 100 accepts/s with bursts of 500, and 64 handshakes at once, per source: an office of
    /// a few hundred clients behind one NAT reconnecting together gets in at once (a
    /// handshake takes milliseconds), while one source can hold at most 64 of the server's
    /// 512 handshake slots.
    fn default() -> Self {
        Self {
            accept_rate: 100.0,
            accept_burst: 500,
            max_handshakes: 64,
        }
    }
}

/// Where a connection comes from, for its limits: an IPv4 address, or the /64 of an IPv6
/// address (what one host or site is given). Connections with no address (in-memory
/// transports) share one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
    /// No address.
    Unknown,
}

impl Source {
    /// The source of a connection from `addr`.
    pub fn of(addr: Option<SocketAddr>) -> Self {
        match addr.map(|a| a.ip()) {
            Some(IpAddr::V4(v4)) => Self::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(prefix)
                }
            },
            None => Self::Unknown,
        }
    }
}

/// A token bucket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second up to `burst`.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            rate: rate.max(0.001),
            burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True if the bucket has refilled completely by `now` (nothing would be lost by
    /// forgetting it).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Sources tracked at most (about 4 MiB). Idle sources are forgotten to make room; if none
/// is idle, a new source is refused as rate-limited until one is.
const MAX_SOURCES: usize = 65_536;
/// How often a full table may be swept for idle sources (a sweep visits every source).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a source's connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceRefusal {
    /// Over the source's accept rate (or the table is full of busy sources).
    RateLimited,
    /// The source has its maximum of handshakes in progress.
    Busy,
}

struct SourceState {
    bucket: TokenBucket,
    handshakes: usize,
}

#[derive(Default)]
struct Table {
    sources: HashMap<Source, SourceState>,
    last_sweep: Option<Instant>,
}

/// The per-source limits of one server.
pub(crate) struct SourceTable {
    limits: SourceLimits,
    table: Mutex<Table>,
}

impl SourceTable {
    /// An empty table applying `limits`.
    pub(crate) fn new(limits: SourceLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::default(),
        })
    }

    /// Admits one connection from `source` at `now`: a permit holding one of its handshake
    /// slots until dropped, or why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: Source,
        now: Instant,
    ) -> Result<SourcePermit, SourceRefusal> {
        let mut table = crate::sync::lock(&self.table);
        if !table.sources.contains_key(&source) && table.sources.len() >= MAX_SOURCES {
            table.sweep(now);
            if table.sources.len() >= MAX_SOURCES {
                return Err(SourceRefusal::RateLimited);
            }
        }
        let limits = self.limits;
        let state = table.sources.entry(source).or_insert_with(|| SourceState {
            bucket: TokenBucket::new(limits.accept_rate, limits.accept_burst, now),
            handshakes: 0,
        });
        if !state.bucket.try_take(now) {
            return Err(SourceRefusal::RateLimited);
        }
        if state.handshakes >= limits.max_handshakes {
            return Err(SourceRefusal::Busy);
        }
        state.handshakes += 1;
        Ok(SourcePermit {
            table: self.clone(),
            source,
        })
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        crate::sync::lock(&self.table).sources.len()
    }
}

impl Table {
    /// Forgets idle sources (no handshake in progress, bucket full), at most every
    /// [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.sources
            .retain(|_, state| state.handshakes > 0 || !state.bucket.is_full(now));
    }
}

/// One handshake slot of a source, released when dropped.
pub(crate) struct SourcePermit {
    table: Arc<SourceTable>,
    source: Source,
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut table = crate::sync::lock(&self.table.table);
        if let Some(state) = table.sources.get_mut(&self.source) {
            state.handshakes = state.handshakes.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> Source {
        Source::V4([127, 0, 0, last])
    }

    /// One source's burst, then its rate; another source is untouched by it.
    #[test]
    fn each_source_has_its_own_accept_bucket() {
        let table = SourceTable::new(SourceLimits {
            accept_rate: 10.0,
            accept_burst: 5,
            max_handshakes: 100,
        });
        let now = Instant::now();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(table.admit(source(2), now).unwrap());
        }
        assert_eq!(
            table.admit(source(2), now).err(),
            Some(SourceRefusal::RateLimited)
        );
        assert!(table.admit(source(1), now).is_ok(), "another source");
        let later = now + Duration::from_millis(100);
        assert!(
            table.admit(source(2), later).is_ok(),
            "one token per 100 ms"
        );
        assert!(table.admit(source(2), later).is_err());
    }

    /// A source holds at most `max_handshakes` slots; a dropped permit frees one.
    #[test]
    fn a_source_holds_at_most_its_handshake_slots() {
        let table = SourceTable::new(SourceLimits {
            accept_rate: 1e9,
            accept_burst: 1_000_000,
            max_handshakes: 3,
        });
        let now = Instant::now();
        let mut held: Vec<_> = (0..3)
            .map(|_| table.admit(source(2), now).unwrap())
            .collect();
        assert_eq!(table.admit(source(2), now).err(), Some(SourceRefusal::Busy));
        assert!(table.admit(source(1), now).is_ok());
        held.pop();
        assert!(table.admit(source(2), now).is_ok());
    }

    /// Idle sources are forgotten when the table is full; busy ones are kept.
    #[test]
    fn the_table_is_bounded_and_forgets_idle_sources_first() {
        let table = SourceTable::new(SourceLimits::default());
        let now = Instant::now();
        let busy = table.admit(Source::V6([9; 8]), now).unwrap();
        for i in 0..MAX_SOURCES - 1 {
            let n = u32::try_from(i).unwrap().to_be_bytes();
            drop(table.admit(Source::V4(n), now).unwrap());
        }
        assert_eq!(table.tracked(), MAX_SOURCES);
        // Full, nothing idle yet (buckets not refilled): a new source is refused.
        assert_eq!(
            table.admit(Source::Unknown, now).err(),
            Some(SourceRefusal::RateLimited)
        );
        // Two seconds on every bucket is full again: the idle ones go, the busy one stays.
        let later = now + Duration::from_secs(3);
        assert!(table.admit(Source::Unknown, later).is_ok());
        assert_eq!(table.tracked(), 2);
        drop(busy);
    }

    #[test]
    fn ipv6_sources_are_their_64_bit_prefix_and_mapped_ipv4_is_ipv4() {
        let a: SocketAddr = "[2001:db8:1:2::1]:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:ffff::9]:6".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:5".parse().unwrap();
        assert_eq!(Source::of(Some(a)), Source::of(Some(b)));
        assert_ne!(Source::of(Some(a)), Source::of(Some(c)));
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:1".parse().unwrap();
        assert_eq!(Source::of(Some(mapped)), source(2));
        assert_eq!(Source::of(None), Source::Unknown);
    }
}
