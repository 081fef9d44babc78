//! Where entries live: the [`Store`] trait and its two backends, [`memory`] (one process, the
//! default) and [`redis`] (replicas sharing one Redis).
//!
//! Both make the sequence check and the write one atomic step, so two discovery replicas can
//! never both accept the same sequence. Entries expire: server entries after 2 minutes, client
//! entries after 60 (configurable); expired entries are never returned.
//!
//! A delete or deregistration leaves a **tombstone** — the deleted entry's sequence and
//! timestamp, the transport's last timestamp — for the client-entry TTL, so a replay of what
//! was deleted is refused as stale instead of coming back (PROTOCOL.md §14.2, §14.4).

pub mod cache;
pub mod memory;
pub mod redis;
pub mod tracking;

use std::time::Duration;

use dmsg::entry::{Entry, Rejected, TransportEntry};
use dmsg::identity::PublicKey;
use observability::MetricsRegistry;
use skywire_proto::skywire::discovery::v1 as pb;

pub use cache::StaleCopy;

/// A public key's bytes as a lookup key, not checked to be a point: only checked keys are
/// ever stored, so bytes that find an entry are a valid key (`GetEntry` checks the key only
/// when nothing is found, sparing the curve arithmetic on every hit).
pub type KeyBytes = [u8; dmsg::identity::PUBLIC_KEY_LEN];

/// How a store write ended, when it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The owner had no (live) entry.
    Created,
    /// An older entry was replaced.
    Updated,
}

/// How a delete ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The entry is gone.
    Deleted,
    /// There was no entry.
    NotFound,
    /// What is stored is newer than the delete request (it was kept).
    Newer {
        /// The stored entry's or registration's timestamp.
        stored_timestamp: i64,
    },
}

/// Why a store operation did not succeed: the store failed, or (`BadRequest`) the request
/// can never work — which is never a store failure.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request is wrong whatever the store's state (a page token this server never
    /// issued): INVALID_ARGUMENT, and it does not count toward the store's breaker.
    #[error("{message}")]
    BadRequest {
        /// What the caller did and what to do instead.
        message: String,
        /// The `ErrorInfo` reason.
        reason: &'static str,
    },
    /// The backend is unreachable or too slow.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend returned something that does not decode.
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
}

/// The refusal of a page token this server did not issue.
pub fn bad_page_token(token: &str) -> StoreError {
    let shown: String = token.chars().take(40).collect();
    StoreError::BadRequest {
        message: format!(
            "page token {shown:?} is not one this server issued: start from an empty token \
             and pass back the next_page_token of the previous page"
        ),
        reason: dmsg::reason::BAD_PAGE_TOKEN,
    }
}

/// A page of client keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientPage {
    /// Keys on this page.
    pub clients: Vec<PublicKey>,
    /// Token for the next page; empty when there is none.
    pub next: String,
}

/// Entries by kind, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryCounts {
    /// Entries with a server part.
    pub servers: u64,
    /// Entries with a client part.
    pub clients: u64,
}

/// Entry and transport storage. Every write checks and writes atomically.
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// "memory" or "redis".
    fn kind(&self) -> &'static str;

    /// The live entry of `pk`.
    async fn get(&self, pk: &PublicKey) -> Result<Option<Entry>, StoreError>;

    /// The live entry stored under `key` in protobuf form, as validated when it was written
    /// (the read path of `GetEntry`: no key is re-validated).
    async fn get_proto(&self, key: &KeyBytes) -> Result<Option<pb::Entry>, StoreError>;

    /// A copy of the entry under `key` that this store holds in memory and knows to be
    /// current — the Redis store's read cache, the memory store's map — served without a
    /// store operation (no breaker, no operation timing); `None`: read the store.
    fn cached_entry(&self, _key: &KeyBytes) -> Option<pb::Entry> {
        None
    }

    /// The last copy of the entry under `key` this store read, while its TTL lasts, for when the store
    /// cannot be read now (the caller marks the answer stale).
    fn last_known_entry(&self, _key: &KeyBytes) -> Option<StaleCopy> {
        None
    }

    /// Registers the store's own metrics (the read cache's).
    fn register_metrics(&self, _metrics: &MetricsRegistry) -> Result<(), prometheus::Error> {
        Ok(())
    }

    /// Stops the store's own tasks (the read cache's invalidation connection) and waits for
    /// them.
    async fn close(&self) {}

    /// Writes `entry` (already validated) if its sequence is greater and its timestamp not
    /// older than the stored ones; otherwise the refusal says what is stored.
    async fn put(
        &self,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Result<Written, Rejected>, StoreError>;

    /// Deletes `pk`'s entry unless the stored one is newer than `timestamp`, leaving a
    /// tombstone of its sequence and timestamp for `tombstone_ttl`: until it expires, `put`
    /// refuses what the deleted entry would have refused (a replayed older entry).
    async fn delete(
        &self,
        pk: &PublicKey,
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError>;

    /// Every live server entry.
    async fn servers(&self) -> Result<Vec<Entry>, StoreError>;

    /// Client keys, `count` at a time; `token` is empty for the first page.
    async fn clients(&self, token: &str, count: usize) -> Result<ClientPage, StoreError>;

    /// Answers if the backend works now.
    async fn health(&self) -> Result<(), StoreError>;

    /// How many entries have a server part and how many a client part (Redis: the index
    /// sets, which may still hold members that expired since they were last read).
    async fn counts(&self) -> Result<EntryCounts, StoreError>;

    /// Writes a transport (already validated) unless the stored registration is newer, or
    /// a deregistration at least as new left a tombstone (a replayed registration):
    /// `StaleRegistration` then says what is stored.
    async fn put_transport(
        &self,
        transport: &TransportEntry,
        ttl: Duration,
    ) -> Result<Result<(), Rejected>, StoreError>;

    /// One transport by id.
    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, StoreError>;

    /// Every live transport with `edge`.
    async fn transports_by_edge(&self, edge: &PublicKey)
    -> Result<Vec<TransportEntry>, StoreError>;

    /// Removes a transport unless its registration is newer than `timestamp` (the
    /// deregistration's), leaving a tombstone of the later of the two timestamps for
    /// `tombstone_ttl`, so no replayed registration older than it comes back.
    async fn delete_transport(
        &self,
        id: &[u8; 16],
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError>;
}

/// The TTL for an entry: a server part makes it short-lived.
pub fn ttl_for(entry: &Entry, server_ttl: Duration, client_ttl: Duration) -> Duration {
    if entry.server.is_some() {
        server_ttl
    } else {
        client_ttl
    }
}
