//! Transports: links between two visors that carry route packets (ROUTING.md §2).
//!
//! - [`handshake`]: the stcp handshake (Noise KK, hybrid) and its hello parser.
//! - [`frame`]: frames over a byte stream, sealed per hop on stcp.
//! - [`queue`]: the outgoing queue, bounded by bytes, drops counted.
//! - [`link`]: the reader and writer tasks of one transport.
//! - [`persistent`]: transports kept up by dmsg's one keeper.
//! - [`stcp`]: TCP dialing and socket options.

pub mod frame;
pub mod handshake;
pub mod link;
pub mod persistent;
pub mod queue;
pub mod stcp;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dmsg::identity::PublicKey;
use tokio_util::sync::CancellationToken;

use crate::router::{DropReason, TransportId};
use queue::{FrameQueue, OutFrame};

/// Transport types (ROUTING.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A dmsg stream to the peer's port 45.
    Dmsg,
    /// Direct TCP with Noise KK.
    Stcp,
}

impl TransportKind {
    /// Every kind.
    pub const ALL: [TransportKind; 2] = [Self::Dmsg, Self::Stcp];

    /// The type name (in transport IDs and entries, and the metric label).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dmsg => "dmsg",
            Self::Stcp => "stcp",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dmsg" => Ok(Self::Dmsg),
            "stcp" => Ok(Self::Stcp),
            other => Err(format!("unknown transport type {other:?} (dmsg or stcp)")),
        }
    }
}

/// The transport ID of the link between `a` and `b` of `kind` (ROUTING.md §2.3): the one
/// discovery's TransportRegistry checks.
pub fn transport_id(a: &PublicKey, b: &PublicKey, kind: TransportKind) -> TransportId {
    discovery_client::entry::transport_id(a, b, kind.name())
}

/// A BYE frame with `code` (ROUTING.md §3.4).
pub fn bye(code: crate::packet::ByeCode) -> OutFrame {
    OutFrame {
        header: crate::packet::Header::for_transport(crate::packet::FrameType::Bye, 1),
        body: bytes::Bytes::copy_from_slice(&[code as u8]),
    }
}

/// Whether a new connection for the same peer and type replaces the one held
/// (ROUTING.md §2.5): one dialed by the low edge beats one dialed by the high edge; between
/// two of the same dialer, the newer wins.
pub fn new_connection_wins(
    new_dialer: &PublicKey,
    held_dialer: &PublicKey,
    low: &PublicKey,
) -> bool {
    new_dialer == held_dialer || new_dialer == low
}

/// One live transport: who and what it is, its outgoing queue and its counters. Shared by
/// its reader and writer tasks and by everything that sends on it.
#[derive(Debug)]
pub struct Transport {
    /// The transport ID.
    pub id: TransportId,
    /// The other edge.
    pub peer: PublicKey,
    /// The type.
    pub kind: TransportKind,
    /// Which edge dialed it.
    pub dialer: PublicKey,
    /// Frames waiting to be written.
    pub queue: FrameQueue,
    /// Cancelled when the transport closes.
    pub closed: CancellationToken,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Why it closed, once it did.
    close_reason: Mutex<Option<String>>,
    /// The low edge's signature requests waiting for the other edge's SIGN, by timestamp
    /// (ROUTING.md §2.4); one at a time in practice, never more than a few.
    pub(crate) pending_signs: Mutex<HashMap<i64, tokio::sync::oneshot::Sender<[u8; 64]>>>,
    /// This visor's direct opens waiting for their OPENED, by its CONSUME key (ROUTING.md
    /// §6.7).
    pub(crate) pending_opens: Mutex<
        HashMap<
            crate::packet::RouteId,
            tokio::sync::oneshot::Sender<crate::node::direct::OpenAnswer>,
        >,
    >,
    /// The peer's opens answered here whose rules still wait for a handshake (at most
    /// `MAX_PENDING_OPENS`).
    pub(crate) pending_open_count: std::sync::atomic::AtomicUsize,
}

/// A snapshot of a transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frame bytes written.
    pub bytes_sent: u64,
    /// Frame bytes read.
    pub bytes_received: u64,
    /// Packets that arrived on it and were dropped, by reason.
    pub drops: Vec<(DropReason, u64)>,
    /// Bytes queued to be written now.
    pub queued: usize,
    /// The most bytes ever queued at once.
    pub queue_high_water: usize,
}

impl Transport {
    /// A new transport with an empty queue of `queue_bytes`.
    pub fn new(
        local: &PublicKey,
        peer: PublicKey,
        kind: TransportKind,
        dialer: PublicKey,
        queue_bytes: usize,
    ) -> Self {
        Self {
            id: transport_id(local, &peer, kind),
            peer,
            kind,
            dialer,
            queue: FrameQueue::new(
                queue_bytes,
                crate::route_group::ROUTE_WINDOW + crate::packet::MAX_BODY,
            ),
            closed: CancellationToken::new(),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            drops: Default::default(),
            close_reason: Mutex::new(None),
            pending_signs: Mutex::new(HashMap::new()),
            pending_opens: Mutex::new(HashMap::new()),
            pending_open_count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Queues a frame of a local sender (see [`FrameQueue::push`]).
    pub fn send(&self, frame: OutFrame) -> Result<(), DropReason> {
        self.queue.push(frame)
    }

    /// Counts a packet that arrived here and was dropped.
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Closes it: the queue refuses new frames, the tasks stop. Idempotent; the first reason
    /// is kept.
    pub fn close(&self, reason: impl Into<String>) {
        {
            let mut held = self
                .close_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.is_none() {
                *held = Some(reason.into());
            }
        }
        self.queue.close();
        self.closed.cancel();
    }

    /// Whether it is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Why it closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Its counters now.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|r| (*r, self.drops[r.index()].load(Ordering::Relaxed)))
                .collect(),
            queued: self.queue.bytes(),
            queue_high_water: self.queue.high_water(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg::identity::Keypair;

    /// ROUTING.md §2.5: both ends, seeing the same two connections in either order, keep the
    /// same one.
    #[test]
    fn both_ends_keep_the_same_connection() {
        let (x, y) = (Keypair::generate().public(), Keypair::generate().public());
        let (low, high) = if x < y { (x, y) } else { (y, x) };
        // A simultaneous dial: one connection dialed by each edge.
        for (first, second) in [(low, high), (high, low)] {
            let kept = if new_connection_wins(&second, &first, &low) {
                second
            } else {
                first
            };
            assert_eq!(kept, low, "the low edge's connection survives");
        }
        // A peer that redials (restarted): the newer of two by the same dialer wins.
        assert!(new_connection_wins(&high, &high, &low));
        assert!(new_connection_wins(&low, &low, &low));
        // The low edge's connection is never replaced by the high edge's.
        assert!(!new_connection_wins(&high, &low, &low));
    }

    /// ROUTING.md §2.3: both ends compute the same ID, different per type.
    #[test]
    fn both_ends_compute_the_same_id() {
        let (a, b) = (Keypair::generate().public(), Keypair::generate().public());
        assert_eq!(
            transport_id(&a, &b, TransportKind::Stcp),
            transport_id(&b, &a, TransportKind::Stcp)
        );
        assert_ne!(
            transport_id(&a, &b, TransportKind::Stcp),
            transport_id(&a, &b, TransportKind::Dmsg)
        );
    }
}
