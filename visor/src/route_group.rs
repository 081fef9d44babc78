//! Route groups (ROUTING.md §6): an end-to-end encrypted byte stream between two visors over
//! a forward and a reverse route, with end-to-end credit flow control.
//!
//! [`RouteGroup`] is the user's handle (`AsyncRead + AsyncWrite`). Its shared state
//! ([`GroupShared`]) is what the node feeds with arriving records: records are opened on
//! arrival, so credits and closes are seen even while the reader is stalled. Dropping the
//! handle closes the group and removes its local rules — on every path, a failed dial
//! included.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use dmsg::noise::{Aead, PqStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::packet::{CloseCode, FrameType, Header, MAX_RECORD_DATA, RouteId, TAG_LEN};
use crate::router::{NextHop, TransportId};
use crate::transport::Transport;
use crate::transport::queue::OutFrame;

/// Credit each direction starts with, in bytes of DATA records as they travel (kind byte,
/// content and tag: ROUTING.md §6.4), so every hop can bound what it queues per route.
pub const ROUTE_WINDOW: usize = 1024 * 1024;
/// What a DATA record costs beyond its content: the kind byte and the tag.
pub const RECORD_OVERHEAD: usize = 1 + TAG_LEN;
/// Deadline of the route-group handshake.
pub const ROUTE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each end sends a KEEPALIVE down its forward route.
pub const ROUTE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Label of the route-group Noise binding.
const BINDING_LABEL: &[u8] = b"skywire-route/1";

/// Record kinds (ROUTING.md §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RecordKind {
    Data = 0x00,
    Credit = 0x01,
    Fin = 0x02,
    Close = 0x03,
}

/// Why a route group failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteGroupError {
    /// The other end closed the whole group.
    #[error("the other end closed the route group ({0})")]
    ClosedByPeer(CloseCode),
    /// A hop closed the route (its next transport closed, it has no rule, …).
    #[error("a hop closed the route: {0}")]
    Hop(CloseCode),
    /// A transport this visor used for the route closed.
    #[error("the transport carrying the route closed")]
    TransportClosed,
    /// A record failed to open: altered, lost or forged on the way.
    #[error("a record of the route group failed to open (altered, lost or forged on the way)")]
    BadRecord,
    /// The peer sent beyond the credit it was given.
    #[error("the peer sent beyond its window")]
    FlowControl,
    /// This end closed it.
    #[error("the route group is closed")]
    Closed,
    /// The handshake failed (the PQ policy included).
    #[error("route-group handshake failed: {0}")]
    Handshake(String),
    /// The handshake was not answered in time.
    #[error("the route-group handshake was not answered within {0:?}")]
    HandshakeTimeout(Duration),
    /// The rules given cannot make a route group.
    #[error("the rules do not make a route group: {0}")]
    BadRules(String),
    /// No transport with the forward rule's next transport ID.
    #[error("no transport {} to the first hop", hex::encode(.0))]
    NoTransport(TransportId),
    /// The visor is shutting down.
    #[error("the visor is shutting down")]
    ShuttingDown,
}

impl RouteGroupError {
    fn into_io(self) -> std::io::Error {
        let kind = match self {
            Self::BadRecord | Self::FlowControl => std::io::ErrorKind::InvalidData,
            Self::Closed => std::io::ErrorKind::NotConnected,
            Self::HandshakeTimeout(_) => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::ConnectionReset,
        };
        std::io::Error::new(kind, self)
    }
}

/// The two ends and ports of a route group, as this end sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupAddr {
    /// This visor.
    pub local: PublicKey,
    /// This end's port.
    pub local_port: Port,
    /// The other visor.
    pub remote: PublicKey,
    /// The other end's port.
    pub remote_port: Port,
}

/// The Noise binding of a route group: the initiator's and the responder's address.
pub(crate) fn binding(initiator: (PublicKey, Port), responder: (PublicKey, Port)) -> Vec<u8> {
    let mut out = Vec::with_capacity(BINDING_LABEL.len() + 68);
    out.extend_from_slice(BINDING_LABEL);
    for (pk, port) in [initiator, responder] {
        out.extend_from_slice(pk.as_bytes());
        out.extend_from_slice(&port.get().to_be_bytes());
    }
    out
}

/// What the receive side holds.
#[derive(Debug)]
struct RecvState {
    /// Stream content not read yet.
    readable: VecDeque<Bytes>,
    buffered: usize,
    /// Content the reader took since the last credit grant.
    consumed: usize,
    eof: bool,
    error: Option<RouteGroupError>,
    /// Credit this end may still send.
    send_credit: usize,
    fin_sent: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The answer to this end's handshake (initiator), until it arrives.
    answer: Option<tokio::sync::oneshot::Sender<Bytes>>,
    /// The transport the last packet of the group arrived on.
    last_from: Option<TransportId>,
}

/// A route group's state shared between its handle and the node.
#[derive(Debug)]
pub struct GroupShared {
    /// The ends.
    pub addr: GroupAddr,
    /// The local CONSUME rule's key: where the peer's packets arrive.
    pub consume_key: RouteId,
    /// The local FORWARD rule's key.
    pub forward_key: RouteId,
    /// The first hop of this end's forward route.
    pub next: NextHop,
    /// The transport to the first hop.
    pub transport: Arc<Transport>,
    /// Whether the group completed hybrid.
    pq: Mutex<PqStatus>,
    state: Mutex<RecvState>,
    /// The receive cipher: records are opened under it and outside `state`, so a reader
    /// copying out is never held up by a decryption.
    open: Mutex<Option<Aead>>,
    /// The send cipher: sealing and queueing happen under it, so records enter the queue in
    /// counter order.
    send: Mutex<Option<Aead>>,
    /// Stream bytes written by this end so far.
    bytes_sent: std::sync::atomic::AtomicU64,
    /// Stream bytes read by this end so far.
    bytes_received: std::sync::atomic::AtomicU64,
}

impl GroupShared {
    /// A group whose handshake is still to run.
    pub(crate) fn new(
        addr: GroupAddr,
        consume_key: RouteId,
        forward_key: RouteId,
        next: NextHop,
        transport: Arc<Transport>,
    ) -> Self {
        Self {
            addr,
            consume_key,
            forward_key,
            next,
            transport,
            pq: Mutex::new(PqStatus::Classical),
            open: Mutex::new(None),
            state: Mutex::new(RecvState {
                readable: VecDeque::new(),
                buffered: 0,
                consumed: 0,
                eof: false,
                error: None,
                send_credit: 0,
                fin_sent: false,
                read_waker: None,
                write_waker: None,
                answer: None,
                last_from: None,
            }),
            send: Mutex::new(None),
            bytes_sent: std::sync::atomic::AtomicU64::new(0),
            bytes_received: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Stream bytes written and read by this end so far.
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.bytes_sent.load(Relaxed),
            self.bytes_received.load(Relaxed),
        )
    }

    /// Whether the handshake completed hybrid.
    pub fn pq(&self) -> PqStatus {
        *self
            .pq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, RecvState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_send(&self) -> MutexGuard<'_, Option<Aead>> {
        self.send
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs the ciphers of a finished handshake: the group is open, with a full window.
    pub(crate) fn open(&self, send: Aead, recv: Aead, pq: PqStatus) {
        *self.lock_send() = Some(send);
        *self
            .pq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pq;
        *self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(recv);
        self.lock().send_credit = ROUTE_WINDOW;
    }

    /// Registers where the handshake answer goes (initiator).
    pub(crate) fn expect_answer(&self) -> tokio::sync::oneshot::Receiver<Bytes> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().answer = Some(tx);
        rx
    }

    /// Sends a frame of `kind` with `body` down the forward route (not sealed here).
    pub(crate) fn send_frame(&self, kind: FrameType, body: Bytes) -> Result<(), RouteGroupError> {
        let len = u16::try_from(body.len()).map_err(|_| RouteGroupError::Closed)?;
        self.transport
            .send(OutFrame {
                header: Header::for_route(kind, self.next.route, len),
                body,
            })
            .map_err(|_| RouteGroupError::TransportClosed)
    }

    /// Seals one record and queues it, under the send lock (so in counter order).
    fn send_record(&self, kind: RecordKind, content: &[u8]) -> Result<(), RouteGroupError> {
        let mut send = self.lock_send();
        let Some(aead) = send.as_mut() else {
            return Err(RouteGroupError::Closed);
        };
        let mut body = BytesMut::with_capacity(1 + content.len() + TAG_LEN);
        body.extend_from_slice(&[kind as u8]);
        body.extend_from_slice(content);
        let tag = aead
            .seal(&[], &mut body)
            .map_err(|_| RouteGroupError::Closed)?;
        body.extend_from_slice(&tag);
        let result = self.send_frame(FrameType::Data, body.freeze());
        drop(send);
        if let Err(error) = &result {
            self.fail(error.clone());
        }
        result
    }

    /// Ends the group with `error` (the first error wins) and wakes both halves.
    pub(crate) fn fail(&self, error: RouteGroupError) {
        let mut state = self.lock();
        if state.error.is_none() {
            state.error = Some(error);
        }
        state.answer = None;
        wake(&mut state);
    }

    /// Whether the group has ended.
    pub fn is_failed(&self) -> bool {
        self.lock().error.is_some()
    }

    /// The transport the last packet of the group arrived on.
    pub fn last_from(&self) -> Option<TransportId> {
        self.lock().last_from
    }

    /// A packet for this group arrived on `from` (ROUTING.md §6.3, §6.6).
    pub(crate) fn on_packet(&self, kind: FrameType, body: BytesMut, from: TransportId) {
        if kind == FrameType::Data {
            return self.on_record(body, from);
        }
        let mut state = self.lock();
        state.last_from = Some(from);
        if state.error.is_some() {
            return;
        }
        match kind {
            FrameType::Handshake => {
                if let Some(answer) = state.answer.take() {
                    let _ = answer.send(body.freeze());
                }
            }
            FrameType::Close => {
                let code = body
                    .first()
                    .and_then(|byte| CloseCode::from_u8(*byte))
                    .unwrap_or(CloseCode::TransportClosed);
                state.error = Some(RouteGroupError::Hop(code));
                state.answer = None;
                wake(&mut state);
            }
            // Rules are refreshed by the router; nothing else to do (OPEN and OPENED are
            // answered by the node before any rule is looked up).
            FrameType::Data
            | FrameType::KeepAlive
            | FrameType::Sign
            | FrameType::Bye
            | FrameType::Open
            | FrameType::Opened => {}
        }
    }

    /// A DATA packet: opened before `state` is locked (in arrival order: one transport's
    /// reader delivers a group's records, and the cipher's lock orders any other), so a
    /// reader copying out is never held up by a decryption.
    fn on_record(&self, body: BytesMut, from: TransportId) {
        let opened = {
            let mut open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            open_body(open.as_mut(), body)
        };
        let mut state = self.lock();
        state.last_from = Some(from);
        if state.error.is_some() {
            return;
        }
        if let Err(error) = opened.and_then(|record| apply_record(&mut state, record)) {
            let code = match error {
                RouteGroupError::BadRecord => CloseCode::BadRecord,
                _ => CloseCode::Normal,
            };
            state.error = Some(error);
            wake(&mut state);
            drop(state);
            // Tell the other end, then stop sending.
            let _ = self.send_record(RecordKind::Close, &[code as u8]);
            *self.lock_send() = None;
            return;
        }
        wake(&mut state);
    }
}

fn wake(state: &mut RecvState) {
    if let Some(waker) = state.read_waker.take() {
        waker.wake();
    }
    if let Some(waker) = state.write_waker.take() {
        waker.wake();
    }
}

/// Opens one arriving record in place: its plaintext (kind byte and content).
fn open_body(open: Option<&mut Aead>, mut body: BytesMut) -> Result<BytesMut, RouteGroupError> {
    let Some(open) = open else {
        return Err(RouteGroupError::BadRecord);
    };
    let len = open
        .open(&[], &mut body)
        .map_err(|_| RouteGroupError::BadRecord)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// Applies one opened record.
fn apply_record(state: &mut RecvState, mut body: BytesMut) -> Result<(), RouteGroupError> {
    let Some(&kind) = body.first() else {
        return Err(RouteGroupError::BadRecord);
    };
    let content = body.split_off(1).freeze();
    match kind {
        0x00 => {
            if state.eof {
                return Err(RouteGroupError::BadRecord);
            }
            let cost = content.len() + RECORD_OVERHEAD;
            if state.buffered + cost > ROUTE_WINDOW {
                return Err(RouteGroupError::FlowControl);
            }
            if content.is_empty() {
                // Nothing to read: its credit is returned with the next grant.
                state.consumed += cost;
            } else {
                state.buffered += cost;
                state.readable.push_back(content);
            }
        }
        0x01 => {
            let bytes: [u8; 4] = content[..]
                .try_into()
                .map_err(|_| RouteGroupError::BadRecord)?;
            let credit = u32::from_be_bytes(bytes) as usize;
            state.send_credit = state
                .send_credit
                .saturating_add(credit)
                .min(2 * ROUTE_WINDOW);
        }
        0x02 => state.eof = true,
        0x03 => {
            let code = content
                .first()
                .and_then(|byte| CloseCode::from_u8(*byte))
                .unwrap_or(CloseCode::Normal);
            return Err(RouteGroupError::ClosedByPeer(code));
        }
        _ => return Err(RouteGroupError::BadRecord),
    }
    Ok(())
}

/// What a dropped handle asks of its node: forget the group and remove its rules.
pub(crate) trait GroupOwner: Send + Sync {
    /// Removes `group` and its local rules.
    fn forget(&self, group: &GroupShared);
}

/// An end-to-end encrypted byte stream over a forward and a reverse route.
///
/// Reads yield what the other end wrote, then EOF after its `shutdown`; errors are
/// `std::io::Error`s wrapping a [`RouteGroupError`]. Dropping it closes the group.
pub struct RouteGroup {
    shared: Arc<GroupShared>,
    owner: Weak<dyn GroupOwner>,
}

impl std::fmt::Debug for RouteGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteGroup")
            .field("addr", &self.shared.addr)
            .field("consume_key", &self.shared.consume_key)
            .finish_non_exhaustive()
    }
}

impl RouteGroup {
    pub(crate) fn new(shared: Arc<GroupShared>, owner: Weak<dyn GroupOwner>) -> Self {
        Self { shared, owner }
    }

    /// The two ends.
    pub fn addr(&self) -> GroupAddr {
        self.shared.addr
    }

    /// Whether the handshake completed hybrid.
    pub fn pq(&self) -> PqStatus {
        self.shared.pq()
    }

    /// Why the group ended, if it did.
    pub fn error(&self) -> Option<RouteGroupError> {
        self.shared.lock().error.clone()
    }
}

impl AsyncRead for RouteGroup {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.readable.is_empty() {
            if state.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = &state.error {
                return Poll::Ready(Err(error.clone().into_io()));
            }
            state.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut taken = 0;
        let mut copied = 0;
        while buf.remaining() > 0 {
            let Some(front) = state.readable.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            taken += n;
            copied += n;
            if n == front.len() {
                state.readable.pop_front();
                // A record read to its end returns its overhead too.
                taken += RECORD_OVERHEAD;
            } else {
                let _ = front.split_to(n);
            }
        }
        state.buffered -= taken;
        state.consumed += taken;
        shared
            .bytes_received
            .fetch_add(copied as u64, std::sync::atomic::Ordering::Relaxed);
        let grant = if state.consumed >= ROUTE_WINDOW / 2 && state.error.is_none() {
            std::mem::take(&mut state.consumed)
        } else {
            0
        };
        drop(state);
        if grant > 0 {
            let credit = u32::try_from(grant).unwrap_or(u32::MAX);
            // A failure ends the group; what was read stays read.
            let _ = shared.send_record(RecordKind::Credit, &credit.to_be_bytes());
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RouteGroup {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(error) = &state.error {
            return Poll::Ready(Err(error.clone().into_io()));
        }
        if state.fin_sent {
            return Poll::Ready(Err(RouteGroupError::Closed.into_io()));
        }
        if state.send_credit <= RECORD_OVERHEAD {
            state.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf
            .len()
            .min(state.send_credit - RECORD_OVERHEAD)
            .min(MAX_RECORD_DATA);
        state.send_credit -= n + RECORD_OVERHEAD;
        drop(state);
        match shared.send_record(RecordKind::Data, &buf[..n]) {
            Ok(()) => {
                shared
                    .bytes_sent
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            Err(error) => Poll::Ready(Err(error.into_io())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = &state.error {
            return Poll::Ready(Err(error.clone().into_io()));
        }
        state.fin_sent = true;
        drop(state);
        Poll::Ready(
            shared
                .send_record(RecordKind::Fin, &[])
                .map_err(RouteGroupError::into_io),
        )
    }
}

impl Drop for RouteGroup {
    fn drop(&mut self) {
        let shared = &self.shared;
        let state = shared.lock();
        let finished = state.fin_sent && state.eof;
        let failed = state.error.is_some();
        drop(state);
        if !finished && !failed {
            let _ = shared.send_record(RecordKind::Close, &[CloseCode::Normal as u8]);
        }
        shared.fail(RouteGroupError::Closed);
        *shared.lock_send() = None;
        if let Some(owner) = self.owner.upgrade() {
            owner.forget(shared);
        }
    }
}
