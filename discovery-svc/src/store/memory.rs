//! The in-memory store: one process, no dependencies (the default).
//!
//! Expiry is lazy — an expired entry is never returned and is dropped when touched — plus a
//! sweep of the whole map at most every 30 s on writes, so memory stays bounded by the live
//! entries and tombstones. Clients are kept in key order, so page tokens are stable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dmsg::entry::{Entry, Rejected, TransportEntry};
use dmsg::identity::PublicKey;
use tokio::time::Instant;

use skywire_proto::skywire::discovery::v1 as pb;

use super::{ClientPage, Deleted, EntryCounts, KeyBytes, Store, StoreError, Written};

/// How often a write may trigger a full sweep of expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Live<T> {
    value: T,
    expires: Instant,
}

/// What a delete leaves behind: the deleted entry's (sequence, timestamp).
type EntryTombstone = (u64, i64);

#[derive(Default)]
struct State {
    entries: BTreeMap<PublicKey, Live<Stored>>,
    entry_tombstones: HashMap<PublicKey, Live<EntryTombstone>>,
    transports: HashMap<[u8; 16], Live<TransportEntry>>,
    /// The later of a deregistered transport's registration and deregistration timestamps.
    transport_tombstones: HashMap<[u8; 16], Live<i64>>,
    edges: HashMap<PublicKey, HashSet<[u8; 16]>>,
    last_sweep: Option<Instant>,
}

/// The value in `map` under `key` unless it expired (an expired one is dropped).
fn live<'a, K: std::hash::Hash + Eq, T>(
    map: &'a mut HashMap<K, Live<T>>,
    key: &K,
    now: Instant,
) -> Option<&'a T> {
    if map.get(key).is_some_and(|l| l.expires <= now) {
        map.remove(key);
    }
    map.get(key).map(|l| &l.value)
}

/// An entry and its protobuf form, made once when it is written (reads, which dominate,
/// only clone it).
struct Stored {
    entry: Entry,
    proto: pb::Entry,
}

impl State {
    fn live_stored(&mut self, pk: &KeyBytes, now: Instant) -> Option<&Stored> {
        if self.entries.get(pk).is_some_and(|l| l.expires <= now) {
            self.entries.remove(pk);
        }
        self.entries.get(pk).map(|l| &l.value)
    }

    fn live_entry(&mut self, pk: &KeyBytes, now: Instant) -> Option<&Entry> {
        self.live_stored(pk, now).map(|stored| &stored.entry)
    }

    /// The (sequence, timestamp) a new entry of `pk` must beat: the live entry's, or the
    /// tombstone's of a deleted one.
    fn last_of(&mut self, pk: &PublicKey, now: Instant) -> Option<(u64, i64)> {
        if let Some(entry) = self.live_entry(pk.as_bytes(), now) {
            return Some((entry.sequence, entry.timestamp));
        }
        live(&mut self.entry_tombstones, pk, now).copied()
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.entries.retain(|_, live| live.expires > now);
        self.entry_tombstones.retain(|_, live| live.expires > now);
        self.transport_tombstones
            .retain(|_, live| live.expires > now);
        let expired: Vec<[u8; 16]> = self
            .transports
            .iter()
            .filter(|(_, live)| live.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove_transport(&id);
        }
    }

    /// The timestamp of the live registration of `id`.
    fn live_transport_timestamp(&self, id: &[u8; 16], now: Instant) -> Option<i64> {
        self.transports
            .get(id)
            .filter(|live| live.expires > now)
            .map(|live| live.value.timestamp)
    }

    fn remove_transport(&mut self, id: &[u8; 16]) -> bool {
        let Some(live) = self.transports.remove(id) else {
            return false;
        };
        for edge in [live.value.edge_a, live.value.edge_b] {
            if let Some(ids) = self.edges.get_mut(&edge) {
                ids.remove(id);
                if ids.is_empty() {
                    self.edges.remove(&edge);
                }
            }
        }
        true
    }
}

/// Entries and transports in this process's memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, pk: &PublicKey) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .lock()
            .live_entry(pk.as_bytes(), Instant::now())
            .cloned())
    }

    async fn get_proto(&self, key: &KeyBytes) -> Result<Option<pb::Entry>, StoreError> {
        Ok(self.cached_entry(key))
    }

    /// The map is in this process and is the store itself: a found entry is current.
    fn cached_entry(&self, key: &KeyBytes) -> Option<pb::Entry> {
        self.lock()
            .live_stored(key, Instant::now())
            .map(|stored| stored.proto.clone())
    }

    async fn put(
        &self,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Result<Written, Rejected>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep(now);
        let created = state.live_entry(entry.owner.as_bytes(), now).is_none();
        if let Err(rejected) = entry.validate_update(state.last_of(&entry.owner, now)) {
            return Ok(Err(rejected));
        }
        state.entry_tombstones.remove(&entry.owner);
        state.entries.insert(
            entry.owner,
            Live {
                value: Stored {
                    entry: entry.clone(),
                    proto: entry.to_proto(),
                },
                expires: now + ttl,
            },
        );
        Ok(Ok(if created {
            Written::Created
        } else {
            Written::Updated
        }))
    }

    async fn delete(
        &self,
        pk: &PublicKey,
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(stored) = state.live_entry(pk.as_bytes(), now) else {
            return Ok(Deleted::NotFound);
        };
        if stored.timestamp > timestamp {
            return Ok(Deleted::Newer {
                stored_timestamp: stored.timestamp,
            });
        }
        let tombstone = (stored.sequence, stored.timestamp);
        state.entries.remove(pk);
        state.entry_tombstones.insert(
            *pk,
            Live {
                value: tombstone,
                expires: now + tombstone_ttl,
            },
        );
        Ok(Deleted::Deleted)
    }

    async fn servers(&self) -> Result<Vec<Entry>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .entries
            .values()
            .filter(|live| live.expires > now && live.value.entry.server.is_some())
            .map(|live| live.value.entry.clone())
            .collect())
    }

    async fn counts(&self) -> Result<EntryCounts, StoreError> {
        let now = Instant::now();
        let state = self.lock();
        let live = state.entries.values().filter(|live| live.expires > now);
        let mut counts = EntryCounts::default();
        for live in live {
            counts.servers += u64::from(live.value.entry.server.is_some());
            counts.clients += u64::from(live.value.entry.client.is_some());
        }
        Ok(counts)
    }

    async fn clients(&self, token: &str, count: usize) -> Result<ClientPage, StoreError> {
        let after = if token.is_empty() {
            None
        } else {
            Some(
                token
                    .parse::<PublicKey>()
                    .map_err(|_| super::bad_page_token(token))?,
            )
        };
        let now = Instant::now();
        let state = self.lock();
        let mut clients: Vec<PublicKey> = state
            .entries
            .iter()
            .filter(|(pk, live)| {
                after.is_none_or(|a| **pk > a)
                    && live.expires > now
                    && live.value.entry.client.is_some()
            })
            .map(|(pk, _)| *pk)
            .take(count + 1)
            .collect();
        let next = if clients.len() > count {
            clients.truncate(count);
            clients.last().map(ToString::to_string).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ClientPage { clients, next })
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_transport(
        &self,
        transport: &TransportEntry,
        ttl: Duration,
    ) -> Result<Result<(), Rejected>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep(now);
        let stale = |stored_timestamp: i64| {
            Ok(Err(Rejected::StaleRegistration {
                timestamp: transport.timestamp,
                stored_timestamp,
            }))
        };
        if let Some(stored) = state.live_transport_timestamp(&transport.id, now)
            && stored > transport.timestamp
        {
            return stale(stored);
        }
        if let Some(&deregistered) = live(&mut state.transport_tombstones, &transport.id, now)
            && deregistered >= transport.timestamp
        {
            return stale(deregistered);
        }
        state.transport_tombstones.remove(&transport.id);
        for edge in [transport.edge_a, transport.edge_b] {
            state.edges.entry(edge).or_default().insert(transport.id);
        }
        state.transports.insert(
            transport.id,
            Live {
                value: transport.clone(),
                expires: now + ttl,
            },
        );
        Ok(Ok(()))
    }

    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .transports
            .get(id)
            .filter(|live| live.expires > now)
            .map(|live| live.value.clone()))
    }

    async fn transports_by_edge(
        &self,
        edge: &PublicKey,
    ) -> Result<Vec<TransportEntry>, StoreError> {
        let now = Instant::now();
        let state = self.lock();
        Ok(state
            .edges
            .get(edge)
            .into_iter()
            .flatten()
            .filter_map(|id| state.transports.get(id))
            .filter(|live| live.expires > now)
            .map(|live| live.value.clone())
            .collect())
    }

    async fn delete_transport(
        &self,
        id: &[u8; 16],
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(stored) = state.live_transport_timestamp(id, now) else {
            return Ok(Deleted::NotFound);
        };
        if stored > timestamp {
            return Ok(Deleted::Newer {
                stored_timestamp: stored,
            });
        }
        state.remove_transport(id);
        state.transport_tombstones.insert(
            *id,
            Live {
                value: stored.max(timestamp),
                expires: now + tombstone_ttl,
            },
        );
        Ok(Deleted::Deleted)
    }
}
