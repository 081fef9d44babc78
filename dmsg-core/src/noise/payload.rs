//! Handshake payloads (PROTOCOL.md §4.3).
//!
//! ```text
//! offer  (message 1): empty                       | 0x01 ‖ ML-KEM-768 encapsulation key[1184]
//! answer (message 2): empty                       | 0x01 ‖ ML-KEM-768 ciphertext[1088]
//! confirm (XK message 3): flags u8 (bit 0 = PQ active) ‖ initiator Ed25519 key[32]
//! ```

use super::pq::{CT_LEN, EK_LEN};
use crate::identity::{PUBLIC_KEY_LEN, PublicKey};

/// KEM identifier for ML-KEM-768.
pub const KEM_MLKEM768: u8 = 0x01;
/// Length of a hybrid offer.
pub const OFFER_LEN: usize = 1 + EK_LEN;
/// Length of a hybrid answer.
pub const ANSWER_LEN: usize = 1 + CT_LEN;
/// Length of a confirmation.
pub const CONFIRM_LEN: usize = 1 + PUBLIC_KEY_LEN;

/// Why a handshake payload is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Wrong length for its position.
    #[error("{what} payload of {len} bytes (expected 0 or {expected})")]
    Length {
        /// Which payload.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The hybrid length.
        expected: usize,
    },
    /// A KEM this implementation does not know.
    #[error("unknown KEM {0:#04x}")]
    Kem(u8),
    /// The confirmation's key is not a valid public key.
    #[error("invalid identity key in confirmation")]
    Identity,
    /// Flag bits this version does not define are set.
    #[error("unknown flag bits {0:#04x} in the confirmation")]
    Flags(u8),
}

/// Parses an offer: `Some(encapsulation key)` or `None` (classical).
pub fn parse_offer(payload: &[u8]) -> Result<Option<&[u8]>, PayloadError> {
    parse_kem(payload, "offer", OFFER_LEN)
}

/// Parses an answer: `Some(ciphertext)` or `None` (classical).
pub fn parse_answer(payload: &[u8]) -> Result<Option<&[u8]>, PayloadError> {
    parse_kem(payload, "answer", ANSWER_LEN)
}

fn parse_kem<'a>(
    payload: &'a [u8],
    what: &'static str,
    expected: usize,
) -> Result<Option<&'a [u8]>, PayloadError> {
    match payload {
        [] => Ok(None),
        [kem, rest @ ..] if payload.len() == expected => {
            if *kem == KEM_MLKEM768 {
                Ok(Some(rest))
            } else {
                Err(PayloadError::Kem(*kem))
            }
        }
        _ => Err(PayloadError::Length {
            what,
            len: payload.len(),
            expected,
        }),
    }
}

/// Builds a KEM payload: the KEM id then the key or ciphertext.
pub(crate) fn kem_payload(material: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + material.len());
    out.push(KEM_MLKEM768);
    out.extend_from_slice(material);
    out
}

/// A confirmation: whether the initiator sees PQ active, and its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The initiator's view of PQ.
    pub pq_active: bool,
    /// The initiator's Ed25519 identity.
    pub identity: PublicKey,
}

impl Confirm {
    /// Wire bytes.
    pub fn encode(&self) -> [u8; CONFIRM_LEN] {
        let mut out = [0u8; CONFIRM_LEN];
        out[0] = u8::from(self.pq_active);
        out[1..].copy_from_slice(self.identity.as_bytes());
        out
    }

    /// Parses a confirmation.
    pub fn decode(payload: &[u8]) -> Result<Self, PayloadError> {
        if payload.len() != CONFIRM_LEN {
            return Err(PayloadError::Length {
                what: "confirmation",
                len: payload.len(),
                expected: CONFIRM_LEN,
            });
        }
        // Bits 1–7 are not defined: refused, so a later meaning cannot be mistaken for today's.
        let flags = payload[0];
        if flags & !1 != 0 {
            return Err(PayloadError::Flags(flags & !1));
        }
        let identity = PublicKey::from_slice(&payload[1..]).map_err(|_| PayloadError::Identity)?;
        Ok(Self {
            pq_active: flags & 1 == 1,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// PROTOCOL.md §4.3: confirmation flag bits 1–7 are refused (the review sent 0xff).
    #[test]
    fn undefined_confirmation_flags_are_refused() {
        let identity = dmsg_core_identity();
        let mut payload = Confirm {
            pq_active: true,
            identity,
        }
        .encode();
        assert_eq!(Confirm::decode(&payload).unwrap().identity, identity);
        for flags in [0x02u8, 0x80, 0xff] {
            payload[0] = flags;
            assert_eq!(
                Confirm::decode(&payload),
                Err(PayloadError::Flags(flags & !1))
            );
        }
    }

    fn dmsg_core_identity() -> PublicKey {
        crate::identity::Keypair::generate().public()
    }

    /// PROTOCOL.md §4.3.
    #[test]
    fn payloads_parse_by_length_and_kem() {
        assert_eq!(parse_offer(&[]), Ok(None));
        let offer = kem_payload(&[7u8; EK_LEN]);
        assert_eq!(parse_offer(&offer), Ok(Some(&[7u8; EK_LEN][..])));
        assert!(matches!(
            parse_offer(&offer[..100]),
            Err(PayloadError::Length { .. })
        ));
        let mut other_kem = offer.clone();
        other_kem[0] = 9;
        assert_eq!(parse_offer(&other_kem), Err(PayloadError::Kem(9)));
        let answer = kem_payload(&[1u8; CT_LEN]);
        assert_eq!(
            parse_answer(&answer).unwrap().map(<[u8]>::len),
            Some(CT_LEN)
        );
    }

    proptest! {
        /// Arbitrary bytes never panic the payload parsers.
        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(Some(ek)) = parse_offer(&bytes) {
                prop_assert_eq!(ek.len(), EK_LEN);
            }
            if let Ok(Some(ct)) = parse_answer(&bytes) {
                prop_assert_eq!(ct.len(), CT_LEN);
            }
            let _ = Confirm::decode(&bytes);
        }
    }
}
