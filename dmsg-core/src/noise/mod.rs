//! Handshakes and traffic keys (PROTOCOL.md §4): Noise `XK`/`KK` over X25519, ChaCha20-Poly1305
//! and BLAKE2s, hybridised with ML-KEM-768 and re-keyed with HKDF-SHA256 after the split.
//!
//! A finished handshake must pass [`PqSettings::check`] — the downgrade policy — to become
//! [`Established`], the only thing sessions and streams are built from.

mod cipher;
mod handshake;
mod payload;
mod pq;
mod resolver;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use cipher::{Aead, AeadError};
pub use handshake::{
    Answered, ExpectAnswer, ExpectConfirm, HandshakeOutcome, PqStatus, Responded, ResponderNext,
    initiate, respond,
};
pub use payload::{
    ANSWER_LEN, CONFIRM_LEN, Confirm, KEM_MLKEM768, OFFER_LEN, PayloadError, parse_answer,
    parse_offer,
};
pub use pq::{CT_LEN, EK_LEN, KemError, SS_LEN};

use crate::identity::PublicKey;
use crate::wire::{HandshakeRefusal, PreambleError};

/// Environment variable that makes every handshake require the PQ hybrid (the binaries read
/// it once into their config, as `--require-pq`).
pub const REQUIRE_PQ_ENV: &str = "SKYWIRE_REQUIRE_PQ";

/// What to do when a handshake completes classical-only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PqPolicy {
    /// Complete, with a WARN log naming the peer and a counter increment.
    #[default]
    Prefer,
    /// Fail the handshake with [`HandshakeError::PqRequired`].
    Require,
}

/// Why PQ was required for a handshake that completed classical-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequireReason {
    /// The local policy requires it (`SKYWIRE_REQUIRE_PQ`).
    Policy,
    /// The peer is known to advertise PQ (its signed entry or config says so).
    PeerAdvertises,
}

impl fmt::Display for RequireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Policy => "the local policy requires it (SKYWIRE_REQUIRE_PQ)",
            Self::PeerAdvertises => "the peer advertises post-quantum support",
        })
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Noise failed: a tampered or mis-keyed message, or a wrong peer key.
    #[error("noise handshake failed: {0}")]
    Noise(#[from] snow::Error),
    /// A payload did not parse.
    #[error("malformed handshake payload: {0}")]
    Payload(#[from] PayloadError),
    /// ML-KEM input was malformed.
    #[error(transparent)]
    Kem(#[from] KemError),
    /// The offer does not match the mode in the (authenticated) prologue.
    #[error("the handshake payload does not match the announced mode")]
    OfferMismatch,
    /// A hybrid answer to a classical offer.
    #[error("the peer answered a post-quantum offer that was never made")]
    UnexpectedAnswer,
    /// The two ends disagree on whether PQ is active.
    #[error("the peers disagree on whether the post-quantum hybrid is active")]
    PqMismatch,
    /// The identity in message 3 does not own the Noise static key.
    #[error("the initiator's identity does not match its Noise static key")]
    IdentityMismatch,
    /// A KK handshake without the peer's key, or XK without a remote static.
    #[error("the peer's static key is missing")]
    MissingRemote,
    /// The handshake completed classical-only and PQ is required.
    #[error(
        "handshake with {peer} completed without post-quantum protection, which is required: {reason}"
    )]
    PqRequired {
        /// The peer.
        peer: PublicKey,
        /// Why it was required.
        reason: RequireReason,
    },
    /// A handshake message over the maximum length.
    #[error("handshake message of {0} bytes exceeds the maximum")]
    MessageTooLong(usize),
    /// The responder refused before the handshake.
    #[error("refused: {0}")]
    Refused(#[from] HandshakeRefusal),
    /// The preamble was not valid.
    #[error("bad preamble: {0}")]
    Preamble(#[from] PreambleError),
    /// The handshake did not finish within its deadline.
    #[error("handshake did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection failed during the handshake.
    #[error("connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// Handshake counters, shared by everything that handshakes for one node.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    hybrid: AtomicU64,
    classical: AtomicU64,
    downgrades: AtomicU64,
    pq_refused: AtomicU64,
}

/// A snapshot of [`HandshakeStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Handshakes completed with the hybrid.
    pub hybrid: u64,
    /// Handshakes completed classical-only.
    pub classical: u64,
    /// Classical completions where this end supported PQ (warned about).
    pub downgrades: u64,
    /// Handshakes refused because PQ was required.
    pub pq_refused: u64,
}

impl HandshakeCounts {
    /// The counts under their metric labels (`outcome` of `*_handshakes_total`): hybrid,
    /// classical, downgrade, pq_refused.
    pub fn by_outcome(&self) -> [(&'static str, u64); 4] {
        [
            ("hybrid", self.hybrid),
            ("classical", self.classical),
            ("downgrade", self.downgrades),
            ("pq_refused", self.pq_refused),
        ]
    }
}

impl HandshakeStats {
    /// Counts a handshake refused for PQ reasons before the policy gate could see it (a
    /// classical preamble at a `Require` server).
    pub fn count_pq_refused(&self) {
        self.pq_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HandshakeCounts {
        HandshakeCounts {
            hybrid: self.hybrid.load(Ordering::Relaxed),
            classical: self.classical.load(Ordering::Relaxed),
            downgrades: self.downgrades.load(Ordering::Relaxed),
            pq_refused: self.pq_refused.load(Ordering::Relaxed),
        }
    }
}

/// Tells whether a peer is known to advertise PQ (from its signed discovery entry or config).
pub type KnownPq = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// This node's post-quantum settings.
#[derive(Clone)]
pub struct PqSettings {
    /// Offer and accept the hybrid. `false` makes this node classical-only (legacy peers,
    /// tests); it then never offers and ignores offers.
    pub enabled: bool,
    /// What a classical completion does.
    pub policy: PqPolicy,
    /// Peers known to advertise PQ: a classical completion with one of them fails whatever the
    /// policy.
    pub known_pq: Option<KnownPq>,
    /// Counters.
    pub stats: Arc<HandshakeStats>,
}

impl fmt::Debug for PqSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PqSettings")
            .field("enabled", &self.enabled)
            .field("policy", &self.policy)
            .field("known_pq", &self.known_pq.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for PqSettings {
    /// Hybrid enabled, `Prefer`, no known peers.
    fn default() -> Self {
        Self {
            enabled: true,
            policy: PqPolicy::Prefer,
            known_pq: None,
            stats: Arc::default(),
        }
    }
}

impl PqSettings {
    /// Default settings, with the policy `Require` when `required` (`--require-pq`, or
    /// `SKYWIRE_REQUIRE_PQ=1`), else `Prefer`.
    pub fn with_required(required: bool) -> Self {
        Self {
            policy: if required {
                PqPolicy::Require
            } else {
                PqPolicy::Prefer
            },
            ..Self::default()
        }
    }

    /// The mode to offer.
    pub fn offer(&self) -> crate::wire::Mode {
        if self.enabled {
            crate::wire::Mode::Hybrid
        } else {
            crate::wire::Mode::Classical
        }
    }

    /// Why PQ is required with `peer`, if it is. `advertised` is what the caller knows about
    /// the peer beyond [`PqSettings::known_pq`] (e.g. a PQ flag on a seeded server).
    pub fn required_for(&self, peer: &PublicKey, advertised: bool) -> Option<RequireReason> {
        if self.policy == PqPolicy::Require {
            Some(RequireReason::Policy)
        } else if advertised || self.known_pq.as_ref().is_some_and(|known| known(peer)) {
            Some(RequireReason::PeerAdvertises)
        } else {
            None
        }
    }

    /// Applies the downgrade policy to a finished handshake (PROTOCOL.md §4.5).
    ///
    /// `what` names the handshake in the warning ("session", "stream").
    pub fn check(
        &self,
        outcome: HandshakeOutcome,
        advertised: bool,
        what: &'static str,
    ) -> Result<Established, HandshakeError> {
        let peer = outcome.remote;
        if outcome.pq == PqStatus::Classical {
            if let Some(reason) = self.required_for(&peer, advertised) {
                self.stats.pq_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, what, %reason, "refusing classical-only handshake");
                return Err(HandshakeError::PqRequired { peer, reason });
            }
            self.stats.classical.fetch_add(1, Ordering::Relaxed);
            if self.enabled {
                self.stats.downgrades.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %peer,
                    what,
                    "handshake completed classical-only: no post-quantum protection for this {what}"
                );
            }
        } else {
            self.stats.hybrid.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Established {
            remote: peer,
            pq: outcome.pq,
            send: Aead::new(&outcome.keys.send),
            recv: Aead::new(&outcome.keys.recv),
        })
    }
}

/// A handshake that passed the PQ policy: the peer, the PQ status and the traffic ciphers.
/// Only [`PqSettings::check`] makes one.
#[derive(Debug)]
pub struct Established {
    remote: PublicKey,
    pq: PqStatus,
    /// Cipher for what this end sends.
    pub(crate) send: Aead,
    /// Cipher for what this end receives.
    pub(crate) recv: Aead,
}

impl Established {
    /// The authenticated peer.
    pub fn remote(&self) -> PublicKey {
        self.remote
    }

    /// Whether PQ is active.
    pub fn pq(&self) -> PqStatus {
        self.pq
    }

    /// The two traffic ciphers (send, receive).
    pub fn into_ciphers(self) -> (Aead, Aead) {
        (self.send, self.recv)
    }
}
