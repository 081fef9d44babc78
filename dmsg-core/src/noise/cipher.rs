//! Traffic keys: HKDF re-keying of the Noise split, and the AEAD that uses them
//! (PROTOCOL.md §4.4, §5.3, §6.3).

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::wire::TAG_LEN;

/// Which traffic a key protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Context {
    /// Session frames (client ↔ server).
    Session,
    /// End-to-end stream records (client ↔ client).
    Stream,
}

/// Traffic keys for one end of a handshake.
pub(crate) struct TrafficKeys {
    pub(crate) send: Zeroizing<[u8; 32]>,
    pub(crate) recv: Zeroizing<[u8; 32]>,
}

/// The HKDF label for one direction (PROTOCOL.md §4.4).
fn label(context: Context, hybrid: bool, initiator_to_responder: bool) -> &'static [u8] {
    match (context, hybrid, initiator_to_responder) {
        (Context::Session, true, true) => b"skywire-dmsg/1 session hybrid i2r",
        (Context::Session, true, false) => b"skywire-dmsg/1 session hybrid r2i",
        (Context::Session, false, true) => b"skywire-dmsg/1 session classical i2r",
        (Context::Session, false, false) => b"skywire-dmsg/1 session classical r2i",
        (Context::Stream, true, true) => b"skywire-dmsg/1 stream hybrid i2r",
        (Context::Stream, true, false) => b"skywire-dmsg/1 stream hybrid r2i",
        (Context::Stream, false, true) => b"skywire-dmsg/1 stream classical i2r",
        (Context::Stream, false, false) => b"skywire-dmsg/1 stream classical r2i",
    }
}

/// `HKDF-SHA256(salt = handshake hash, ikm = classical key ‖ ML-KEM secret, info = label)`.
fn derive(
    handshake_hash: &[u8],
    classical: &[u8; 32],
    pq_secret: Option<&[u8; 32]>,
    info: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(64));
    ikm.extend_from_slice(classical);
    if let Some(secret) = pq_secret {
        ikm.extend_from_slice(secret);
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, handshake_hash).extract(&ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [info];
    // A 32-byte output from HKDF-SHA256 is always within its limit.
    #[allow(clippy::expect_used)]
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("HKDF-SHA256 can always produce 32 bytes");
    out
}

/// Re-keys both directions of a Noise split (PROTOCOL.md §4.4).
pub(crate) fn rekey(
    context: Context,
    initiator: bool,
    handshake_hash: &[u8],
    split: ([u8; 32], [u8; 32]),
    pq_secret: Option<&[u8; 32]>,
) -> TrafficKeys {
    let (i2r, r2i) = (Zeroizing::new(split.0), Zeroizing::new(split.1));
    let hybrid = pq_secret.is_some();
    let i2r = derive(
        handshake_hash,
        &i2r,
        pq_secret,
        label(context, hybrid, true),
    );
    let r2i = derive(
        handshake_hash,
        &r2i,
        pq_secret,
        label(context, hybrid, false),
    );
    if initiator {
        TrafficKeys {
            send: i2r,
            recv: r2i,
        }
    } else {
        TrafficKeys {
            send: r2i,
            recv: i2r,
        }
    }
}

/// One direction of ChaCha20-Poly1305 with an implicit counter nonce (PROTOCOL.md §5.3).
pub struct Aead {
    key: LessSafeKey,
    counter: u64,
}

impl std::fmt::Debug for Aead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aead")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Authentication failed, or the nonce space is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AeadError;

impl Aead {
    /// A cipher for `key`, its counter at 0.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key");
        Self {
            key: LessSafeKey::new(unbound),
            counter: 0,
        }
    }

    /// The next nonce: 4 zero bytes then the counter, little-endian (as Noise does).
    fn next_nonce(&mut self) -> Result<Nonce, AeadError> {
        let counter = self.counter;
        self.counter = counter.checked_add(1).ok_or(AeadError)?;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Encrypts `in_out` in place, authenticating `ad` too, and returns the tag.
    pub fn seal(&mut self, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(ad), in_out)
            .map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `ciphertext ‖ tag` in place and returns the plaintext part.
    pub fn open<'a>(&mut self, ad: &[u8], in_out: &'a mut [u8]) -> Result<&'a mut [u8], AeadError> {
        let nonce = self.next_nonce()?;
        self.key
            .open_in_place(nonce, Aad::from(ad), in_out)
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_once_in_order_and_never_after_tampering() {
        let key = [9u8; 32];
        let (mut tx, mut rx) = (Aead::new(&key), Aead::new(&key));
        for message in [&b"first"[..], b"second"] {
            let mut buf = message.to_vec();
            let tag = tx.seal(b"hdr", &mut buf).unwrap();
            buf.extend_from_slice(&tag);
            assert_eq!(rx.open(b"hdr", &mut buf).unwrap(), message);
        }
        let mut buf = b"third".to_vec();
        let tag = tx.seal(b"hdr", &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        let mut tampered = buf.clone();
        tampered[0] ^= 1;
        assert_eq!(Aead::new(&key).open(b"hdr", &mut tampered), Err(AeadError));
        assert!(
            rx.open(b"other", &mut buf.clone()).is_err(),
            "the header is authenticated"
        );
    }

    /// PROTOCOL.md §4.4: the two directions, and hybrid vs classical, never share a key.
    #[test]
    fn rekeying_separates_directions_and_modes() {
        let hash = [1u8; 32];
        let split = ([2u8; 32], [3u8; 32]);
        let secret = [4u8; 32];
        let a = rekey(Context::Session, true, &hash, split, Some(&secret));
        let b = rekey(Context::Session, false, &hash, split, Some(&secret));
        assert_eq!(*a.send, *b.recv);
        assert_eq!(*a.recv, *b.send);
        assert_ne!(*a.send, *a.recv);
        let classical = rekey(Context::Session, true, &hash, split, None);
        assert_ne!(*classical.send, *a.send);
        let stream = rekey(Context::Stream, true, &hash, split, Some(&secret));
        assert_ne!(*stream.send, *a.send);
    }
}
