//! The clear-text preamble that opens a session, and the responder's refusal (PROTOCOL.md §4.1).
//!
//! ```text
//! initiator → responder:  "DMSG" | version u8 | pattern u8 | mode u8
//! responder → initiator:  status u8 (0 = proceed) [| detail u8]
//! ```
//! The preamble is mixed into the Noise prologue, so a rewritten byte fails the handshake.

use super::{MAGIC, PROTOCOL_VERSION};

/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 7;

/// Which Noise pattern a handshake uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Pattern {
    /// `XK`: client ↔ server sessions.
    Xk = 0x01,
    /// `KK`: end-to-end streams.
    Kk = 0x02,
}

/// Whether the initiator offers the ML-KEM-768 hybrid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// X25519 only.
    Classical = 0x00,
    /// X25519 + ML-KEM-768.
    Hybrid = 0x01,
}

impl Mode {
    /// The mode for a byte.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0x00 => Some(Self::Classical),
            0x01 => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// The session preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Protocol version the initiator speaks.
    pub version: u8,
    /// Always [`Pattern::Xk`] for sessions.
    pub pattern: Pattern,
    /// What the initiator offers.
    pub mode: Mode,
}

/// Why a preamble is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// Not a dmsg session (wrong magic).
    #[error("not a dmsg session (bad magic)")]
    Magic,
    /// Unknown pattern byte.
    #[error("unknown handshake pattern {0:#04x}")]
    Pattern(u8),
    /// Unknown mode byte.
    #[error("unknown handshake mode {0:#04x}")]
    Mode(u8),
}

impl Preamble {
    /// A version-1 session preamble.
    pub fn session(mode: Mode) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            pattern: Pattern::Xk,
            mode,
        }
    }

    /// Wire bytes.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5] = self.pattern as u8;
        out[6] = self.mode as u8;
        out
    }

    /// Parses the 7 preamble bytes. The version is returned as sent, to be negotiated.
    pub fn decode(bytes: &[u8; PREAMBLE_LEN]) -> Result<Self, PreambleError> {
        if bytes[..4] != MAGIC {
            return Err(PreambleError::Magic);
        }
        let pattern = match bytes[5] {
            0x01 => Pattern::Xk,
            0x02 => Pattern::Kk,
            other => return Err(PreambleError::Pattern(other)),
        };
        let mode = Mode::from_u8(bytes[6]).ok_or(PreambleError::Mode(bytes[6]))?;
        Ok(Self {
            version: bytes[4],
            pattern,
            mode,
        })
    }
}

/// The responder's answer to a preamble: proceed, or refuse (PROTOCOL.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeRefusal {
    /// The responder does not speak the initiator's version; it speaks up to this one.
    #[error("the server does not speak this protocol version (it speaks up to version {0})")]
    UnsupportedVersion(u8),
    /// The responder is at its limit of concurrent handshakes.
    #[error("the server is busy (too many handshakes in progress); retry with backoff")]
    Busy,
    /// The responder requires the post-quantum hybrid and the initiator offered classical.
    #[error("the server requires a post-quantum hybrid handshake")]
    PqRequired,
    /// A status byte this implementation does not know.
    #[error("the server refused the handshake (status {0:#04x})")]
    Other(u8),
}

impl HandshakeRefusal {
    /// The status byte (and detail byte) on the wire.
    pub fn encode(&self) -> [u8; 2] {
        match *self {
            Self::UnsupportedVersion(max) => [0x01, max],
            Self::Busy => [0x02, 0],
            Self::PqRequired => [0x03, 0],
            Self::Other(status) => [status, 0],
        }
    }

    /// The refusal for a status and detail byte; `None` for status 0 (proceed).
    pub fn decode(status: u8, detail: u8) -> Option<Self> {
        match status {
            0x00 => None,
            0x01 => Some(Self::UnsupportedVersion(detail)),
            0x02 => Some(Self::Busy),
            0x03 => Some(Self::PqRequired),
            other => Some(Self::Other(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §4.1.
    #[test]
    fn preambles_round_trip_and_bad_ones_are_named() {
        let p = Preamble::session(Mode::Hybrid);
        assert_eq!(p.encode(), *b"DMSG\x01\x01\x01");
        assert_eq!(Preamble::decode(&p.encode()), Ok(p));
        assert_eq!(Preamble::decode(b"HTTP/1."), Err(PreambleError::Magic));
        assert_eq!(
            Preamble::decode(b"DMSG\x01\x09\x00"),
            Err(PreambleError::Pattern(9))
        );
        assert_eq!(
            Preamble::decode(b"DMSG\x01\x01\x07"),
            Err(PreambleError::Mode(7))
        );
        for refusal in [
            HandshakeRefusal::UnsupportedVersion(1),
            HandshakeRefusal::Busy,
            HandshakeRefusal::PqRequired,
        ] {
            let [status, detail] = refusal.encode();
            assert_eq!(HandshakeRefusal::decode(status, detail), Some(refusal));
        }
        assert_eq!(HandshakeRefusal::decode(0, 0), None);
    }
}
