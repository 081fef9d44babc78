//! The wire format: every constant, frame and body layout (PROTOCOL.md §3–§7).
//!
//! Parsing is split into a cheap `check` that validates lengths before anything is allocated
//! and a `parse` that reads the fields; every length read from the network is bounded here.

mod codes;
mod frame;
mod handshake;
mod request;

pub use codes::Code;
pub use frame::{FIN, FrameError, FrameType, Header, check_frame};
pub use handshake::{HandshakeRefusal, Mode, PREAMBLE_LEN, Pattern, Preamble, PreambleError};
pub use request::{
    AcceptBody, BodyError, ReasonBody, StreamRequest, decode_ping, decode_reset, decode_window,
};

use std::time::Duration;

/// Protocol version spoken by this implementation (PROTOCOL.md §9).
pub const PROTOCOL_VERSION: u8 = 1;
/// The four bytes that open every session (PROTOCOL.md §4.1).
pub const MAGIC: [u8; 4] = *b"DMSG";
/// Length of a frame header (PROTOCOL.md §5.1).
pub const HEADER_LEN: usize = 10;
/// Length of an authentication tag (ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// Largest DATA body: one end-to-end record (PROTOCOL.md §5.2).
pub const MAX_DATA_BODY: usize = 65_536;
/// Largest plaintext in one end-to-end record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_DATA_BODY - TAG_LEN;
/// Largest body of an OPEN or ACCEPT frame.
pub const MAX_CONTROL_BODY: usize = 4_096;
/// Largest reason text in a REJECT or GOAWAY body.
pub const MAX_REASON_LEN: usize = 255;
/// Largest Noise handshake message accepted (PROTOCOL.md §4).
pub const MAX_HANDSHAKE_MESSAGE: usize = 2_048;
/// Every stream starts with this much credit in each direction (PROTOCOL.md §6).
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// Every session starts with this much credit in each direction (PROTOCOL.md §6).
pub const INITIAL_SESSION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest credit a receiver may hold open for one stream or session.
pub const MAX_WINDOW: u64 = 1 << 31;
/// Deadline for a session or stream handshake (PROTOCOL.md §4).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of a responder's first handshake message (preamble and message 1): a connection
/// that has sent nothing by then is closed (PROTOCOL.md §10).
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a session is pinged (PROTOCOL.md §8).
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered (PROTOCOL.md §8).
pub const PING_DEADLINE: Duration = Duration::from_secs(18);
/// Consecutive unanswered pings that close a session (PROTOCOL.md §8).
pub const PING_FAILURES: u32 = 2;
/// Pending streams a listener holds before "accept queue full" (PROTOCOL.md §7).
pub const ACCEPT_BACKLOG: usize = 20;
