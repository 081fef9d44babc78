//! Drivers that get fuzzer-chosen input past the session AEAD, so frame handling, window
//! accounting and stream state transitions are what is exercised (not the tag check).
//!
//! Shared by the cargo-fuzz targets in `../fuzz` and by proptests in `cargo test`: each takes
//! arbitrary bytes, interprets them, and panics only if an invariant breaks.
//! Not for real sessions: the keys are fixed constants.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::{Mux, MuxConfig, MuxEvent, PingConfig, Role, seal_frame};
use crate::noise::Aead;
use crate::wire::{Code, FrameType, MAX_DATA_BODY, MAX_WINDOW, ReasonBody};

const INITIATOR_KEY: [u8; 32] = [1; 32];
const RESPONDER_KEY: [u8; 32] = [2; 32];

/// A mux whose keys are fixed constants (what [`sealed_frames`] seals with is the peer's
/// send key of this pair).
pub fn session(role: Role) -> Mux {
    let (send, recv) = match role {
        Role::Initiator => (INITIATOR_KEY, RESPONDER_KEY),
        Role::Responder => (RESPONDER_KEY, INITIATOR_KEY),
    };
    Mux::new(
        role,
        config(),
        Aead::new(&send),
        Aead::new(&recv),
        Instant::now(),
    )
}

fn config() -> MuxConfig {
    MuxConfig {
        // Small windows and few streams, so short inputs reach the limits.
        stream_window: crate::wire::INITIAL_STREAM_WINDOW,
        session_window: crate::wire::INITIAL_SESSION_WINDOW,
        max_streams: 8,
        ping: PingConfig::every(Duration::from_secs(10)),
        open_timeout: Duration::from_secs(5),
    }
}

/// The frame types, indexed by a fuzzer byte.
const TYPES: [FrameType; 11] = [
    FrameType::Open,
    FrameType::Accept,
    FrameType::Reject,
    FrameType::Data,
    FrameType::Window,
    FrameType::Reset,
    FrameType::Ping,
    FrameType::Pong,
    FrameType::GoAway,
    FrameType::Ready,
    FrameType::Stop,
];

/// Reads fuzzer bytes in order; runs dry with zeros.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let len = len.min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        taken
    }
}

/// Feeds a responder mux frames of fuzzer-chosen type, flags, stream and body, each sealed
/// with the initiator's real key, so every one passes authentication and reaches
/// `handle_frame`. Input: repeated `type u8 | flags u8 | stream u8 | len u16 | body`.
///
/// Checks: no panic; an input error leaves the mux closed; the accounting invariants hold
/// after every frame.
pub fn sealed_frames(data: &[u8]) {
    let now = Instant::now();
    let mut mux = session(Role::Responder);
    let mut seal = Aead::new(&INITIATOR_KEY);
    let mut input = Input { bytes: data };
    while !input.is_empty() && !mux.is_closed() {
        let ty = TYPES[usize::from(input.u8()) % TYPES.len()];
        let flags = input.u8() & 0x01;
        let stream = u32::from(input.u8() % 16);
        let len = usize::from(input.u16()) % (MAX_DATA_BODY + 1);
        let body = input.take(len).to_vec();
        let mut frame = BytesMut::new();
        if seal_frame(&mut seal, &mut frame, ty, flags, stream, &body).is_err() {
            return;
        }
        if mux.handle_input(now, &mut frame).is_err() {
            assert!(mux.is_closed(), "an input error leaves the session closed");
        }
        // Answer what a reader would, so the stream states keep moving.
        while let Some(event) = mux.poll_event() {
            if let MuxEvent::IncomingOpen { stream, .. } = event {
                let _ = mux.accept_stream(stream, b"ok");
            }
            if let MuxEvent::Readable(stream) = event {
                while let Ok(Some(_)) = mux.recv(stream) {}
            }
        }
        check_invariants(&mux);
    }
}

/// One end of [`pair`]: its mux, the streams it knows and the opens it has not answered.
struct End {
    mux: Mux,
    streams: Vec<u32>,
    incoming: VecDeque<u32>,
    /// Bytes it wrote that the other end has not been fed yet.
    in_flight: BytesMut,
}

impl End {
    fn stream(&self, pick: u8) -> Option<u32> {
        (!self.streams.is_empty()).then(|| self.streams[usize::from(pick) % self.streams.len()])
    }

    fn forget(&mut self, id: u32) {
        self.streams.retain(|s| *s != id);
    }

    /// Applies its events; panics if the session closed for a reason two honest ends
    /// never cause.
    fn drain_events(&mut self) {
        while let Some(event) = self.mux.poll_event() {
            match event {
                MuxEvent::IncomingOpen { stream, .. } => self.incoming.push_back(stream),
                MuxEvent::Accepted { stream, .. } => self.streams.push(stream),
                MuxEvent::Rejected { stream, .. } => self.forget(stream),
                MuxEvent::Reset { code, stream } => assert!(
                    code != Code::FlowControl,
                    "stream {stream}: an honest sender overran the window"
                ),
                MuxEvent::Closed { code, reason, .. } => assert!(
                    !matches!(code, Code::ProtocolViolation | Code::FlowControl),
                    "two honest muxes broke the protocol: {reason}"
                ),
                _ => {}
            }
        }
    }
}

/// Drives two muxes against each other with fuzzer-chosen commands — open, accept, reject,
/// send (within credit), read, stop, reset, release, deliver some bytes either way, let time
/// pass, close — delivering bytes in fuzzer-chosen pieces.
///
/// Checks after every command: no panic, neither end ever sees a protocol violation from the
/// other, windows never go negative or past their bounds, buffered bytes stay within the
/// windows.
pub fn pair(data: &[u8]) {
    let mut now = Instant::now();
    let mut a = End {
        mux: session(Role::Initiator),
        streams: Vec::new(),
        incoming: VecDeque::new(),
        in_flight: BytesMut::new(),
    };
    let mut b = End {
        mux: session(Role::Responder),
        streams: Vec::new(),
        incoming: VecDeque::new(),
        in_flight: BytesMut::new(),
    };
    let mut input = Input { bytes: data };
    while !input.is_empty() {
        let op = input.u8();
        let (this, other) = if op & 0x80 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        match op & 0x7f {
            0..=9 => {
                let request = vec![op; 1 + usize::from(input.u8() % 32)];
                if let Ok(id) = this.mux.open_stream(now, &request) {
                    let _ = id; // known once accepted
                }
            }
            10..=14 => {
                if let Some(id) = this.incoming.pop_front()
                    && this.mux.accept_stream(id, b"accept").is_ok()
                {
                    this.streams.push(id);
                }
            }
            15..=16 => {
                if let Some(id) = this.incoming.pop_front() {
                    this.mux
                        .reject_stream(id, &ReasonBody::new(Code::NoListener, "no"));
                }
            }
            17..=44 => {
                let pick = input.u8();
                let len = usize::from(input.u16()) % (MAX_DATA_BODY + 1);
                let fin = input.u8().is_multiple_of(8);
                if let Some(id) = this.stream(pick)
                    && let Ok(reserved) = this.mux.reserve(id, 1, len)
                    && reserved > 0
                {
                    let body = vec![0x5a; reserved.min(len)];
                    let _ = this.mux.send_reserved(id, reserved, &body, fin);
                }
            }
            45..=64 => {
                if let Some(id) = this.stream(input.u8()) {
                    for _ in 0..=input.u8() % 4 {
                        if !matches!(this.mux.recv(id), Ok(Some(_))) {
                            break;
                        }
                    }
                }
            }
            65..=68 => {
                if let Some(id) = this.stream(input.u8()) {
                    this.mux.stop_stream(id, Code::Cancelled);
                }
            }
            69..=71 => {
                if let Some(id) = this.stream(input.u8()) {
                    this.mux.reset_stream(id, Code::Cancelled);
                    this.forget(id);
                }
            }
            72..=76 => {
                if let Some(id) = this.stream(input.u8()) {
                    this.mux.release_stream(id);
                    this.forget(id);
                }
            }
            77..=120 => {
                // Deliver a piece of what this end wrote to the other.
                let out = this.mux.take_output();
                this.in_flight.extend_from_slice(&out);
                let piece = (usize::from(input.u16()) * 64).min(this.in_flight.len());
                let mut delivered = this.in_flight.split_to(piece);
                let _ = other.mux.handle_input(now, &mut delivered);
                // handle_input leaves a partial frame at the front: keep it for next time.
                let mut rest = delivered;
                rest.extend_from_slice(&this.in_flight);
                this.in_flight = rest;
            }
            121..=125 => {
                now += Duration::from_millis(u64::from(input.u16()) * 10);
                this.mux.handle_timeout(now);
                other.mux.handle_timeout(now);
            }
            _ => this.mux.close(Code::Normal, "done"),
        }
        a.drain_events();
        b.drain_events();
        check_invariants(&a.mux);
        check_invariants(&b.mux);
    }
}

/// The accounting invariants of one mux (PROTOCOL.md §6.1).
fn check_invariants(mux: &Mux) {
    let window = u64::from(mux.config.stream_window);
    let mut session_buffered = 0u64;
    for (id, stream) in &mux.streams {
        let queued: u64 = stream.recv.iter().map(|c| c.body.len() as u64).sum();
        assert_eq!(stream.recv_buffered, queued, "stream {id}: buffered bytes");
        assert!(
            stream.recv_buffered <= window,
            "stream {id}: {} bytes buffered beyond its window",
            stream.recv_buffered
        );
        assert!(
            stream.recv_allowed + stream.recv_buffered + stream.recv_consumed <= window,
            "stream {id}: more credit granted than the window"
        );
        assert!(
            stream.send_credit <= MAX_WINDOW,
            "stream {id}: send credit past the maximum"
        );
        session_buffered += stream.recv_buffered;
    }
    assert!(
        session_buffered <= u64::from(mux.config.session_window),
        "{session_buffered} bytes buffered beyond the session window"
    );
    assert!(mux.session_send_credit <= MAX_WINDOW);
    // Every byte of the session window is either still grantable, buffered in a stream, or
    // consumed and due to be granted back: none leaks, none is granted twice.
    assert_eq!(
        mux.session_recv_allowed + session_buffered + mux.session_recv_consumed,
        u64::from(mux.config.session_window),
        "session credit leaked or was granted twice"
    );
}
