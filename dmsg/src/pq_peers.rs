//! Which peers advertise post-quantum support, as far as this node has seen (PROTOCOL.md §4.5).
//!
//! A node learns it from signed discovery entries (`pq_capable`) and from its configuration
//! (seeds marked `#pq`, which are pinned). [`PqPeers::known_pq`] turns the registry into the
//! [`KnownPq`] rule of [`crate::noise::PqSettings`]: a classical completion with a peer
//! known to advertise PQ fails, on either end, whatever the policy.
//!
//! The registry is bounded ([`PqPeers::CAPACITY`] keys, oldest evicted first) and what it
//! learned from entries expires, so a peer that stops advertising PQ is not refused forever
//! and nothing a peer sends grows it without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::entry::Entry;
use crate::identity::PublicKey;
use crate::noise::KnownPq;

/// What is known about one peer.
#[derive(Clone, Copy, Debug)]
struct Knowledge {
    /// The peer advertises PQ.
    advertises: bool,
    /// Configured, never expires or is evicted.
    pinned: bool,
    /// When it was learned.
    learned: Instant,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<PublicKey, Knowledge>,
    /// Keys in the order they were first learned: the eviction order.
    order: VecDeque<PublicKey>,
}

/// A bounded registry of peers known to advertise PQ (or known not to). Cheap to share:
/// every handle is an `Arc`.
#[derive(Debug, Default)]
pub struct PqPeers {
    table: Mutex<Table>,
}

impl PqPeers {
    /// Keys the registry holds at most; the oldest learned is evicted first.
    pub const CAPACITY: usize = 16_384;
    /// How long an advertisement learned from an entry counts.
    pub const ADVERTISED_TTL: Duration = Duration::from_secs(3600);
    /// How long "this peer does not advertise PQ" counts (it only saves lookups).
    pub const NOT_ADVERTISED_TTL: Duration = Duration::from_secs(60);

    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Pins `peer` as advertising PQ (a seed marked `#pq`): never expires or is evicted.
    pub fn pin(&self, peer: PublicKey) {
        self.record(peer, true, true, Instant::now());
    }

    /// Learns from a signed entry: records whether its owner advertises PQ. An entry whose
    /// signature does not verify teaches nothing.
    pub fn learn_entry(&self, entry: &Entry) {
        if entry.signature_valid() {
            self.learn(entry.owner, entry.pq_capable, Instant::now());
        }
    }

    /// Records what a verified source says about `peer` at `now`.
    pub fn learn(&self, peer: PublicKey, advertises: bool, now: Instant) {
        self.record(peer, advertises, false, now);
    }

    fn record(&self, peer: PublicKey, advertises: bool, pinned: bool, now: Instant) {
        let mut table = crate::sync::lock(&self.table);
        if let Some(known) = table.peers.get_mut(&peer) {
            if known.pinned && !pinned {
                return; // configuration outranks what entries say
            }
            *known = Knowledge {
                advertises,
                pinned,
                learned: now,
            };
            return;
        }
        if table.peers.len() >= Self::CAPACITY {
            table.evict_one();
        }
        table.peers.insert(
            peer,
            Knowledge {
                advertises,
                pinned,
                learned: now,
            },
        );
        table.order.push_back(peer);
    }

    /// Whether `peer` is known, at `now`, to advertise PQ.
    pub fn advertises(&self, peer: &PublicKey, now: Instant) -> bool {
        self.lookup(peer, now).unwrap_or(false)
    }

    /// What is known about `peer` at `now`: `Some(advertises)`, or `None` when nothing
    /// current is (the server then looks the peer up).
    pub fn lookup(&self, peer: &PublicKey, now: Instant) -> Option<bool> {
        let table = crate::sync::lock(&self.table);
        let known = table.peers.get(peer)?;
        let ttl = if known.advertises {
            Self::ADVERTISED_TTL
        } else {
            Self::NOT_ADVERTISED_TTL
        };
        (known.pinned || now.saturating_duration_since(known.learned) < ttl)
            .then_some(known.advertises)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.table).peers.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry as the [`KnownPq`] rule of a node's PQ settings, combined with `also` (a
    /// rule the user configured) when there is one.
    pub fn known_pq(self: &Arc<Self>, also: Option<KnownPq>) -> KnownPq {
        let peers = self.clone();
        Arc::new(move |peer: &PublicKey| {
            peers.advertises(peer, Instant::now()) || also.as_ref().is_some_and(|rule| rule(peer))
        })
    }
}

impl Table {
    /// Drops the oldest key that is not pinned (pinned keys go to the back).
    fn evict_one(&mut self) {
        for _ in 0..self.order.len() {
            let Some(oldest) = self.order.pop_front() else {
                return;
            };
            if self.peers.get(&oldest).is_some_and(|known| known.pinned) {
                self.order.push_back(oldest);
                continue;
            }
            self.peers.remove(&oldest);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn key() -> PublicKey {
        Keypair::generate().public()
    }

    #[test]
    fn advertisements_expire_and_pins_do_not() {
        let peers = PqPeers::new();
        let (learned, pinned, declined) = (key(), key(), key());
        let now = Instant::now();
        peers.learn(learned, true, now);
        peers.pin(pinned);
        peers.learn(declined, false, now);
        assert!(peers.advertises(&learned, now));
        assert_eq!(peers.lookup(&declined, now), Some(false));

        let later = now + PqPeers::ADVERTISED_TTL;
        assert!(!peers.advertises(&learned, later));
        assert!(peers.advertises(&pinned, later + PqPeers::ADVERTISED_TTL));
        assert_eq!(
            peers.lookup(&declined, now + PqPeers::NOT_ADVERTISED_TTL),
            None
        );
    }

    #[test]
    fn an_entry_does_not_unpin_a_configured_peer() {
        let peers = PqPeers::new();
        let pinned = key();
        peers.pin(pinned);
        peers.learn(pinned, false, Instant::now());
        assert!(peers.advertises(&pinned, Instant::now()));
    }

    #[test]
    fn the_registry_is_bounded_and_keeps_its_pins() {
        let peers = PqPeers::new();
        let pinned = key();
        peers.pin(pinned);
        let now = Instant::now();
        let first = key();
        peers.learn(first, true, now);
        for n in 0..PqPeers::CAPACITY as u64 {
            let mut bytes = [0xAA; 32];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            peers.learn(PublicKey::unchecked(bytes), true, now);
        }
        assert_eq!(peers.len(), PqPeers::CAPACITY);
        assert!(peers.advertises(&pinned, now), "a pin is never evicted");
        assert!(
            !peers.advertises(&first, now),
            "the oldest learned went first"
        );
    }

    #[test]
    fn the_rule_combines_with_the_users() {
        let peers = PqPeers::new();
        let (learned, configured, other) = (key(), key(), key());
        peers.learn(learned, true, Instant::now());
        let rule = peers.known_pq(Some(Arc::new(move |peer| *peer == configured)));
        assert!(rule(&learned));
        assert!(rule(&configured));
        assert!(!rule(&other));
    }
}
