//! A store that can hold entry writes for a while before doing them (fault injection for the
//! "publish in flight during shutdown" test), recording the order of what it did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use discovery_svc::store::memory::MemoryStore;
use discovery_svc::store::{
    ClientPage, Deleted, EntryCounts, KeyBytes, Store, StoreError, Written,
};
use dmsg::entry::{Entry, Rejected, TransportEntry};
use dmsg::identity::PublicKey;

/// What the store did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A delayed write began (and is waiting).
    PutHeld(u64),
    /// A write landed.
    PutDone(u64, bool),
    /// A delete ran.
    Delete(Deleted),
}

/// A memory store whose `put`s of one owner wait `delay` once armed.
#[derive(Clone)]
pub struct DelayStore {
    inner: Arc<MemoryStore>,
    armed: Arc<Mutex<Option<(PublicKey, Duration)>>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl DelayStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(MemoryStore::new()),
            armed: Arc::default(),
            events: Arc::default(),
        }
    }

    /// From now on, writes of `owner`'s entry wait `delay` before happening.
    pub fn arm(&self, owner: PublicKey, delay: Duration) {
        *self.armed.lock().unwrap() = Some((owner, delay));
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

#[tonic::async_trait]
impl Store for DelayStore {
    fn kind(&self) -> &'static str {
        "memory+delay"
    }

    async fn get(&self, pk: &PublicKey) -> Result<Option<Entry>, StoreError> {
        self.inner.get(pk).await
    }

    async fn get_proto(
        &self,
        key: &KeyBytes,
    ) -> Result<Option<skywire_proto::skywire::discovery::v1::Entry>, StoreError> {
        self.inner.get_proto(key).await
    }

    async fn put(
        &self,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Result<Written, Rejected>, StoreError> {
        let armed = *self.armed.lock().unwrap();
        if let Some((owner, delay)) = armed
            && owner == entry.owner
        {
            self.record(Event::PutHeld(entry.sequence));
            tokio::time::sleep(delay).await;
        }
        let written = self.inner.put(entry, ttl).await;
        self.record(Event::PutDone(entry.sequence, matches!(written, Ok(Ok(_)))));
        written
    }

    async fn delete(
        &self,
        pk: &PublicKey,
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        let deleted = self.inner.delete(pk, timestamp, tombstone_ttl).await;
        if let Ok(outcome) = &deleted {
            self.record(Event::Delete(*outcome));
        }
        deleted
    }

    async fn servers(&self) -> Result<Vec<Entry>, StoreError> {
        self.inner.servers().await
    }

    async fn clients(&self, token: &str, count: usize) -> Result<ClientPage, StoreError> {
        self.inner.clients(token, count).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }

    async fn counts(&self) -> Result<EntryCounts, StoreError> {
        self.inner.counts().await
    }

    async fn put_transport(
        &self,
        transport: &TransportEntry,
        ttl: Duration,
    ) -> Result<Result<(), Rejected>, StoreError> {
        self.inner.put_transport(transport, ttl).await
    }

    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, StoreError> {
        self.inner.transport(id).await
    }

    async fn transports_by_edge(
        &self,
        edge: &PublicKey,
    ) -> Result<Vec<TransportEntry>, StoreError> {
        self.inner.transports_by_edge(edge).await
    }

    async fn delete_transport(
        &self,
        id: &[u8; 16],
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        self.inner
            .delete_transport(id, timestamp, tombstone_ttl)
            .await
    }
}
