//! Bodies of control frames (PROTOCOL.md §7): the stream request, accept, reject/goaway,
//! window, reset and ping bodies. Every decoder checks lengths before it reads.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Code, MAX_HANDSHAKE_MESSAGE, MAX_REASON_LEN, Mode, PROTOCOL_VERSION};
use crate::addr::{DmsgAddr, Port};
use crate::identity::{PUBLIC_KEY_LEN, PublicKey};

/// Why a body does not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Shorter or longer than its fields say.
    #[error("body length {0} does not match its fields")]
    Length(usize),
    /// A version this implementation does not speak.
    #[error("unsupported request version {0}")]
    Version(u8),
    /// A key that is not a valid public key.
    #[error("invalid public key in request")]
    Key,
    /// Port 0.
    #[error("port 0 in request")]
    Port,
    /// Unknown handshake mode.
    #[error("unknown handshake mode {0:#04x}")]
    Mode(u8),
    /// A handshake message longer than allowed.
    #[error("handshake message of {0} bytes exceeds the maximum")]
    HandshakeTooLong(usize),
}

/// A stream open request: who opens a stream to whom, with the first end-to-end handshake
/// message (PROTOCOL.md §7.1).
///
/// ```text
/// version u8 | src pk[32] | src port u16 | dst pk[32] | dst port u16 | mode u8 |
/// noise len u16 | noise msg1
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The opener's address (its ephemeral port).
    pub src: DmsgAddr,
    /// The listener being dialed.
    pub dst: DmsgAddr,
    /// Whether the end-to-end handshake offers the hybrid.
    pub mode: Mode,
    /// Noise `KK` message 1.
    pub noise: Bytes,
}

/// Fixed part of a request before the Noise message.
const REQUEST_FIXED_LEN: usize = 1 + 2 * (PUBLIC_KEY_LEN + 2) + 1 + 2;

fn put_addr(out: &mut BytesMut, addr: &DmsgAddr) {
    out.put_slice(addr.pk.as_bytes());
    out.put_u16(addr.port.get());
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], usize> {
    if input.len() < n {
        return Err(input.len());
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_u16(input: &mut &[u8], total: usize) -> Result<u16, BodyError> {
    let bytes = take(input, 2).map_err(|_| BodyError::Length(total))?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn take_addr(input: &mut &[u8], total: usize) -> Result<DmsgAddr, BodyError> {
    let pk = take(input, PUBLIC_KEY_LEN).map_err(|_| BodyError::Length(total))?;
    let pk = PublicKey::from_slice(pk).map_err(|_| BodyError::Key)?;
    let port = Port::new(take_u16(input, total)?).ok_or(BodyError::Port)?;
    Ok(DmsgAddr::new(pk, port))
}

/// Reads the trailing `noise len u16 ‖ message`: the length is checked against the maximum
/// before anything is copied, and nothing may follow the message.
fn take_noise(input: &mut &[u8], total: usize) -> Result<Bytes, BodyError> {
    let noise_len = usize::from(take_u16(input, total)?);
    if noise_len > MAX_HANDSHAKE_MESSAGE {
        return Err(BodyError::HandshakeTooLong(noise_len));
    }
    if input.len() != noise_len {
        return Err(BodyError::Length(total));
    }
    Ok(Bytes::copy_from_slice(input))
}

impl StreamRequest {
    /// Wire bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(REQUEST_FIXED_LEN + self.noise.len());
        out.put_u8(PROTOCOL_VERSION);
        put_addr(&mut out, &self.src);
        put_addr(&mut out, &self.dst);
        out.put_u8(self.mode as u8);
        // Bounded by MAX_HANDSHAKE_MESSAGE when built by this crate.
        out.put_u16(self.noise.len() as u16);
        out.put_slice(&self.noise);
        out.freeze()
    }

    /// Parses a request body.
    pub fn decode(body: &[u8]) -> Result<Self, BodyError> {
        let total = body.len();
        if total < REQUEST_FIXED_LEN {
            return Err(BodyError::Length(total));
        }
        let mut input = body;
        let version = take(&mut input, 1).map_err(|_| BodyError::Length(total))?[0];
        if version != PROTOCOL_VERSION {
            return Err(BodyError::Version(version));
        }
        let src = take_addr(&mut input, total)?;
        let dst = take_addr(&mut input, total)?;
        let mode_byte = take(&mut input, 1).map_err(|_| BodyError::Length(total))?[0];
        let mode = Mode::from_u8(mode_byte).ok_or(BodyError::Mode(mode_byte))?;
        Ok(Self {
            src,
            dst,
            mode,
            noise: take_noise(&mut input, total)?,
        })
    }
}

/// An ACCEPT body: Noise `KK` message 2 (PROTOCOL.md §7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptBody {
    /// Noise `KK` message 2.
    pub noise: Bytes,
}

impl AcceptBody {
    /// Wire bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + self.noise.len());
        out.put_u16(self.noise.len() as u16);
        out.put_slice(&self.noise);
        out.freeze()
    }

    /// Parses an ACCEPT body.
    pub fn decode(body: &[u8]) -> Result<Self, BodyError> {
        let mut input = body;
        Ok(Self {
            noise: take_noise(&mut input, body.len())?,
        })
    }
}

/// A REJECT or GOAWAY body: a code and a short reason (PROTOCOL.md §7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonBody {
    /// The code.
    pub code: Code,
    /// Human-readable detail (at most 255 bytes; may be empty).
    pub reason: String,
}

impl ReasonBody {
    /// A body with `reason` cut to the maximum length on a character boundary.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self { code, reason }
    }

    /// Wire bytes.
    pub fn encode(&self) -> Bytes {
        let reason = &self.reason.as_bytes()[..self.reason.len().min(MAX_REASON_LEN)];
        let mut out = BytesMut::with_capacity(3 + reason.len());
        out.put_u16(self.code.number());
        out.put_u8(reason.len() as u8);
        out.put_slice(reason);
        out.freeze()
    }

    /// Parses a REJECT or GOAWAY body (invalid UTF-8 in the reason is replaced).
    pub fn decode(body: &[u8]) -> Result<Self, BodyError> {
        let total = body.len();
        let mut input = body;
        let code = Code::from_number(take_u16(&mut input, total)?);
        let len = usize::from(take(&mut input, 1).map_err(|_| BodyError::Length(total))?[0]);
        if input.len() != len {
            return Err(BodyError::Length(total));
        }
        Ok(Self {
            code,
            reason: String::from_utf8_lossy(input).into_owned(),
        })
    }
}

/// Parses a WINDOW body: the credit increment.
pub fn decode_window(body: &[u8]) -> Result<u32, BodyError> {
    let bytes: [u8; 4] = body.try_into().map_err(|_| BodyError::Length(body.len()))?;
    Ok(u32::from_be_bytes(bytes))
}

/// Parses a RESET body: the code.
pub fn decode_reset(body: &[u8]) -> Result<Code, BodyError> {
    let bytes: [u8; 2] = body.try_into().map_err(|_| BodyError::Length(body.len()))?;
    Ok(Code::from_number(u16::from_be_bytes(bytes)))
}

/// Parses a PING or PONG body: the opaque value.
pub fn decode_ping(body: &[u8]) -> Result<u64, BodyError> {
    let bytes: [u8; 8] = body.try_into().map_err(|_| BodyError::Length(body.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests;
