//! Session frames: a 10-byte header, a body, a 16-byte tag (PROTOCOL.md §5).
//!
//! ```text
//!  0      1       2                6                10
//!  | type | flags | stream id u32  | body len u32   | body … | tag (16) |
//! ```
//! The header is always authenticated; control bodies are encrypted, DATA bodies are carried
//! as they are (they are end-to-end records already).

use super::{HEADER_LEN, MAX_CONTROL_BODY, MAX_DATA_BODY, MAX_REASON_LEN, TAG_LEN};

/// DATA flag: the sender finished its direction of the stream with this frame.
pub const FIN: u8 = 0x01;

/// Frame types (PROTOCOL.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Opens a stream; body: a [`super::StreamRequest`].
    Open = 0x01,
    /// Accepts a stream; body: an [`super::AcceptBody`].
    Accept = 0x02,
    /// Refuses a stream; body: a [`super::ReasonBody`].
    Reject = 0x03,
    /// Stream payload; body: one end-to-end record, carried unencrypted by the session.
    Data = 0x04,
    /// Grants credit; body: increment `u32`. Stream 0 means the session.
    Window = 0x05,
    /// Aborts a stream; body: code `u16`.
    Reset = 0x06,
    /// Liveness probe; body: opaque `u64`.
    Ping = 0x07,
    /// Answer to a ping; body: the ping's `u64`.
    Pong = 0x08,
    /// Ends the session; body: a [`super::ReasonBody`].
    GoAway = 0x09,
    /// The responder accepted the session (its first frame); body: empty.
    Ready = 0x0a,
    /// The sender stopped reading a stream: stop sending on it; body: code `u16`. What
    /// either side already sent the other is still delivered (PROTOCOL.md §6.2).
    Stop = 0x0b,
}

impl FrameType {
    fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Open,
            0x02 => Self::Accept,
            0x03 => Self::Reject,
            0x04 => Self::Data,
            0x05 => Self::Window,
            0x06 => Self::Reset,
            0x07 => Self::Ping,
            0x08 => Self::Pong,
            0x09 => Self::GoAway,
            0x0a => Self::Ready,
            0x0b => Self::Stop,
            _ => return None,
        })
    }

    /// True if the body is encrypted by the session (all types but DATA).
    pub fn is_sealed(self) -> bool {
        self != Self::Data
    }

    /// The allowed body lengths, inclusive.
    fn body_len_range(self) -> (usize, usize) {
        match self {
            Self::Open | Self::Accept => (1, MAX_CONTROL_BODY),
            Self::Reject | Self::GoAway => (3, 3 + MAX_REASON_LEN),
            Self::Data => (0, MAX_DATA_BODY),
            Self::Window => (4, 4),
            Self::Reset | Self::Stop => (2, 2),
            Self::Ping | Self::Pong => (8, 8),
            Self::Ready => (0, 0),
        }
    }

    /// Whether the frame belongs to a stream (non-zero id) or to the session (id 0).
    fn stream_rule(self) -> StreamRule {
        match self {
            Self::Ping | Self::Pong | Self::GoAway | Self::Ready => StreamRule::Zero,
            Self::Window => StreamRule::Any,
            _ => StreamRule::NonZero,
        }
    }
}

enum StreamRule {
    Zero,
    NonZero,
    Any,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub ty: FrameType,
    /// Flags ([`FIN`] on DATA; zero otherwise).
    pub flags: u8,
    /// The stream, or 0 for session frames.
    pub stream: u32,
    /// Body length in bytes (the tag is not counted).
    pub body_len: usize,
}

impl Header {
    /// Bytes the whole frame takes on the wire.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len + TAG_LEN
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.ty as u8;
        out[1] = self.flags;
        out[2..6].copy_from_slice(&self.stream.to_be_bytes());
        // body_len is bounded by MAX_DATA_BODY, far below u32::MAX.
        out[6..10].copy_from_slice(&(self.body_len as u32).to_be_bytes());
        out
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Unknown frame type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Flags set that the type does not allow.
    #[error("flags {flags:#04x} not allowed on {ty:?}")]
    BadFlags {
        /// The frame type.
        ty: FrameType,
        /// The flags.
        flags: u8,
    },
    /// Body length outside what the type allows.
    #[error("{ty:?} body of {len} bytes is outside {min}..={max}")]
    BadLength {
        /// The frame type.
        ty: FrameType,
        /// The declared length.
        len: u64,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// Stream id not allowed for the type.
    #[error("{ty:?} frame on stream {stream} (session frames use 0, stream frames do not)")]
    BadStream {
        /// The frame type.
        ty: FrameType,
        /// The stream id.
        stream: u32,
    },
}

/// Checks the start of `buf` for a frame without allocating (PROTOCOL.md §5.1).
///
/// Returns `Ok(None)` if more bytes are needed, `Ok(Some(header))` once
/// `header.frame_len()` bytes are present, and an error as soon as the header is invalid —
/// a declared length beyond the type's maximum is refused before its body is awaited.
pub fn check_frame(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let ty = FrameType::from_u8(head[0]).ok_or(FrameError::UnknownType(head[0]))?;
    let flags = head[1];
    let allowed_flags = if ty == FrameType::Data { FIN } else { 0 };
    if flags & !allowed_flags != 0 {
        return Err(FrameError::BadFlags { ty, flags });
    }
    let stream = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    let stream_ok = match ty.stream_rule() {
        StreamRule::Zero => stream == 0,
        StreamRule::NonZero => stream != 0,
        StreamRule::Any => true,
    };
    if !stream_ok {
        return Err(FrameError::BadStream { ty, stream });
    }
    let declared = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
    let (min, max) = ty.body_len_range();
    let body_len = declared as usize;
    if body_len < min || body_len > max {
        return Err(FrameError::BadLength {
            ty,
            len: declared.into(),
            min,
            max,
        });
    }
    let header = Header {
        ty,
        flags,
        stream,
        body_len,
    };
    Ok((buf.len() >= header.frame_len()).then_some(header))
}

#[cfg(test)]
mod tests;
