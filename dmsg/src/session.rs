//! Sessions at runtime: one driver task per session owns the socket and the [`Mux`]; cheap
//! [`Session`] handles (and the streams made from them) lock the mux only to issue a command
//! and never hold the lock across an await.
//!
//! The driver reads frames, runs timers and writes output in one poll loop (no second task,
//! which keeps an idle session small). Handles wake it when they queue output.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

use crate::handshake::Handshake;
use crate::identity::PublicKey;
use crate::mux::{Mux, MuxConfig, MuxEvent, Role, StreamError};
use crate::noise::PqStatus;
use crate::stream::RawStream;
use crate::wire::{Code, MAX_DATA_BODY, ReasonBody};

/// Writers wait while this much output is buffered and not yet written to the socket.
const OUTPUT_HIGH_WATER: usize = 1024 * 1024;
/// Output beyond this can only come from control frames answering input (a peer that sends
/// but never reads): the driver then stops reading until the socket drains. Legitimate
/// traffic never gets here, because writers stop at [`OUTPUT_HIGH_WATER`] — and reading is
/// what frees the peer, so it must not stop earlier.
const OUTPUT_READ_LIMIT: usize = 4 * OUTPUT_HIGH_WATER;
/// Read buffer reserved when it runs low.
const READ_CHUNK: usize = 256 * 1024;
/// An idle session keeps no read buffer larger than this.
const IDLE_BUFFER: usize = 4 * 1024;
/// How long a closing session may take to flush its last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Iterations of the driver loop before it yields to other tasks.
const DRIVER_BUDGET: usize = 32;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// How a stream open was answered.
#[derive(Debug)]
pub enum OpenAnswer {
    /// Accepted, with the ACCEPT body.
    Accepted(Bytes),
    /// Refused by the peer.
    Rejected(ReasonBody),
    /// The session ended first.
    Closed(Code),
    /// Not answered within the mux's `open_timeout` (the stream was reset).
    TimedOut,
}

/// How to run a session once its handshake is done ([`Session::over`]).
pub struct SessionSetup {
    /// Which end this is (the handshake's initiator is the session's initiator).
    pub role: Role,
    /// Mux settings.
    pub mux: MuxConfig,
    /// The peer's socket address, if the byte stream has one.
    pub remote_addr: Option<SocketAddr>,
    /// Called for every stream the peer opens.
    pub incoming: IncomingHandler,
}

/// A stream the peer asked to open; answer it with [`IncomingOpen::accept`] or
/// [`IncomingOpen::reject`]. Dropped unanswered, it is rejected.
#[derive(Debug)]
pub struct IncomingOpen {
    session: Session,
    id: u32,
    request: Bytes,
    answered: bool,
}

impl IncomingOpen {
    /// The decrypted OPEN body (a [`crate::wire::StreamRequest`]).
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// The session it arrived on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Accepts with an ACCEPT body; returns the stream.
    pub fn accept(mut self, body: &[u8]) -> Result<RawStream, StreamError> {
        self.answered = true;
        let id = self.id;
        self.session.with_mux(|mux| mux.accept_stream(id, body))?;
        Ok(RawStream::new(self.session.clone(), id))
    }

    /// Refuses with a code and reason.
    pub fn reject(mut self, code: Code, reason: impl Into<String>) {
        self.answered = true;
        let body = ReasonBody::new(code, reason);
        let id = self.id;
        self.session.with_mux(|mux| mux.reject_stream(id, &body));
    }

    /// Refuses with a received rejection, as it came (a relay passing one on).
    pub fn reject_with(mut self, reason: &ReasonBody) {
        self.answered = true;
        let id = self.id;
        self.session.with_mux(|mux| mux.reject_stream(id, reason));
    }
}

impl Drop for IncomingOpen {
    fn drop(&mut self) {
        if !self.answered {
            let id = self.id;
            let body = ReasonBody::new(Code::Cancelled, "the stream request was dropped");
            self.session.with_mux(|mux| mux.reject_stream(id, &body));
        }
    }
}

/// Called by the driver for every stream the peer opens. It must not block: hand the work to
/// a tracked task.
pub type IncomingHandler = Arc<dyn Fn(IncomingOpen) + Send + Sync>;

/// The mux plus the wakers and waiters of everything using it.
struct State {
    mux: Mux,
    readers: HashMap<u32, Waker>,
    writers: HashMap<u32, Waker>,
    /// Writers waiting for buffered output to drain.
    output_waiters: Vec<Waker>,
    /// Bytes the driver took from the mux and has not written yet.
    unflushed: usize,
    opens: HashMap<u32, oneshot::Sender<OpenAnswer>>,
}

impl State {
    fn buffered_output(&self) -> usize {
        self.unflushed + self.mux.pending_output()
    }
}

struct Shared {
    id: u64,
    remote: PublicKey,
    remote_addr: Option<SocketAddr>,
    pq: PqStatus,
    state: Mutex<State>,
    driver: AtomicWaker,
    /// `None` while open; the close code once the session ended.
    closed: watch::Sender<Option<Code>>,
    /// True once the peer's READY arrived (or this end is the responder).
    ready: watch::Sender<bool>,
}

/// A handle to a live session. Cheap to clone; the session stays up until it is closed or
/// fails, independent of handles.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("remote", &self.shared.remote)
            .field("pq", &self.shared.pq)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Runs a session over `io`, any byte stream, after its handshake: returns the handle and
    /// the driver, which must be spawned (on a tracked task) to run it.
    ///
    /// This is the seam every transport uses: TCP in the client and server, the visor's
    /// transports, an in-memory pipe in tests.
    pub fn over<T>(io: T, handshake: Handshake, setup: SessionSetup) -> (Self, SessionDriver<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Handshake {
            established,
            read_ahead,
        } = handshake;
        let remote = established.remote();
        let pq = established.pq();
        let (send, recv) = established.into_ciphers();
        let mux = Mux::new(setup.role, setup.mux, send, recv, Instant::now());
        Self::from_mux(
            io,
            read_ahead,
            mux,
            remote,
            setup.remote_addr,
            pq,
            setup.incoming,
        )
    }

    /// A session over `io` around a mux already built (tests that forge a peer use it).
    pub(crate) fn from_mux<T>(
        io: T,
        read_ahead: BytesMut,
        mux: Mux,
        remote: PublicKey,
        remote_addr: Option<SocketAddr>,
        pq: PqStatus,
        incoming: IncomingHandler,
    ) -> (Self, SessionDriver<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ready = mux.is_ready();
        let timer_at = mux.poll_timeout();
        let shared = Arc::new(Shared {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            remote,
            remote_addr,
            pq,
            state: Mutex::new(State {
                mux,
                readers: HashMap::new(),
                writers: HashMap::new(),
                output_waiters: Vec::new(),
                unflushed: 0,
                opens: HashMap::new(),
            }),
            driver: AtomicWaker::new(),
            closed: watch::Sender::new(None),
            ready: watch::Sender::new(ready),
        });
        let session = Self { shared };
        let driver = SessionDriver {
            session: session.clone(),
            io,
            input: read_ahead,
            output: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(
                timer_at.unwrap_or_else(far_future),
            )),
            timer_at,
            incoming,
            read_closed: false,
            linger: None,
        };
        (session, driver)
    }

    /// A process-unique id; a newer session to the same peer has a different one.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The authenticated peer.
    pub fn remote(&self) -> PublicKey {
        self.shared.remote
    }

    /// The peer's socket address, if known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote_addr
    }

    /// Whether the session's handshake was hybrid.
    pub fn pq(&self) -> PqStatus {
        self.shared.pq
    }

    /// The last measured ping round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.lock().mux.rtt()
    }

    /// Streams open on the session now.
    pub fn stream_count(&self) -> usize {
        self.lock().mux.stream_count()
    }

    /// True once the session ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Why the session ended, if it did.
    pub fn close_code(&self) -> Option<Code> {
        *self.shared.closed.borrow()
    }

    /// Waits until the session has ended; returns why.
    pub async fn closed(&self) -> Code {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return code;
            }
            if rx.changed().await.is_err() {
                return Code::SessionClosed;
            }
        }
    }

    /// Waits until the responder accepted the session (its READY), or it ended first.
    pub async fn ready(&self) -> Result<(), Code> {
        let mut ready = self.shared.ready.subscribe();
        let mut closed = self.shared.closed.subscribe();
        loop {
            if *ready.borrow_and_update() {
                return Ok(());
            }
            if let Some(code) = *closed.borrow_and_update() {
                return Err(code);
            }
            tokio::select! {
                r = ready.changed() => if r.is_err() { return Err(Code::SessionClosed) },
                c = closed.changed() => if c.is_err() { return Err(Code::SessionClosed) },
            }
        }
    }

    /// Ends the session with `code`: a GOAWAY is sent and every stream fails. Returns at once;
    /// [`Session::closed`] waits for the end.
    pub fn close(&self, code: Code, reason: &str) {
        self.with_mux(|mux| mux.close(code, reason));
    }

    /// Opens a stream with an OPEN body (what the peer reads as its request); await
    /// [`PendingOpen::answer`] for the peer's answer.
    pub fn open(&self, request: &[u8]) -> Result<PendingOpen, StreamError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            let id = state.mux.open_stream(Instant::now(), request)?;
            state.opens.insert(id, tx);
            id
        };
        self.shared.driver.wake();
        Ok(PendingOpen {
            session: self.clone(),
            id,
            rx,
            done: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mux transition leaves it consistent, so a poisoned lock is still usable.
        crate::sync::lock(&self.shared.state)
    }

    /// Runs a mux command and wakes the driver to write what it queued.
    pub(crate) fn with_mux<R>(&self, f: impl FnOnce(&mut Mux) -> R) -> R {
        let result = f(&mut self.lock().mux);
        self.shared.driver.wake();
        result
    }

    /// Polls for a received chunk of `id`; `Ok(None)` at the end of the stream.
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        id: u32,
    ) -> Poll<Result<Option<(Bytes, bool)>, StreamError>> {
        let mut state = self.lock();
        let polled = state.mux.recv(id);
        let result = match polled {
            Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk))),
            Ok(None) if state.mux.recv_finished(id) => Poll::Ready(Ok(None)),
            Ok(None) => {
                state.readers.insert(id, cx.waker().clone());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(error)),
        };
        let wake = state.mux.pending_output() > 0;
        drop(state);
        if wake {
            self.shared.driver.wake();
        }
        result
    }

    /// Polls until `id` can reserve at least `min` bytes of send credit (up to `max`, capped
    /// at one frame); returns the reservation.
    pub(crate) fn poll_reserve(
        &self,
        cx: &mut Context<'_>,
        id: u32,
        min: usize,
        max: usize,
    ) -> Poll<Result<usize, StreamError>> {
        let min = min.clamp(1, MAX_DATA_BODY);
        let mut state = self.lock();
        if state.buffered_output() > OUTPUT_HIGH_WATER {
            // The socket is behind: wait for the driver to write, keeping memory bounded.
            state.output_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        match state.mux.reserve(id, min, max) {
            Ok(0) => {
                state.writers.insert(id, cx.waker().clone());
                Poll::Pending
            }
            Ok(reserved) => Poll::Ready(Ok(reserved)),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    /// Sends `body` on `id` as soon as it has the credit: reserving and sending under one
    /// lock (the relay's path for every chunk).
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        id: u32,
        body: &[u8],
        fin: bool,
    ) -> Poll<Result<(), StreamError>> {
        let mut state = self.lock();
        if state.buffered_output() > OUTPUT_HIGH_WATER {
            state.output_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let len = body.len().max(1);
        let sent = match state.mux.reserve(id, len, len) {
            Ok(0) => {
                state.writers.insert(id, cx.waker().clone());
                return Poll::Pending;
            }
            Ok(reserved) => state.mux.send_reserved(id, reserved, body, fin),
            Err(error) => Err(error),
        };
        drop(state);
        self.shared.driver.wake();
        Poll::Ready(sent)
    }

    /// Polls until the peer stopped reading `id` (its STOP); returns the code.
    pub(crate) fn poll_stopped(&self, cx: &mut Context<'_>, id: u32) -> Poll<Code> {
        let mut state = self.lock();
        match state.mux.send_stopped(id) {
            Some(code) => Poll::Ready(code),
            None => {
                state.writers.insert(id, cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Forgets a stream whose handle is gone, giving back credit it still held.
    pub(crate) fn release(&self, id: u32, reserved: usize) {
        let mut state = self.lock();
        state.mux.unreserve(id, reserved);
        state.mux.release_stream(id);
        state.readers.remove(&id);
        state.writers.remove(&id);
        state.opens.remove(&id);
        drop(state);
        self.shared.driver.wake();
    }
}

/// A stream open waiting for the peer's answer. Dropping it cancels the stream.
#[derive(Debug)]
pub struct PendingOpen {
    session: Session,
    id: u32,
    rx: oneshot::Receiver<OpenAnswer>,
    done: bool,
}

impl PendingOpen {
    /// Waits for the answer: the accepted stream and its ACCEPT body, or the refusal.
    pub async fn answer(mut self) -> Result<(RawStream, Bytes), OpenAnswer> {
        let answer = (&mut self.rx)
            .await
            .unwrap_or(OpenAnswer::Closed(Code::SessionClosed));
        self.done = true;
        match answer {
            OpenAnswer::Accepted(body) => Ok((RawStream::new(self.session.clone(), self.id), body)),
            other => Err(other),
        }
    }
}

impl Drop for PendingOpen {
    fn drop(&mut self) {
        if !self.done {
            self.session.release(self.id, 0);
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Runs one session: reads, timers, writes. Spawn it on a tracked task; it completes when the
/// session has ended and its last frames were flushed (or the linger expired).
#[must_use = "a session does nothing unless its driver is spawned"]
pub struct SessionDriver<T> {
    session: Session,
    io: T,
    input: BytesMut,
    output: BytesMut,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    incoming: IncomingHandler,
    read_closed: bool,
    linger: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> SessionDriver<T> {
    /// Applies mux events: wakes handles, answers opens; returns new incoming opens.
    fn dispatch(&self, state: &mut State, incoming: &mut Vec<(u32, Bytes)>) {
        while let Some(event) = state.mux.poll_event() {
            match event {
                MuxEvent::Ready => {
                    self.session.shared.ready.send_replace(true);
                }
                MuxEvent::IncomingOpen { stream, request } => incoming.push((stream, request)),
                MuxEvent::Accepted { stream, body } => {
                    if let Some(tx) = state.opens.remove(&stream) {
                        let _ = tx.send(OpenAnswer::Accepted(body));
                    }
                }
                MuxEvent::Rejected { stream, reason } => {
                    if let Some(tx) = state.opens.remove(&stream) {
                        let _ = tx.send(OpenAnswer::Rejected(reason));
                    }
                }
                MuxEvent::OpenTimedOut { stream } => {
                    if let Some(tx) = state.opens.remove(&stream) {
                        let _ = tx.send(OpenAnswer::TimedOut);
                    }
                }
                MuxEvent::Readable(id) => wake(&mut state.readers, id),
                MuxEvent::Writable(id) => wake(&mut state.writers, id),
                MuxEvent::WritableAll => state.writers.drain().for_each(|(_, w)| w.wake()),
                MuxEvent::Stopped { stream, .. } => wake(&mut state.writers, stream),
                MuxEvent::Reset { stream, .. } => {
                    wake(&mut state.readers, stream);
                    wake(&mut state.writers, stream);
                }
                MuxEvent::Pong { .. } => {}
                MuxEvent::Closed {
                    code,
                    reason,
                    by_peer,
                } => {
                    tracing::debug!(
                        remote = %self.session.shared.remote,
                        code = code.label(),
                        %reason,
                        by_peer,
                        "session closed"
                    );
                    state.readers.drain().for_each(|(_, w)| w.wake());
                    state.writers.drain().for_each(|(_, w)| w.wake());
                    state.output_waiters.drain(..).for_each(Waker::wake);
                    for (_, tx) in state.opens.drain() {
                        let _ = tx.send(OpenAnswer::Closed(code));
                    }
                    self.session.shared.closed.send_replace(Some(code));
                }
            }
        }
    }

    /// Ends the session locally (transport failure) with `code`.
    fn fail(&mut self, code: Code, reason: &str) {
        let mut incoming = Vec::new();
        {
            let mut state = self.session.lock();
            state.mux.close(code, reason);
            self.dispatch(&mut state, &mut incoming);
        }
        self.read_closed = true;
    }

    fn hand_out(&self, incoming: Vec<(u32, Bytes)>) {
        for (id, request) in incoming {
            (self.incoming)(IncomingOpen {
                session: self.session.clone(),
                id,
                request,
                answered: false,
            });
        }
    }
}

fn wake(wakers: &mut HashMap<u32, Waker>, id: u32) {
    if let Some(waker) = wakers.remove(&id) {
        waker.wake();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for SessionDriver<T> {
    type Output = Code;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Code> {
        let this = self.get_mut();
        this.session.shared.driver.register(cx.waker());
        for _ in 0..DRIVER_BUDGET {
            let mut progressed = false;
            let now = Instant::now();
            let mut incoming = Vec::new();

            // Read, unless output piled up from answering a peer that does not read.
            let backed_up = this.session.lock().buffered_output() > OUTPUT_READ_LIMIT;
            if !this.read_closed && !backed_up {
                if this.input.capacity() - this.input.len() < READ_CHUNK / 4 {
                    this.input.reserve(READ_CHUNK);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.input) {
                    Poll::Ready(Ok(0)) => {
                        this.fail(Code::SessionClosed, "the peer closed the connection");
                    }
                    Poll::Ready(Ok(_)) => {
                        let mut state = this.session.lock();
                        let _ = state.mux.handle_input(now, &mut this.input);
                        this.dispatch(&mut state, &mut incoming);
                        drop(state);
                        progressed = true;
                    }
                    Poll::Ready(Err(error)) => {
                        this.fail(Code::SessionClosed, &format!("connection failed: {error}"));
                    }
                    Poll::Pending => {
                        // Idle: give the read buffer back so an idle session stays small.
                        if this.input.is_empty() && this.input.capacity() > IDLE_BUFFER {
                            this.input = BytesMut::new();
                        }
                    }
                }
            }

            // Timers.
            if this.timer_at.is_some_and(|at| now >= at) {
                let mut state = this.session.lock();
                state.mux.handle_timeout(now);
                this.dispatch(&mut state, &mut incoming);
                this.timer_at = None;
                progressed = true;
            }

            // Events raised by commands (a local close, a reset) rather than by input.
            {
                let mut state = this.session.lock();
                this.dispatch(&mut state, &mut incoming);
            }
            this.hand_out(incoming);

            // Write.
            if this.output.is_empty() {
                let mut state = this.session.lock();
                if state.mux.pending_output() > 0 {
                    this.output = state.mux.take_output();
                    state.unflushed = this.output.len();
                }
            }
            let unwritten = this.output.len();
            while !this.output.is_empty() {
                match Pin::new(&mut this.io).poll_write(cx, &this.output) {
                    Poll::Ready(Ok(0)) => {
                        this.output.clear();
                        this.fail(
                            Code::SessionClosed,
                            "the connection stopped accepting writes",
                        );
                    }
                    Poll::Ready(Ok(n)) => {
                        let _ = this.output.split_to(n);
                        if this.output.is_empty() {
                            this.output = BytesMut::new(); // release the written buffer
                        }
                        progressed = true;
                    }
                    Poll::Ready(Err(error)) => {
                        this.output.clear();
                        this.fail(Code::SessionClosed, &format!("connection failed: {error}"));
                    }
                    Poll::Pending => break,
                }
            }
            if this.output.len() != unwritten {
                let mut state = this.session.lock();
                state.unflushed = this.output.len();
                if state.buffered_output() <= OUTPUT_HIGH_WATER / 2 {
                    state.output_waiters.drain(..).for_each(Waker::wake);
                }
            }

            // Finished: closed and flushed (or the linger ran out).
            let closed = this.session.lock().mux.close_code();
            if let Some(code) = closed {
                let flushed =
                    this.output.is_empty() && this.session.lock().mux.pending_output() == 0;
                let linger = this
                    .linger
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_LINGER)));
                if flushed || linger.as_mut().poll(cx).is_ready() {
                    let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                    this.session.shared.closed.send_replace(Some(code));
                    return Poll::Ready(code);
                }
            }

            if !progressed {
                let next = this.session.lock().mux.poll_timeout();
                if next != this.timer_at {
                    this.timer_at = next;
                    this.timer.as_mut().reset(next.unwrap_or_else(far_future));
                }
                if this.timer_at.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
        }
        // Used the budget: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
