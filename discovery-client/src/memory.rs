//! [`MemoryDiscovery`]: discovery in memory, for unit tests and simulations of what uses the
//! [`Discovery`] trait (the lifecycle, the publisher) — the sequence rule of PROTOCOL.md
//! §14.3, a switch that makes it unavailable, and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dmsg_core::identity::{Keypair, PublicKey};

use crate::discovery::{Discovery, DiscoveryError};
use crate::entry::Entry;

/// Entries by owner, in memory.
#[derive(Debug, Default)]
pub struct MemoryDiscovery {
    entries: Mutex<HashMap<PublicKey, Entry>>,
    down: AtomicBool,
    puts: AtomicUsize,
    deletes: AtomicUsize,
}

impl MemoryDiscovery {
    fn lock(&self) -> MutexGuard<'_, HashMap<PublicKey, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored entry of `pk`.
    pub fn get(&self, pk: &PublicKey) -> Option<Entry> {
        self.lock().get(pk).cloned()
    }

    /// Stores `entry` as is (no checks): what another writer, or a test, put there.
    pub fn set(&self, entry: Entry) {
        self.lock().insert(entry.owner, entry);
    }

    /// Forgets every entry (a discovery restarted with an empty store).
    pub fn wipe(&self) {
        self.lock().clear();
    }

    /// Makes every call fail as unavailable (or answer again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// `PutEntry` calls so far, failed ones included.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::Relaxed)
    }

    /// Deletes done so far.
    pub fn deletes(&self) -> usize {
        self.deletes.load(Ordering::Relaxed)
    }

    fn check_up(&self) -> Result<(), DiscoveryError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(DiscoveryError::Unavailable(
                "in-memory discovery is down".into(),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Discovery for MemoryDiscovery {
    async fn entry(&self, pk: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
        self.check_up()?;
        Ok(self.get(pk))
    }

    async fn put_entry(&self, entry: &Entry) -> Result<bool, DiscoveryError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.check_up()?;
        if !entry.signature_valid() {
            return Err(DiscoveryError::Refused {
                code: tonic::Code::Unauthenticated,
                message: format!("the signature does not verify for {}", entry.owner),
            });
        }
        let mut entries = self.lock();
        if let Some(stored) = entries.get(&entry.owner)
            && stored.sequence >= entry.sequence
        {
            return Err(DiscoveryError::Stale {
                stored_sequence: stored.sequence,
                stored_timestamp: stored.timestamp,
            });
        }
        Ok(entries.insert(entry.owner, entry.clone()).is_none())
    }

    async fn delete_entry(&self, keypair: &Keypair) -> Result<(), DiscoveryError> {
        self.check_up()?;
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.lock().remove(&keypair.public());
        Ok(())
    }

    async fn available_servers(&self, limit: u32) -> Result<Vec<Entry>, DiscoveryError> {
        let mut servers = self.all_servers().await?;
        servers.retain(|entry| {
            entry
                .server
                .as_ref()
                .is_some_and(|server| server.available_sessions > 0)
        });
        servers.truncate(usize::try_from(limit).unwrap_or(usize::MAX).max(1));
        Ok(servers)
    }

    /// Every server entry, by owner key.
    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        self.check_up()?;
        let mut servers: Vec<Entry> = self
            .lock()
            .values()
            .filter(|entry| entry.server.is_some())
            .cloned()
            .collect();
        servers.sort_by_key(|entry| entry.owner);
        Ok(servers)
    }
}
