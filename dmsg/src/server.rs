//! The relay server core (PROTOCOL.md §7, §10): accepts sessions, keeps a table of them by
//! public key, and relays streams between clients without ever seeing their plaintext.
//!
//! [`Server::serve`] runs the accept loop on a listener the caller already bound (bind first,
//! everything else later). Accepts are rate-limited by a token bucket and handshakes capped,
//! so a reconnect storm degrades instead of collapsing; every refusal is counted by reason.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{
    Source, SourceLimits, SourcePermit, SourceRefusal, SourceTable, TokenBucket,
};
use crate::discovery::Discovery;
use crate::handshake::{ResponderDeadlines, respond};
use crate::identity::{Keypair, PublicKey};
use crate::mux::{MuxConfig, Role, StreamError};
use crate::net::{Io, Listen};
use crate::noise::{HandshakeCounts, HandshakeError, PqSettings, PqStatus};
use crate::pq_peers::PqPeers;
use crate::session::{IncomingHandler, IncomingOpen, OpenAnswer, Session, SessionSetup};
use crate::session_table::SessionTable;
use crate::stream::RawStream;
use crate::wire::{
    Code, FIRST_MESSAGE_TIMEOUT, HANDSHAKE_TIMEOUT, HandshakeRefusal, StreamRequest,
};

/// Relay server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Session mux settings.
    pub mux: MuxConfig,
    /// Post-quantum settings.
    pub pq: PqSettings,
    /// Sessions the server advertises it can hold. Advisory: it keeps accepting beyond it,
    /// so clients that delegated to it can still listen.
    pub max_sessions: usize,
    /// Sustained accepts per second (token bucket rate).
    pub accept_rate: f64,
    /// Accepts allowed in a burst (token bucket size).
    pub accept_burst: u32,
    /// Handshakes in progress at once; more are refused with "busy".
    pub max_handshakes: usize,
    /// What one source address may do (checked before the server-wide limits, so a source
    /// over its share never takes anyone else's).
    pub per_source: SourceLimits,
    /// Deadline of a handshake's first message (preamble and message 1): an idle connection
    /// holds its slot no longer than this.
    pub first_message_timeout: Duration,
    /// Deadline of a whole session handshake.
    pub handshake_timeout: Duration,
    /// How long the relay waits for a destination to answer a stream open (the `open_timeout`
    /// of every session's mux: a timer of the protocol core).
    pub open_timeout: Duration,
}

impl Default for ServerConfig {
    /// 2048 advertised sessions, 10 000 accepts/s with bursts of 2 000, 512 concurrent
    /// handshakes, [`SourceLimits::default`] per source, 1 s for the first handshake message,
    /// 5 s handshake and open deadlines.
    fn default() -> Self {
        Self {
            mux: MuxConfig::default(),
            pq: PqSettings::default(),
            max_sessions: 2048,
            accept_rate: 10_000.0,
            accept_burst: 2_000,
            max_handshakes: 512,
            per_source: SourceLimits::default(),
            first_message_timeout: FIRST_MESSAGE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            open_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why the server refused a connection or a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Over the server's accept rate.
    RateLimited,
    /// Too many handshakes in progress on the server.
    HandshakeBusy,
    /// Over the accept rate of the connection's source address.
    SourceRateLimited,
    /// The source address has its maximum of handshakes in progress.
    SourceBusy,
    /// The session handshake failed (bad peer, bad key, PQ policy).
    HandshakeFailed,
    /// The handshake did not arrive in time (its first message, or the whole of it).
    HandshakeTimeout,
    /// A stream request did not parse.
    MalformedRequest,
    /// A stream request's source was not the session's peer.
    SourceMismatch,
    /// No session to the stream's destination.
    NoSession,
    /// The destination refused the stream.
    DestinationRejected,
    /// The destination did not answer in time.
    DestinationTimeout,
    /// The destination's session refused a new stream (its stream limit).
    TooManyStreams,
}

impl RejectReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RejectReason; 12] = [
        Self::RateLimited,
        Self::HandshakeBusy,
        Self::SourceRateLimited,
        Self::SourceBusy,
        Self::HandshakeFailed,
        Self::HandshakeTimeout,
        Self::MalformedRequest,
        Self::SourceMismatch,
        Self::NoSession,
        Self::DestinationRejected,
        Self::DestinationTimeout,
        Self::TooManyStreams,
    ];

    /// A stable snake_case label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::HandshakeBusy => "handshake_busy",
            Self::SourceRateLimited => "source_rate_limited",
            Self::SourceBusy => "source_busy",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::MalformedRequest => "malformed_request",
            Self::SourceMismatch => "source_mismatch",
            Self::NoSession => "no_session",
            Self::DestinationRejected => "destination_rejected",
            Self::DestinationTimeout => "destination_timeout",
            Self::TooManyStreams => "too_many_streams",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Live counters of a server.
#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicI64,
    sessions_total: AtomicU64,
    streams: AtomicI64,
    streams_total: AtomicU64,
    bytes_relayed: AtomicU64,
    rejects: [AtomicU64; RejectReason::ALL.len()],
}

/// A snapshot of a server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions open now.
    pub sessions: u64,
    /// Sessions established since start.
    pub sessions_total: u64,
    /// Relayed streams open now.
    pub streams: u64,
    /// Relayed streams established since start.
    pub streams_total: u64,
    /// Payload bytes relayed (both directions).
    pub bytes_relayed: u64,
    /// Session handshakes by outcome.
    pub handshakes: HandshakeCounts,
    /// Refusals by reason.
    pub rejects: Vec<(RejectReason, u64)>,
}

impl ServerStats {
    /// The refusals counted for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejects
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

struct Inner {
    keypair: Keypair,
    config: ServerConfig,
    sessions: SessionTable,
    counters: Counters,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    handshakes: Arc<Semaphore>,
    /// Per-source limits (PROTOCOL.md §10).
    sources: Arc<SourceTable>,
    /// When the latest sessions were established (Unix ms), oldest first, bounded.
    recent_sessions: Mutex<std::collections::VecDeque<i64>>,
    /// Peers known to advertise PQ (part of `config.pq`'s known-peer rule).
    pq_peers: Arc<PqPeers>,
    /// Where the server looks up the entry of a peer that completed classical (set once,
    /// when the server has a discovery: [`Server::look_up_peers_in`]).
    peer_lookup: OnceLock<Arc<dyn Discovery>>,
    /// Peer lookups in flight, at most [`PEER_LOOKUPS`].
    lookups: Arc<Semaphore>,
}

/// Peer-entry lookups a server runs at once; a classical session arriving while all are
/// busy is not looked up (PROTOCOL.md §4.5).
pub const PEER_LOOKUPS: usize = 64;

/// How long a peer-entry lookup may take.
pub const PEER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Session start times kept for [`Server::recent_session_starts`].
pub const RECENT_SESSIONS: usize = 4096;

/// A relay server. Clones share the server; dropping the last clone (and the future of
/// [`Server::serve`], which holds one) shuts it down: the accept loop ends and every session
/// closes. [`Server::shutdown`] does the same and waits for every task.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
    /// Counts the user's handles; `None` in the server's own tasks.
    _user: Option<Arc<DropGuard>>,
}

/// Shuts the server down when the last user handle is dropped.
struct DropGuard(std::sync::Weak<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.shutdown.cancel();
            for session in inner.sessions.all() {
                session.close(Code::ShuttingDown, "server shutting down");
            }
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pk", &self.inner.keypair.public())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with `keypair` as its identity.
    pub fn new(keypair: Keypair, mut config: ServerConfig) -> Self {
        let pq_peers = PqPeers::new();
        config.pq.known_pq = Some(pq_peers.known_pq(config.pq.known_pq.take()));
        let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
        let config_per_source = config.per_source;
        let inner = Arc::new(Inner {
            keypair,
            config,
            sessions: SessionTable::new(),
            counters: Counters::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            handshakes,
            sources: SourceTable::new(config_per_source),
            recent_sessions: Mutex::new(std::collections::VecDeque::new()),
            pq_peers,
            peer_lookup: OnceLock::new(),
            lookups: Arc::new(Semaphore::new(PEER_LOOKUPS)),
        });
        let guard = DropGuard(Arc::downgrade(&inner));
        Self {
            inner,
            _user: Some(Arc::new(guard)),
        }
    }

    /// A handle for the server's own tasks: it does not keep the server alive.
    fn internal(&self) -> Server {
        Server {
            inner: self.inner.clone(),
            _user: None,
        }
    }

    /// Where to look up the signed entry of a peer that completed a classical handshake
    /// (the server's discovery). Set once; later calls are ignored. Without it the server
    /// knows PQ peers only from its configured rule.
    pub fn look_up_peers_in(&self, discovery: Arc<dyn Discovery>) {
        let _ = self.inner.peer_lookup.set(discovery);
    }

    /// The peers this server knows to advertise PQ.
    pub fn pq_peers(&self) -> &Arc<PqPeers> {
        &self.inner.pq_peers
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.keypair.public()
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// The advertised free sessions: `max_sessions − sessions` (negative when over).
    pub fn available_sessions(&self) -> i64 {
        let max = i64::try_from(self.inner.config.max_sessions).unwrap_or(i64::MAX);
        max - i64::try_from(self.session_count()).unwrap_or(i64::MAX)
    }

    /// A watch bumped whenever the session count changes (registration refreshes on it).
    pub fn session_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.sessions.changes()
    }

    /// When the connections of the latest sessions (at most [`RECENT_SESSIONS`]) arrived, in
    /// Unix milliseconds, in the order the sessions were established: shows whether
    /// reconnects arrive spread or in a burst. The arrival (the accept), not the end of the
    /// handshake: handshakes held up together by a busy CPU do not make a burst.
    pub fn recent_session_starts(&self) -> Vec<i64> {
        crate::sync::lock(&self.inner.recent_sessions)
            .iter()
            .copied()
            .collect()
    }

    fn note_session_start(&self, arrived: Instant) {
        let age_ms = i64::try_from(arrived.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = crate::entry::unix_nanos_now() / 1_000_000;
        let mut recent = crate::sync::lock(&self.inner.recent_sessions);
        if recent.len() >= RECENT_SESSIONS {
            recent.pop_front();
        }
        recent.push_back(now.saturating_sub(age_ms));
    }

    /// The advertised session capacity (`max_sessions`).
    pub fn max_sessions(&self) -> usize {
        self.inner.config.max_sessions
    }

    /// The session with `pk`, if connected.
    pub fn session(&self, pk: &PublicKey) -> Option<Session> {
        self.inner.sessions.get(pk)
    }

    /// Tasks the server owns now (session drivers and relays).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        ServerStats {
            sessions: load(&c.sessions),
            sessions_total: c.sessions_total.load(Ordering::Relaxed),
            streams: load(&c.streams),
            streams_total: c.streams_total.load(Ordering::Relaxed),
            bytes_relayed: c.bytes_relayed.load(Ordering::Relaxed),
            handshakes: self.inner.config.pq.stats.snapshot(),
            rejects: RejectReason::ALL
                .iter()
                .map(|r| (*r, c.rejects[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn reject(&self, reason: RejectReason) {
        self.inner.counters.rejects[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// After a classical session with a peer the server knows nothing about, looks the
    /// peer's signed entry up in the background — never holding up accept, at most
    /// [`PEER_LOOKUPS`] at once. If the entry says `pq_capable`, the session is closed with
    /// `PqRequired` (counted in `pq_refused`) and the peer's next classical handshake is
    /// refused in the handshake (PROTOCOL.md §4.5).
    fn check_classical_peer(&self, session: &Session) {
        let remote = session.remote();
        if self
            .inner
            .pq_peers
            .lookup(&remote, Instant::now())
            .is_some()
        {
            return;
        }
        let Some(discovery) = self.inner.peer_lookup.get().cloned() else {
            return;
        };
        let Ok(permit) = self.inner.lookups.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "peer lookups busy; not checking this classical session");
            return;
        };
        let inner = self.inner.clone();
        let session = session.clone();
        self.inner.tasks.spawn(async move {
            let _permit = permit;
            let found = tokio::select! {
                () = inner.shutdown.cancelled() => return,
                found = tokio::time::timeout(PEER_LOOKUP_TIMEOUT, discovery.entry(&remote)) => found,
            };
            let entry = match found {
                Ok(Ok(Some(entry))) if entry.owner == remote && entry.signature_valid() => entry,
                Ok(Ok(_)) => {
                    inner.pq_peers.learn(remote, false, Instant::now());
                    return;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "peer lookup failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "peer lookup timed out");
                    return;
                }
            };
            inner
                .pq_peers
                .learn(remote, entry.pq_capable, Instant::now());
            if entry.pq_capable {
                inner.config.pq.stats.count_pq_refused();
                tracing::warn!(
                    %remote,
                    "closing a classical-only session: the peer's signed entry advertises PQ"
                );
                session.close(
                    Code::PqRequired,
                    "your discovery entry advertises post-quantum support, but this session \
                     is classical-only; reconnect with the hybrid handshake",
                );
            }
        });
    }

    /// Runs the accept loop on `listener` (a bound `TcpListener`, or any [`Listen`]) until
    /// [`Server::shutdown`].
    ///
    /// Returns `Err` if accepting fails persistently: the caller must treat that as the
    /// data plane dying (health NOT_SERVING, exit non-zero).
    pub async fn serve<L: Listen>(&self, mut listener: L) -> std::io::Result<()> {
        let mut bucket = TokenBucket::new(
            self.inner.config.accept_rate,
            self.inner.config.accept_burst,
            Instant::now(),
        );
        let mut failures = 0u32;
        loop {
            let accepted = tokio::select! {
                () = self.inner.shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((io, addr)) => {
                    failures = 0;
                    self.admit(io, addr, &mut bucket);
                }
                Err(error) => {
                    // Out of file descriptors or an aborted connection: back off and retry;
                    // give up only if it persists.
                    failures += 1;
                    if failures > 10 {
                        return Err(error);
                    }
                    tracing::warn!(%error, failures, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(10 << failures.min(6))).await;
                }
            }
        }
    }

    /// Admits a new connection or refuses it at once (PROTOCOL.md §10): the source's limits
    /// first, so a source over its share never takes a server-wide token or slot.
    fn admit<T: Io>(&self, mut io: T, addr: Option<SocketAddr>, bucket: &mut TokenBucket) {
        let now = Instant::now();
        let source = match self.inner.sources.admit(Source::of(addr), now) {
            Ok(permit) => permit,
            Err(SourceRefusal::RateLimited) => {
                self.reject(RejectReason::SourceRateLimited);
                return; // dropping the socket closes it
            }
            Err(SourceRefusal::Busy) => {
                self.reject(RejectReason::SourceBusy);
                refuse_busy(&mut io);
                return;
            }
        };
        if !bucket.try_take(now) {
            self.reject(RejectReason::RateLimited);
            return; // dropping the socket closes it: the client backs off and retries
        }
        let Ok(permit) = self.inner.handshakes.clone().try_acquire_owned() else {
            self.reject(RejectReason::HandshakeBusy);
            refuse_busy(&mut io);
            return;
        };
        let server = self.internal();
        self.inner
            .tasks
            .spawn(async move { server.run_connection(io, addr, now, (permit, source)).await });
    }

    async fn run_connection<T: Io>(
        self,
        mut io: T,
        addr: Option<SocketAddr>,
        arrived: Instant,
        permits: (OwnedSemaphorePermit, SourcePermit),
    ) {
        let inner = &self.inner;
        let deadlines = ResponderDeadlines {
            first_message: inner.config.first_message_timeout,
            total: inner.config.handshake_timeout,
        };
        // `respond` bounds itself by `deadlines`, refusal writes included.
        let handshake = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            result = respond(&mut io, &inner.keypair, &inner.config.pq, deadlines) => result,
        };
        drop(permits);
        let handshake = match handshake {
            Ok(done) => done,
            Err(HandshakeError::Timeout(after)) => {
                self.reject(RejectReason::HandshakeTimeout);
                tracing::debug!(?addr, ?after, "session handshake timed out");
                return;
            }
            Err(error) => {
                self.reject(RejectReason::HandshakeFailed);
                tracing::debug!(?addr, %error, "session handshake failed");
                return;
            }
        };
        let remote = handshake.established.remote();
        let pq = handshake.established.pq();
        let (session, driver) = Session::over(
            io,
            handshake,
            SessionSetup {
                role: Role::Responder,
                mux: MuxConfig {
                    open_timeout: inner.config.open_timeout,
                    ..inner.config.mux
                },
                remote_addr: addr,
                incoming: self.incoming_handler(),
            },
        );

        // Newest session wins: the old one is told why and closed.
        if inner.sessions.insert(
            session.clone(),
            "replaced by a newer session from the same key",
        ) {
            inner.counters.sessions.fetch_add(1, Ordering::Relaxed);
        }
        inner
            .counters
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        self.note_session_start(arrived);
        tracing::debug!(%remote, ?addr, ?pq, "session established");
        // Only a server that offers the hybrid itself has a downgrade to guard against.
        if pq == PqStatus::Classical && inner.config.pq.enabled {
            self.check_classical_peer(&session);
        }
        if inner.shutdown.is_cancelled() {
            session.close(Code::ShuttingDown, "server shutting down");
        }

        let code = driver.await;

        // Remove only this session: a newer one for the same key must never be evicted.
        if inner.sessions.remove(&session) {
            inner.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        }
        tracing::debug!(%remote, code = code.label(), "session ended");
    }

    fn incoming_handler(&self) -> IncomingHandler {
        let server = self.internal();
        Arc::new(move |open: IncomingOpen| {
            let relay = server.clone();
            server
                .inner
                .tasks
                .spawn(async move { relay.relay(open).await });
        })
    }

    /// Handles one stream request: check, forward to the destination, relay its answer, splice.
    async fn relay(self, open: IncomingOpen) {
        let request = match StreamRequest::decode(open.request()) {
            Ok(request) => request,
            Err(error) => {
                self.reject(RejectReason::MalformedRequest);
                open.reject(Code::MalformedRequest, error.to_string());
                return;
            }
        };
        if request.src.pk != open.session().remote() {
            self.reject(RejectReason::SourceMismatch);
            open.reject(
                Code::SourceMismatch,
                "the source key must be the session's own key",
            );
            return;
        }
        let Some(destination) = self.session(&request.dst.pk) else {
            self.reject(RejectReason::NoSession);
            open.reject(
                Code::NoSession,
                format!("{} is not connected to this server", request.dst.pk),
            );
            return;
        };
        let pending = match destination.open(open.request()) {
            Ok(pending) => pending,
            Err(error) => {
                self.reject(RejectReason::TooManyStreams);
                open.reject(Code::TooManyStreams, error.to_string());
                return;
            }
        };
        // The open deadline is a timer of the destination session's mux (`open_timeout`).
        let answer = tokio::select! {
            () = self.inner.shutdown.cancelled() => return,
            answer = pending.answer() => answer,
        };
        let (outbound, body) = match answer {
            Ok(accepted) => accepted,
            Err(OpenAnswer::Rejected(reason)) => {
                self.reject(RejectReason::DestinationRejected);
                open.reject_with(&reason);
                return;
            }
            Err(OpenAnswer::Closed(_) | OpenAnswer::Accepted(_)) => {
                self.reject(RejectReason::NoSession);
                open.reject(Code::NoSession, "the destination's session closed");
                return;
            }
            Err(OpenAnswer::TimedOut) => {
                self.reject(RejectReason::DestinationTimeout);
                open.reject(
                    Code::DestinationTimeout,
                    "the destination did not answer in time",
                );
                return;
            }
        };
        let Ok(inbound) = open.accept(&body) else {
            return; // the initiator's session is gone; dropping `outbound` resets the other side
        };
        let counters = &self.inner.counters;
        counters.streams.fetch_add(1, Ordering::Relaxed);
        counters.streams_total.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = self.inner.shutdown.cancelled() => {}
            () = splice(inbound, outbound, &counters.bytes_relayed) => {}
        }
        counters.streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// Stops accepting, closes every session and waits for every task the server owns.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let sessions = self.inner.sessions.all();
        for session in sessions {
            session.close(Code::ShuttingDown, "server shutting down");
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// One direction of a splice: a DATA body waiting for credit, and whether the direction is
/// over (FIN went through, or the receiving end stopped reading and the sender was told).
#[derive(Default)]
struct Pump {
    held: Option<(Bytes, bool)>,
    done: bool,
}

impl Pump {
    /// The receiving end stopped reading: tell the sender, drop what is held.
    fn stop(&mut self, from: &mut RawStream, code: Code) {
        from.stop(code);
        self.held = None;
        self.done = true;
    }

    /// Moves what it can from `from` to `to`; `Ready(Some(error))` if either stream failed.
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        from: &mut RawStream,
        to: &mut RawStream,
        relayed: &AtomicU64,
    ) -> Poll<Option<StreamError>> {
        while !self.done {
            if self.held.is_none() {
                match from.poll_recv(cx) {
                    Poll::Ready(Ok(Some(chunk))) => self.held = Some(chunk),
                    Poll::Ready(Ok(None)) => self.done = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Some(error)),
                    // Nothing to move: pass on a STOP from the receiving end, if it came.
                    Poll::Pending => match to.poll_stopped(cx) {
                        Poll::Ready(code) => self.stop(from, code),
                        Poll::Pending => return Poll::Pending,
                    },
                }
            }
            if let Some((body, fin)) = &self.held {
                match to.poll_send(cx, body, *fin) {
                    Poll::Ready(Ok(())) => {
                        relayed.fetch_add(body.len() as u64, Ordering::Relaxed);
                        self.done = *fin;
                        self.held = None;
                    }
                    Poll::Ready(Err(StreamError::Stopped(code))) => self.stop(from, code),
                    Poll::Ready(Err(error)) => return Poll::Ready(Some(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        Poll::Ready(None)
    }
}

/// Moves DATA bodies between two streams as they are (same boundaries, same FIN flags), each
/// direction paced by the other side's credit. Ends when both directions finished or either
/// stream fails; a reset on one side resets the other, a STOP is passed on to the sender.
async fn splice(mut a: RawStream, mut b: RawStream, relayed: &AtomicU64) {
    let mut forward = Pump::default();
    let mut backward = Pump::default();
    let failure = poll_fn(|cx| {
        let f = forward.poll(cx, &mut a, &mut b, relayed);
        if let Poll::Ready(Some(error)) = f {
            return Poll::Ready(Some(error));
        }
        let r = backward.poll(cx, &mut b, &mut a, relayed);
        if let Poll::Ready(Some(error)) = r {
            return Poll::Ready(Some(error));
        }
        if forward.done && backward.done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await;
    if let Some(error) = failure {
        let code = match error {
            StreamError::Reset(code) => code,
            _ => Code::SessionClosed,
        };
        a.reset(code);
        b.reset(code);
    }
}

/// Writes the busy refusal to a connection about to be dropped. A fresh socket's send buffer
/// is empty: one poll writes it, never a wait.
fn refuse_busy<T: Io>(io: &mut T) {
    let _ = io
        .write_all(&HandshakeRefusal::Busy.encode())
        .now_or_never();
}
