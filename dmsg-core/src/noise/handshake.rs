//! Noise `XK` (sessions) and `KK` (streams) hybridised with ML-KEM-768, as typestates
//! (PROTOCOL.md §4).
//!
//! Each state consumes itself and returns the next, so steps cannot be repeated or skipped.
//! A finished handshake yields a [`HandshakeOutcome`], which must pass the PQ policy
//! ([`super::PqSettings::check`]) before its keys can be used.

use std::sync::LazyLock;

use snow::params::NoiseParams;
use zeroize::Zeroizing;

use super::HandshakeError;
use super::cipher::{Context, TrafficKeys, rekey};
use super::payload::{Confirm, kem_payload, parse_answer, parse_offer};
use super::pq::{KemKeypair, encapsulate};
use super::resolver::StaticKeyResolver;
use crate::identity::{Keypair, PublicKey};
use crate::wire::{MAX_HANDSHAKE_MESSAGE, Mode, PROTOCOL_VERSION, Pattern};

// Both names are valid Noise protocol names; parsing them cannot fail.
#[allow(clippy::expect_used)]
static XK: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_XK_25519_ChaChaPoly_BLAKE2s"
        .parse()
        .expect("valid Noise name")
});
#[allow(clippy::expect_used)]
static KK: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_KK_25519_ChaChaPoly_BLAKE2s"
        .parse()
        .expect("valid Noise name")
});

/// Prologue prefix (PROTOCOL.md §4.2).
const PROLOGUE_LABEL: &[u8] = b"skywire-dmsg";

/// Whether the ML-KEM secret was mixed into the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PqStatus {
    /// X25519 + ML-KEM-768.
    Hybrid,
    /// X25519 only.
    Classical,
}

impl PqStatus {
    /// True for [`PqStatus::Hybrid`].
    pub fn is_hybrid(self) -> bool {
        self == Self::Hybrid
    }
}

/// A completed handshake, before the PQ policy has looked at it.
pub struct HandshakeOutcome {
    pub(crate) remote: PublicKey,
    pub(crate) pq: PqStatus,
    pub(crate) keys: TrafficKeys,
}

impl HandshakeOutcome {
    /// The authenticated peer.
    pub fn remote(&self) -> PublicKey {
        self.remote
    }

    /// Whether PQ is active.
    pub fn pq(&self) -> PqStatus {
        self.pq
    }

    /// A fresh cipher for what this end sends (its counter at 0).
    pub(crate) fn send_cipher(&self) -> super::Aead {
        super::Aead::new(&self.keys.send)
    }
}

/// The prologue both ends mix in: label, version, pattern, mode and the pattern's binding
/// (the stream addresses for `KK`, nothing for `XK`).
fn prologue(pattern: Pattern, mode: Mode, binding: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROLOGUE_LABEL.len() + 3 + binding.len());
    out.extend_from_slice(PROLOGUE_LABEL);
    out.extend_from_slice(&[PROTOCOL_VERSION, pattern as u8, mode as u8]);
    out.extend_from_slice(binding);
    out
}

fn params(pattern: Pattern) -> NoiseParams {
    match pattern {
        Pattern::Xk => XK.clone(),
        Pattern::Kk => KK.clone(),
    }
}

/// A Noise builder for `pattern` that knows `local`'s static key pair.
fn builder(pattern: Pattern, local: &Keypair) -> snow::Builder<'static> {
    let resolver = StaticKeyResolver::new(local.x25519_secret(), local.x25519_public());
    snow::Builder::with_resolver(params(pattern), Box::new(resolver))
}

fn context(pattern: Pattern) -> Context {
    match pattern {
        Pattern::Xk => Context::Session,
        Pattern::Kk => Context::Stream,
    }
}

fn write(hs: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut out = vec![0u8; MAX_HANDSHAKE_MESSAGE];
    let len = hs.write_message(payload, &mut out)?;
    out.truncate(len);
    Ok(out)
}

fn read(
    hs: &mut snow::HandshakeState,
    message: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HandshakeError> {
    if message.len() > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::MessageTooLong(message.len()));
    }
    let mut payload = Zeroizing::new(vec![0u8; message.len()]);
    let len = hs.read_message(message, &mut payload)?;
    payload.truncate(len);
    Ok(payload)
}

fn finish(
    mut hs: snow::HandshakeState,
    pattern: Pattern,
    initiator: bool,
    remote: PublicKey,
    pq_secret: Option<&[u8; 32]>,
) -> HandshakeOutcome {
    let hash = hs.get_handshake_hash().to_vec();
    let keys = rekey(
        context(pattern),
        initiator,
        &hash,
        hs.dangerously_get_raw_split(),
        pq_secret,
    );
    HandshakeOutcome {
        remote,
        pq: if pq_secret.is_some() {
            PqStatus::Hybrid
        } else {
            PqStatus::Classical
        },
        keys,
    }
}

/// Starts a handshake as initiator: returns the state expecting message 2, and message 1.
///
/// `mode` is what the initiator offers; for `KK`, `binding` is the encoded (src, dst)
/// addresses, so a relay cannot point the stream elsewhere.
pub fn initiate(
    pattern: Pattern,
    local: &Keypair,
    remote: PublicKey,
    mode: Mode,
    binding: &[u8],
) -> Result<(ExpectAnswer, Vec<u8>), HandshakeError> {
    let secret = local.x25519_secret();
    let remote_x = remote.to_x25519();
    let prologue = prologue(pattern, mode, binding);
    let builder = builder(pattern, local)
        .local_private_key(secret.as_ref())?
        .remote_public_key(&remote_x)?
        .prologue(&prologue)?;
    let mut hs = builder.build_initiator()?;
    let (kem, offer) = match mode {
        Mode::Hybrid => {
            let (kem, ek) = KemKeypair::generate();
            (Some(kem), kem_payload(&ek))
        }
        Mode::Classical => (None, Vec::new()),
    };
    let message = write(&mut hs, &offer)?;
    Ok((
        ExpectAnswer {
            hs,
            pattern,
            kem,
            local: local.public(),
            remote,
        },
        message,
    ))
}

/// Initiator, message 1 sent, expecting message 2.
pub struct ExpectAnswer {
    hs: snow::HandshakeState,
    pattern: Pattern,
    kem: Option<KemKeypair>,
    local: PublicKey,
    remote: PublicKey,
}

impl ExpectAnswer {
    /// Makes message 3 claim `identity` instead of this node's key: what a hostile initiator
    /// does (tests only: feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn claim_identity(&mut self, identity: PublicKey) {
        self.local = identity;
    }
}

/// What the initiator has after message 2: for `XK`, message 3 still to send.
pub struct Answered {
    /// `XK` message 3 (None for `KK`).
    pub confirm: Option<Vec<u8>>,
    /// The completed handshake.
    pub outcome: HandshakeOutcome,
}

impl ExpectAnswer {
    /// Reads message 2 and completes the handshake (writing `XK` message 3).
    pub fn read_answer(mut self, message: &[u8]) -> Result<Answered, HandshakeError> {
        let payload = read(&mut self.hs, message)?;
        let answer = parse_answer(&payload)?;
        let secret = match (answer, &self.kem) {
            (Some(ct), Some(kem)) => Some(kem.decapsulate(ct)?),
            (None, _) => None,
            // An answer to an offer never made.
            (Some(_), None) => return Err(HandshakeError::UnexpectedAnswer),
        };
        let confirm = match self.pattern {
            Pattern::Xk => {
                let confirm = Confirm {
                    pq_active: secret.is_some(),
                    identity: self.local,
                };
                Some(write(&mut self.hs, &confirm.encode())?)
            }
            Pattern::Kk => None,
        };
        let outcome = finish(self.hs, self.pattern, true, self.remote, secret.as_deref());
        Ok(Answered { confirm, outcome })
    }
}

/// Responds to message 1: returns message 2 and what comes next.
///
/// `remote` is the initiator's key for `KK` (known in advance) and `None` for `XK` (learned
/// from message 3). `pq_enabled` false makes this end classical-only: it ignores an offer.
pub fn respond(
    pattern: Pattern,
    local: &Keypair,
    remote: Option<PublicKey>,
    mode: Mode,
    binding: &[u8],
    message: &[u8],
    pq_enabled: bool,
) -> Result<Responded, HandshakeError> {
    let secret = local.x25519_secret();
    let prologue = prologue(pattern, mode, binding);
    let remote_x = remote.map(|pk| pk.to_x25519());
    let mut builder = builder(pattern, local)
        .local_private_key(secret.as_ref())?
        .prologue(&prologue)?;
    if let Some(remote_x) = &remote_x {
        builder = builder.remote_public_key(remote_x)?;
    }
    let mut hs = builder.build_responder()?;
    let payload = read(&mut hs, message)?;
    let offer = parse_offer(&payload)?;
    // The mode is in the prologue, so both ends agree on it; the payload must match it.
    if offer.is_some() != (mode == Mode::Hybrid) {
        return Err(HandshakeError::OfferMismatch);
    }
    let (answer, pq_secret) = match offer {
        Some(ek) if pq_enabled => {
            let (ct, shared) = encapsulate(ek)?;
            (kem_payload(&ct), Some(shared))
        }
        _ => (Vec::new(), None),
    };
    let reply = write(&mut hs, &answer)?;
    let next = match (pattern, remote) {
        (Pattern::Kk, Some(remote)) => {
            ResponderNext::Done(finish(hs, pattern, false, remote, pq_secret.as_deref()))
        }
        (Pattern::Kk, None) => return Err(HandshakeError::MissingRemote),
        (Pattern::Xk, _) => ResponderNext::ExpectConfirm(Box::new(ExpectConfirm { hs, pq_secret })),
    };
    Ok(Responded { reply, next })
}

/// The responder's message 2 and what comes next.
pub struct Responded {
    /// Message 2.
    pub reply: Vec<u8>,
    /// Done (`KK`) or waiting for message 3 (`XK`).
    pub next: ResponderNext,
}

/// What the responder does after message 2.
pub enum ResponderNext {
    /// `KK`: complete.
    Done(HandshakeOutcome),
    /// `XK`: waiting for message 3 (boxed: the Noise state is large).
    ExpectConfirm(Box<ExpectConfirm>),
}

/// `XK` responder waiting for message 3.
pub struct ExpectConfirm {
    hs: snow::HandshakeState,
    pq_secret: Option<Zeroizing<[u8; 32]>>,
}

impl ExpectConfirm {
    /// Reads message 3: learns and checks the initiator's identity and its view of PQ.
    pub fn read_confirm(mut self, message: &[u8]) -> Result<HandshakeOutcome, HandshakeError> {
        let payload = read(&mut self.hs, message)?;
        let confirm = Confirm::decode(&payload)?;
        let remote_static = self
            .hs
            .get_remote_static()
            .ok_or(HandshakeError::MissingRemote)?;
        if confirm.identity.to_x25519() != remote_static {
            return Err(HandshakeError::IdentityMismatch);
        }
        if confirm.pq_active != self.pq_secret.is_some() {
            return Err(HandshakeError::PqMismatch);
        }
        Ok(finish(
            self.hs,
            Pattern::Xk,
            false,
            confirm.identity,
            self.pq_secret.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests;
