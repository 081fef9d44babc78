//! The session multiplexer as a state machine with no IO and no clock (PROTOCOL.md §5–§8).
//!
//! Feed received bytes to [`Mux::handle_input`] and expired timers to [`Mux::handle_timeout`];
//! issue commands ([`Mux::open_stream`], [`Mux::send_data`], [`Mux::recv`], …); then collect
//! the results: [`Mux::take_output`] for bytes to write, [`Mux::poll_event`] for what happened,
//! [`Mux::poll_timeout`] for when to call back. Every input takes `now`.
//!
//! Frames are sealed with the session keys: control bodies are encrypted, the header of every
//! frame is authenticated, and DATA bodies — end-to-end records already — are carried as they
//! are, so a relay moves them with a copy and no AEAD pass over the payload.

mod ping;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

pub use ping::PingConfig;
use ping::{PingAction, PingState};
use stream::{Chunk, Phase, StreamState};

use crate::noise::{Aead, AeadError, HandshakeOutcome};
use crate::wire::{
    self, Code, FIN, FrameError, FrameType, HANDSHAKE_TIMEOUT, HEADER_LEN, Header,
    INITIAL_SESSION_WINDOW, INITIAL_STREAM_WINDOW, MAX_DATA_BODY, MAX_WINDOW, ReasonBody, TAG_LEN,
};

/// Which end of the session this mux is; it decides stream id parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The session's initiator (client): opens odd stream ids.
    Initiator,
    /// The session's responder (server): opens even stream ids.
    Responder,
}

/// Mux settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuxConfig {
    /// Receive window per stream (at least [`INITIAL_STREAM_WINDOW`]).
    pub stream_window: u32,
    /// Receive window for the whole session (at least [`INITIAL_SESSION_WINDOW`]).
    pub session_window: u32,
    /// Streams open at once on this session (both directions).
    pub max_streams: usize,
    /// Liveness.
    pub ping: PingConfig,
    /// A stream this end opens must be answered within this; if not, it is reset
    /// (CANCELLED) and reported as [`MuxEvent::OpenTimedOut`] — a timer of the mux, like
    /// the pings (PROTOCOL.md §6.1).
    pub open_timeout: Duration,
}

impl Default for MuxConfig {
    /// 256 KiB per stream, 16 MiB per session, 4096 streams, default pings, 5 s opens.
    fn default() -> Self {
        Self {
            stream_window: INITIAL_STREAM_WINDOW,
            session_window: INITIAL_SESSION_WINDOW,
            max_streams: 4096,
            ping: PingConfig::default(),
            open_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Something that happened on the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEvent {
    /// The responder accepted the session (its first frame).
    Ready,
    /// The peer opens a stream; answer with [`Mux::accept_stream`] or [`Mux::reject_stream`].
    IncomingOpen {
        /// The new stream.
        stream: u32,
        /// The decrypted OPEN body.
        request: Bytes,
    },
    /// The peer accepted a stream this end opened.
    Accepted {
        /// The stream.
        stream: u32,
        /// The decrypted ACCEPT body.
        body: Bytes,
    },
    /// A stream this end opened was not answered within `open_timeout`: it is gone (reset,
    /// CANCELLED, to the peer).
    OpenTimedOut {
        /// The stream.
        stream: u32,
    },
    /// The peer refused a stream this end opened (the stream is gone).
    Rejected {
        /// The stream.
        stream: u32,
        /// The refusal.
        reason: ReasonBody,
    },
    /// Data or FIN arrived.
    Readable(u32),
    /// The stream got send credit.
    Writable(u32),
    /// The session got send credit: every blocked writer may proceed.
    WritableAll,
    /// The peer stopped reading a stream: sends on it fail with [`StreamError::Stopped`];
    /// what it sent is still delivered.
    Stopped {
        /// The stream.
        stream: u32,
        /// Why.
        code: Code,
    },
    /// The peer reset a stream.
    Reset {
        /// The stream.
        stream: u32,
        /// Why.
        code: Code,
    },
    /// A ping was answered.
    Pong {
        /// The round trip.
        rtt: Duration,
    },
    /// The session ended; every stream fails.
    Closed {
        /// Why.
        code: Code,
        /// Detail.
        reason: String,
        /// True if the peer ended it.
        by_peer: bool,
    },
}

/// Why the session failed while reading input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// A frame header was invalid.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame did not authenticate.
    #[error("a frame failed to authenticate")]
    Auth,
    /// A frame broke the protocol.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
}

/// Why a stream operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer reset the stream.
    #[error("stream reset by the peer: {}", .0.description())]
    Reset(Code),
    /// The peer stopped reading the stream; nothing more can be sent on it.
    #[error("the peer stopped reading the stream: {}", .0.description())]
    Stopped(Code),
    /// The session ended.
    #[error("session closed: {}", .0.description())]
    SessionClosed(Code),
    /// The stream is not known (closed, or never opened).
    #[error("unknown stream")]
    Unknown,
    /// This end already finished sending.
    #[error("the stream is finished for sending")]
    Finished,
    /// The stream is not open for data yet.
    #[error("the stream is not open")]
    NotOpen,
    /// The body could not be written (its encryption failed).
    #[error("the frame body could not be sealed")]
    SealFailed,
    /// More data than the available credit.
    #[error("{len} bytes exceed the available credit of {credit}")]
    NoCredit {
        /// Bytes asked to send.
        len: usize,
        /// Credit available.
        credit: usize,
    },
    /// The stream limit of the session is reached.
    #[error("too many streams on this session")]
    TooManyStreams,
}

/// The session multiplexer; see the module docs.
#[derive(Debug)]
pub struct Mux {
    role: Role,
    config: MuxConfig,
    send: Aead,
    recv: Aead,
    streams: HashMap<u32, StreamState>,
    next_local_id: u32,
    last_peer_id: u32,
    out: BytesMut,
    events: VecDeque<MuxEvent>,
    session_send_credit: u64,
    session_recv_allowed: u64,
    session_recv_consumed: u64,
    ping: PingState,
    /// Open deadlines of streams this end opened, earliest first (answered ones are dropped
    /// as they reach the front).
    opening: VecDeque<(Instant, u32)>,
    closed: Option<Code>,
    ready: bool,
}

impl Mux {
    /// A mux over established session ciphers. A responder queues READY at once.
    pub fn new(role: Role, config: MuxConfig, send: Aead, recv: Aead, now: Instant) -> Self {
        let config = MuxConfig {
            stream_window: config.stream_window.max(INITIAL_STREAM_WINDOW),
            session_window: config.session_window.max(INITIAL_SESSION_WINDOW),
            ..config
        };
        let mut mux = Self {
            role,
            config,
            send,
            recv,
            streams: HashMap::new(),
            next_local_id: match role {
                Role::Initiator => 1,
                Role::Responder => 2,
            },
            last_peer_id: 0,
            out: BytesMut::new(),
            events: VecDeque::new(),
            session_send_credit: u64::from(INITIAL_SESSION_WINDOW),
            session_recv_allowed: u64::from(INITIAL_SESSION_WINDOW),
            session_recv_consumed: 0,
            ping: PingState::new(config.ping, now),
            opening: VecDeque::new(),
            closed: None,
            ready: role == Role::Responder,
        };
        if role == Role::Responder {
            mux.queue(FrameType::Ready, 0, 0, &[]);
        }
        let extra = config.session_window.saturating_sub(INITIAL_SESSION_WINDOW);
        if extra > 0 {
            mux.session_recv_allowed += u64::from(extra);
            mux.queue(FrameType::Window, 0, 0, &extra.to_be_bytes());
        }
        mux
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the session ended (locally or by the peer).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session ended, if it did.
    pub fn close_code(&self) -> Option<Code> {
        self.closed
    }

    /// True once the responder's READY arrived (always true on the responder).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The last measured ping round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.ping.last_rtt()
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.out.len()
    }

    /// Takes every byte waiting to be written.
    pub fn take_output(&mut self) -> BytesMut {
        std::mem::take(&mut self.out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// When [`Mux::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let open = self.opening.front().map(|(deadline, _)| *deadline);
        match (self.ping.next_timeout(), open) {
            (Some(ping), Some(open)) => Some(ping.min(open)),
            (ping, open) => ping.or(open),
        }
    }

    /// Runs the timers due at `now`: pings and their deadlines, and open deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        match self.ping.on_timeout(now) {
            PingAction::None => {}
            PingAction::Send(value) => self.queue(FrameType::Ping, 0, 0, &value.to_be_bytes()),
            PingAction::Dead => self.close(Code::PingTimeout, "pings went unanswered"),
        }
        while let Some(&(deadline, id)) = self.opening.front() {
            if deadline > now {
                break;
            }
            self.opening.pop_front();
            if self.is_opening(id) {
                self.streams.remove(&id);
                self.queue_reset(id, Code::Cancelled);
                self.events.push_back(MuxEvent::OpenTimedOut { stream: id });
            }
        }
        self.drop_answered_opens();
    }

    /// True if `id` is a stream this end opened that has no answer yet.
    fn is_opening(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_some_and(|stream| stream.phase == Phase::LocalOpening)
    }

    /// Forgets the deadlines at the front whose streams were answered (or are gone), so the
    /// queue holds about the opens in flight.
    fn drop_answered_opens(&mut self) {
        while let Some(&(_, id)) = self.opening.front() {
            if self.is_opening(id) {
                break;
            }
            self.opening.pop_front();
        }
    }

    /// Ends the session: queues GOAWAY (if still open) and fails every stream.
    pub fn close(&mut self, code: Code, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.queue(
            FrameType::GoAway,
            0,
            0,
            &ReasonBody::new(code, reason).encode(),
        );
        self.shut(code, reason.to_owned(), false);
    }

    fn shut(&mut self, code: Code, reason: String, by_peer: bool) {
        self.closed = Some(code);
        self.events.push_back(MuxEvent::Closed {
            code,
            reason,
            by_peer,
        });
    }

    // === input ===

    /// Consumes every complete frame at the front of `input`.
    ///
    /// On a protocol violation the session is closed (GOAWAY queued) and the error returned.
    pub fn handle_input(&mut self, now: Instant, input: &mut BytesMut) -> Result<(), MuxError> {
        while self.closed.is_none() {
            let header = match wire::check_frame(input) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.close(Code::ProtocolViolation, &error.to_string());
                    return Err(error.into());
                }
            };
            let frame = input.split_to(header.frame_len());
            if let Err(error) = self.handle_frame(now, header, frame) {
                let reason = error.to_string();
                self.close(Code::ProtocolViolation, &reason);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Authenticates one frame and returns its (decrypted) body.
    fn open_frame(&mut self, header: &Header, mut frame: BytesMut) -> Result<Bytes, MuxError> {
        let mut sealed = frame.split_off(HEADER_LEN);
        let head = frame;
        if header.ty.is_sealed() {
            let len = self
                .recv
                .open(&head, &mut sealed)
                .map_err(|_| MuxError::Auth)?
                .len();
            sealed.truncate(len);
            Ok(sealed.freeze())
        } else {
            let mut tag = sealed.split_off(header.body_len);
            self.recv
                .open(&head, &mut tag)
                .map_err(|_| MuxError::Auth)?;
            Ok(sealed.freeze())
        }
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        header: Header,
        frame: BytesMut,
    ) -> Result<(), MuxError> {
        let body = self.open_frame(&header, frame)?;
        let id = header.stream;
        match header.ty {
            FrameType::Ready => {
                if self.role != Role::Initiator || self.ready {
                    return Err(MuxError::Violation("unexpected READY"));
                }
                self.ready = true;
                self.events.push_back(MuxEvent::Ready);
            }
            FrameType::Open => self.on_open(id, body)?,
            FrameType::Accept => {
                let stream = self.streams.get_mut(&id);
                match stream {
                    Some(s) if s.phase == Phase::LocalOpening => {
                        s.phase = Phase::Open;
                        self.events
                            .push_back(MuxEvent::Accepted { stream: id, body });
                        self.grant_extra_stream_window(id);
                    }
                    Some(_) => return Err(MuxError::Violation("ACCEPT for a stream not opening")),
                    // Opened, then given up on locally: tell the peer.
                    None => self.queue_reset(id, Code::Cancelled),
                }
            }
            FrameType::Reject => {
                let reason =
                    ReasonBody::decode(&body).map_err(|_| MuxError::Violation("REJECT body"))?;
                match self.streams.get(&id).map(|s| s.phase) {
                    Some(Phase::LocalOpening) => {
                        self.streams.remove(&id);
                        self.events
                            .push_back(MuxEvent::Rejected { stream: id, reason });
                    }
                    Some(_) => return Err(MuxError::Violation("REJECT for a stream not opening")),
                    None => {}
                }
            }
            FrameType::Data => self.on_data(id, header.flags & FIN != 0, body)?,
            FrameType::Window => {
                let increment = u64::from(
                    wire::decode_window(&body).map_err(|_| MuxError::Violation("WINDOW body"))?,
                );
                // Checked before it is applied: a refused grant leaves the credit as it was.
                if id == 0 {
                    let credit = self.session_send_credit + increment;
                    if credit > MAX_WINDOW {
                        return Err(MuxError::Violation("session window overflow"));
                    }
                    self.session_send_credit = credit;
                    self.events.push_back(MuxEvent::WritableAll);
                } else if let Some(stream) = self.streams.get_mut(&id) {
                    let credit = stream.send_credit + increment;
                    if credit > MAX_WINDOW {
                        return Err(MuxError::Violation("stream window overflow"));
                    }
                    stream.send_credit = credit;
                    self.events.push_back(MuxEvent::Writable(id));
                }
            }
            FrameType::Reset => {
                let code =
                    wire::decode_reset(&body).map_err(|_| MuxError::Violation("RESET body"))?;
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.reset = Some(code);
                    let dropped = stream.recv_buffered;
                    stream.recv.clear();
                    stream.recv_buffered = 0;
                    if stream.phase == Phase::LocalOpening {
                        // Refused before it was answered: same as a rejection.
                        self.streams.remove(&id);
                        self.events.push_back(MuxEvent::Rejected {
                            stream: id,
                            reason: ReasonBody::new(code, "reset before accept"),
                        });
                    } else {
                        self.events.push_back(MuxEvent::Reset { stream: id, code });
                    }
                    self.consume_session(dropped);
                }
            }
            FrameType::Stop => {
                let code =
                    wire::decode_reset(&body).map_err(|_| MuxError::Violation("STOP body"))?;
                if let Some(stream) = self.streams.get_mut(&id)
                    && stream.phase == Phase::Open
                    && stream.send_stopped.is_none()
                {
                    stream.send_stopped = Some(code);
                    self.events
                        .push_back(MuxEvent::Stopped { stream: id, code });
                }
            }
            FrameType::Ping => {
                let value =
                    wire::decode_ping(&body).map_err(|_| MuxError::Violation("PING body"))?;
                self.queue(FrameType::Pong, 0, 0, &value.to_be_bytes());
            }
            FrameType::Pong => {
                let value =
                    wire::decode_ping(&body).map_err(|_| MuxError::Violation("PONG body"))?;
                if let Some(rtt) = self.ping.on_pong(value, now) {
                    self.events.push_back(MuxEvent::Pong { rtt });
                }
            }
            FrameType::GoAway => {
                let reason =
                    ReasonBody::decode(&body).map_err(|_| MuxError::Violation("GOAWAY body"))?;
                self.shut(reason.code, reason.reason, true);
            }
        }
        Ok(())
    }

    fn is_peer_id(&self, id: u32) -> bool {
        let peer_odd = self.role == Role::Responder;
        (id % 2 == 1) == peer_odd
    }

    fn on_open(&mut self, id: u32, request: Bytes) -> Result<(), MuxError> {
        if !self.is_peer_id(id) || id <= self.last_peer_id {
            return Err(MuxError::Violation(
                "OPEN with a stream id the peer may not use",
            ));
        }
        self.last_peer_id = id;
        if self.streams.len() >= self.config.max_streams {
            let body = ReasonBody::new(Code::TooManyStreams, "stream limit reached").encode();
            self.queue(FrameType::Reject, 0, id, &body);
            return Ok(());
        }
        self.streams
            .insert(id, StreamState::new(Phase::RemoteOpening));
        self.events.push_back(MuxEvent::IncomingOpen {
            stream: id,
            request,
        });
        Ok(())
    }

    fn on_data(&mut self, id: u32, fin: bool, body: Bytes) -> Result<(), MuxError> {
        let len = body.len() as u64;
        if len > self.session_recv_allowed {
            return Err(MuxError::Violation("session window exceeded"));
        }
        // Decided before anything is counted: a violation leaves the accounting untouched.
        let fate = match self.streams.get(&id) {
            // A stream this end already closed, or one it reset or stopped reading (sent
            // before the peer saw that; more may be in flight): dropped.
            None => DataFate::Drop,
            Some(stream) if stream.reset.is_some() || stream.recv_stopped => DataFate::Drop,
            Some(stream) if stream.phase != Phase::Open || stream.recv_fin => {
                return Err(MuxError::Violation(
                    "DATA on a stream that is not open for it",
                ));
            }
            // The peer ignored this stream's window: reset just this stream.
            Some(stream) if len > stream.recv_allowed => DataFate::Overflow,
            Some(_) => DataFate::Buffer,
        };
        self.session_recv_allowed -= len;
        match fate {
            DataFate::Drop => self.consume_session(len),
            DataFate::Overflow => {
                self.consume_session(len);
                self.queue_reset(id, Code::FlowControl);
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.reset = Some(Code::FlowControl);
                }
                self.events.push_back(MuxEvent::Reset {
                    stream: id,
                    code: Code::FlowControl,
                });
            }
            DataFate::Buffer => {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.recv_allowed -= len;
                    stream.recv_buffered += len;
                    stream.recv_fin = fin;
                    stream.recv.push_back(Chunk { body, fin });
                }
                self.events.push_back(MuxEvent::Readable(id));
            }
        }
        Ok(())
    }

    // === commands ===

    /// Opens a stream with an OPEN body at `now`; the answer arrives as
    /// [`MuxEvent::Accepted`] or [`MuxEvent::Rejected`] — or, if none comes within
    /// `open_timeout`, the mux gives up: [`MuxEvent::OpenTimedOut`].
    pub fn open_stream(&mut self, now: Instant, request: &[u8]) -> Result<u32, StreamError> {
        if let Some(code) = self.closed {
            return Err(StreamError::SessionClosed(code));
        }
        if self.streams.len() >= self.config.max_streams || self.next_local_id > u32::MAX - 2 {
            return Err(StreamError::TooManyStreams);
        }
        let id = self.next_local_id;
        self.next_local_id += 2;
        self.streams
            .insert(id, StreamState::new(Phase::LocalOpening));
        self.queue(FrameType::Open, 0, id, request);
        self.drop_answered_opens();
        self.opening.push_back((now + self.config.open_timeout, id));
        Ok(id)
    }

    /// Accepts a stream the peer opened, with an ACCEPT body.
    pub fn accept_stream(&mut self, id: u32, body: &[u8]) -> Result<(), StreamError> {
        let stream = self.stream_mut(id)?;
        if stream.phase != Phase::RemoteOpening {
            return Err(StreamError::NotOpen);
        }
        stream.phase = Phase::Open;
        self.queue(FrameType::Accept, 0, id, body);
        self.grant_extra_stream_window(id);
        Ok(())
    }

    /// Refuses a stream the peer opened; the stream is gone afterwards.
    pub fn reject_stream(&mut self, id: u32, reason: &ReasonBody) {
        if self.closed.is_none() && self.streams.remove(&id).is_some() {
            self.queue(FrameType::Reject, 0, id, &reason.encode());
        }
    }

    /// Bytes that can be sent on `id` now (stream credit, session credit, frame limit).
    pub fn send_capacity(&self, id: u32) -> Result<usize, StreamError> {
        let stream = self.stream(id)?;
        if let Some(code) = stream.send_stopped {
            return Err(StreamError::Stopped(code));
        }
        if stream.send_fin {
            return Err(StreamError::Finished);
        }
        if stream.phase != Phase::Open {
            return Err(StreamError::NotOpen);
        }
        let credit = stream.send_credit.min(self.session_send_credit);
        Ok(usize::try_from(credit)
            .unwrap_or(usize::MAX)
            .min(MAX_DATA_BODY))
    }

    /// Takes credit for a frame of at least `min` and at most `max` bytes (within one frame),
    /// so concurrent senders on the session cannot spend it first. Returns the bytes
    /// reserved, or 0 if less than `min` is available. Spend it with [`Mux::send_reserved`]
    /// or give it back with [`Mux::unreserve`].
    pub fn reserve(&mut self, id: u32, min: usize, max: usize) -> Result<usize, StreamError> {
        let capacity = self.send_capacity(id)?;
        if capacity < min.max(1) {
            return Ok(0);
        }
        let reserved = capacity.min(max.max(min).max(1));
        let n = reserved as u64;
        self.session_send_credit -= n;
        self.stream_mut(id)?.send_credit -= n;
        Ok(reserved)
    }

    /// Gives reserved credit back.
    pub fn unreserve(&mut self, id: u32, reserved: usize) {
        if reserved == 0 {
            return;
        }
        let n = reserved as u64;
        self.session_send_credit += n;
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_credit += n;
        }
    }

    /// Sends one DATA frame against a reservation (`body` no longer than it); the unused part
    /// of the reservation is given back.
    pub fn send_reserved(
        &mut self,
        id: u32,
        reserved: usize,
        body: &[u8],
        fin: bool,
    ) -> Result<(), StreamError> {
        self.check_reserved_send(id, reserved, body.len())?;
        self.unreserve(id, reserved - body.len());
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_fin = fin;
        }
        self.queue(FrameType::Data, if fin { FIN } else { 0 }, id, body);
        Ok(())
    }

    /// Like [`Mux::send_reserved`], but `fill` writes the body (exactly `len` bytes) straight
    /// into the output buffer — an end-to-end record is sealed in place, with no extra copy.
    /// `fill` returns false if it failed; nothing is sent then.
    pub fn send_reserved_with(
        &mut self,
        id: u32,
        reserved: usize,
        len: usize,
        fin: bool,
        fill: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Result<(), StreamError> {
        self.check_reserved_send(id, reserved, len)?;
        self.unreserve(id, reserved - len);
        if self.closed.is_some() {
            return Err(StreamError::SessionClosed(
                self.closed.unwrap_or(Code::SessionClosed),
            ));
        }
        let flags = if fin { FIN } else { 0 };
        match seal_frame_with(
            &mut self.send,
            &mut self.out,
            FrameType::Data,
            flags,
            id,
            len,
            fill,
        ) {
            Ok(true) => {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.send_fin = fin;
                }
                Ok(())
            }
            Ok(false) => {
                self.unreserve(id, len);
                Err(StreamError::SealFailed)
            }
            Err(AeadError) => {
                self.shut(
                    Code::ProtocolViolation,
                    "session nonces exhausted".into(),
                    false,
                );
                Err(StreamError::SessionClosed(Code::ProtocolViolation))
            }
        }
    }

    /// Checks that `len` bytes may be sent on `id` against `reserved`; gives the reservation
    /// back if not.
    fn check_reserved_send(
        &mut self,
        id: u32,
        reserved: usize,
        len: usize,
    ) -> Result<(), StreamError> {
        if len > reserved {
            self.unreserve(id, reserved);
            return Err(StreamError::NoCredit {
                len,
                credit: reserved,
            });
        }
        let refused = match self.stream(id) {
            Err(error) => Some(error),
            Ok(stream) => match stream.send_stopped {
                Some(code) => Some(StreamError::Stopped(code)),
                None => stream.send_fin.then_some(StreamError::Finished),
            },
        };
        match refused {
            Some(error) => {
                self.unreserve(id, reserved);
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Sends one DATA frame (`body` within [`Mux::send_capacity`]); `fin` ends this direction.
    pub fn send_data(&mut self, id: u32, body: &[u8], fin: bool) -> Result<(), StreamError> {
        let credit = self.send_capacity(id)?;
        if body.len() > credit {
            return Err(StreamError::NoCredit {
                len: body.len(),
                credit,
            });
        }
        let len = body.len() as u64;
        self.session_send_credit -= len;
        let stream = self.stream_mut(id)?;
        stream.send_credit -= len;
        stream.send_fin = fin;
        self.queue(FrameType::Data, if fin { FIN } else { 0 }, id, body);
        Ok(())
    }

    /// Takes the next received chunk of `id`: `Ok(Some((body, fin)))`, or `Ok(None)` if
    /// nothing has arrived yet. Reading grants the peer credit back as it goes.
    pub fn recv(&mut self, id: u32) -> Result<Option<(Bytes, bool)>, StreamError> {
        let window = u64::from(self.config.stream_window);
        let stream = self.stream_mut(id)?;
        let Some(chunk) = stream.recv.pop_front() else {
            if let Some(code) = stream.reset {
                return Err(StreamError::Reset(code));
            }
            return Ok(None);
        };
        let len = chunk.body.len() as u64;
        stream.recv_buffered -= len;
        stream.recv_consumed += len;
        let grant = (!chunk.fin && stream.recv_consumed >= window / 2).then(|| {
            let grant = stream.recv_consumed;
            stream.recv_allowed += grant;
            stream.recv_consumed = 0;
            grant
        });
        if let Some(grant) = grant {
            self.queue_window(id, grant);
        }
        self.consume_session(len);
        Ok(Some((chunk.body, chunk.fin)))
    }

    /// True once `id` received FIN and the reader took everything before it.
    pub fn recv_finished(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_some_and(|s| s.recv_fin && s.recv.is_empty())
    }

    /// The code of the peer's STOP on `id`, if it stopped reading.
    pub fn send_stopped(&self, id: u32) -> Option<Code> {
        self.streams.get(&id).and_then(|s| s.send_stopped)
    }

    /// True if `id` has received data waiting.
    pub fn has_data(&self, id: u32) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.recv.is_empty())
    }

    /// Resets a stream (this end gives up on it); the stream is gone afterwards.
    pub fn reset_stream(&mut self, id: u32, code: Code) {
        if let Some(stream) = self.streams.remove(&id) {
            if stream.reset.is_none() && !stream.is_done() {
                self.queue_reset(id, code);
            }
            self.consume_session(stream.recv_buffered);
        }
    }

    /// Stops reading `id`: the peer is told (STOP with `code`) to send no more, what is
    /// buffered is dropped and what still arrives is discarded. Sending is not affected.
    pub fn stop_stream(&mut self, id: u32, code: Code) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.phase != Phase::Open || stream.recv_finished() || stream.reset.is_some() {
            return;
        }
        stream.recv_stopped = true;
        let dropped = std::mem::take(&mut stream.recv_buffered);
        stream.recv.clear();
        self.queue(FrameType::Stop, 0, id, &code.number().to_be_bytes());
        self.consume_session(dropped);
    }

    /// Forgets a stream whose handle is gone (PROTOCOL.md §6.2).
    ///
    /// If this end finished sending, nothing it sent is lost: the stream is forgotten,
    /// with a STOP ([`Code::Cancelled`]) if the peer may still send. If it had not finished
    /// sending, the stream is aborted with a RESET ([`Code::Cancelled`]) — the peer cannot
    /// tell a truncated stream from a complete one otherwise.
    pub fn release_stream(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        let graceful = stream.phase == Phase::Open && stream.send_finished();
        if !graceful || stream.reset.is_some() {
            self.reset_stream(id, Code::Cancelled);
            return;
        }
        self.stop_stream(id, Code::Cancelled);
        if let Some(stream) = self.streams.remove(&id) {
            self.consume_session(stream.recv_buffered);
        }
    }

    // === internals ===

    fn stream(&self, id: u32) -> Result<&StreamState, StreamError> {
        if let Some(code) = self.closed {
            return Err(StreamError::SessionClosed(code));
        }
        let stream = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        match stream.reset {
            Some(code) => Err(StreamError::Reset(code)),
            None => Ok(stream),
        }
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut StreamState, StreamError> {
        if let Some(code) = self.closed {
            return Err(StreamError::SessionClosed(code));
        }
        let stream = self.streams.get_mut(&id).ok_or(StreamError::Unknown)?;
        // A reset stream may still be drained of what arrived before the reset.
        if stream.reset.is_some() && stream.recv.is_empty() {
            return Err(StreamError::Reset(stream.reset.unwrap_or(Code::Cancelled)));
        }
        Ok(stream)
    }

    /// Grants credit above the protocol's initial window once a stream opens.
    fn grant_extra_stream_window(&mut self, id: u32) {
        let extra = self
            .config
            .stream_window
            .saturating_sub(INITIAL_STREAM_WINDOW);
        if extra > 0
            && let Some(stream) = self.streams.get_mut(&id)
        {
            stream.recv_allowed += u64::from(extra);
            self.queue_window(id, u64::from(extra));
        }
    }

    /// Counts bytes taken from the session window and grants them back when half is used.
    fn consume_session(&mut self, len: u64) {
        self.session_recv_consumed += len;
        if self.session_recv_consumed >= u64::from(self.config.session_window) / 2 {
            let grant = self.session_recv_consumed;
            self.session_recv_consumed = 0;
            self.session_recv_allowed += grant;
            self.queue_window(0, grant);
        }
    }

    fn queue_window(&mut self, id: u32, grant: u64) {
        // Grants never exceed the configured window, which is a u32.
        let grant = u32::try_from(grant).unwrap_or(u32::MAX);
        self.queue(FrameType::Window, 0, id, &grant.to_be_bytes());
    }

    fn queue_reset(&mut self, id: u32, code: Code) {
        self.queue(FrameType::Reset, 0, id, &code.number().to_be_bytes());
    }

    /// Seals and queues one frame. After the session closed nothing more goes out.
    fn queue(&mut self, ty: FrameType, flags: u8, stream: u32, body: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        if seal_frame(&mut self.send, &mut self.out, ty, flags, stream, body).is_err() {
            // 2^64 frames sent: the keys are spent. End the session.
            self.shut(
                Code::ProtocolViolation,
                "session nonces exhausted".into(),
                false,
            );
        }
    }
}

/// What becomes of a received DATA body.
enum DataFate {
    /// Dropped, its session credit given back.
    Drop,
    /// Beyond the stream's window: the stream is reset.
    Overflow,
    /// Buffered for the reader.
    Buffer,
}

/// Appends one sealed frame to `out` (PROTOCOL.md §5.3): the header in clear and
/// authenticated, the body encrypted unless it is DATA, then the tag.
pub(crate) fn seal_frame(
    send: &mut Aead,
    out: &mut BytesMut,
    ty: FrameType,
    flags: u8,
    stream: u32,
    body: &[u8],
) -> Result<(), AeadError> {
    seal_frame_with(send, out, ty, flags, stream, body.len(), |out| {
        out.extend_from_slice(body);
        true
    })
    .map(|_| ())
}

/// Appends one sealed frame whose body (`len` bytes) `fill` appends to `out` itself.
/// Returns `Ok(false)` (and leaves `out` as it was) if `fill` failed or wrote another length.
pub(crate) fn seal_frame_with(
    send: &mut Aead,
    out: &mut BytesMut,
    ty: FrameType,
    flags: u8,
    stream: u32,
    len: usize,
    fill: impl FnOnce(&mut BytesMut) -> bool,
) -> Result<bool, AeadError> {
    let header = Header {
        ty,
        flags,
        stream,
        body_len: len,
    }
    .encode();
    let start = out.len();
    out.reserve(HEADER_LEN + len + TAG_LEN);
    out.extend_from_slice(&header);
    if !fill(out) || out.len() != start + HEADER_LEN + len {
        out.truncate(start);
        return Ok(false);
    }
    let sealed = if ty.is_sealed() {
        send.seal(&header, &mut out[start + HEADER_LEN..])
    } else {
        send.seal(&header, &mut [])
    };
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(true)
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

/// A lone sealed GOAWAY under a completed handshake's keys, for a responder refusing the
/// session right after its handshake (PROTOCOL.md §4.5): the peer gets a typed reason.
pub fn refusal_frame(outcome: &HandshakeOutcome, code: Code, reason: &str) -> BytesMut {
    let mut send = outcome.send_cipher();
    let mut out = BytesMut::new();
    // A fresh cipher cannot have exhausted its nonces.
    let _ = seal_frame(
        &mut send,
        &mut out,
        FrameType::GoAway,
        0,
        0,
        &ReasonBody::new(code, reason).encode(),
    );
    out
}

/// Drivers that feed a mux fuzzer-chosen frames sealed with its real keys (not for real
/// sessions).
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests;
