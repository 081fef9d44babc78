//! The dmsg client: sessions to relay servers, listeners on dmsg ports, and end-to-end
//! encrypted streams (PROTOCOL.md §7, §10).
//!
//! The core is explicit: [`Client::connect`] opens a session, [`Client::listen`] takes a port,
//! [`Client::dial_via`] opens a stream through a given session. On top of it runs the
//! **lifecycle** ([`LifecycleConfig`]), started by [`Client::new`] when the client knows any
//! server (configured seeds, embedded defaults) or a discovery:
//! - it keeps `min_sessions` sessions up, choosing servers from discovery's available list
//!   (capacity-weighted) and falling back to the seeded servers when discovery fails or knows
//!   none, and delays its first choice by a random fraction of a second so a mass restart
//!   does not dial in lockstep ([`lifecycle`]); the sessions themselves are kept by the one
//!   session keeper — a task per target, concurrent dials, full-jitter backoff ([`keeper`]);
//! - now and then it moves off a server holding more than its fair share ([`balance`]);
//! - it publishes the client entry (its delegated servers) after session changes, debounced,
//!   re-checking shutdown right before each publish;
//! - [`Client::dial`] finds a destination through its entry (a TTL cache, then discovery) and
//!   its delegated servers ([`dial`]);
//! - it answers pings on [`control::PING_PORT`].
//!
//! Every task is owned: [`Client::close`] stops and joins the lifecycle tasks, *then* deletes
//! the entry (no publish can land after it), then closes sessions and joins the rest.

pub mod balance;
pub mod control;
pub mod dial;
pub mod keeper;
pub mod lifecycle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addr::{DmsgAddr, Port, ServerAddr};
use crate::discovery::Discovery;
use crate::handshake::initiate;
use crate::identity::{Keypair, PublicKey};
use crate::mux::{MuxConfig, Role, StreamError};
use crate::net::Dialer;
use crate::noise::{self, HandshakeCounts, HandshakeError, PqSettings, ResponderNext};
use crate::port::{PortAllocator, PortError, PortGuard};
use crate::pq_peers::PqPeers;
use crate::publisher::{EntryPublisher, Phase};
use crate::session::{IncomingHandler, IncomingOpen, OpenAnswer, Session, SessionSetup};
use crate::session_table::SessionTable;
use crate::stream::DmsgStream;
use crate::wire::{
    ACCEPT_BACKLOG, AcceptBody, BodyError, Code, HANDSHAKE_TIMEOUT, Pattern, StreamRequest,
};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Session mux settings.
    pub mux: MuxConfig,
    /// Post-quantum settings.
    pub pq: PqSettings,
    /// Streams a listener holds before refusing with "accept queue full".
    pub accept_backlog: usize,
    /// Deadline for connecting plus the session handshake.
    pub handshake_timeout: Duration,
    /// Deadline for a stream open to be answered (the `open_timeout` of every session's mux:
    /// a timer of the protocol core).
    pub open_timeout: Duration,
    /// Server choice, reconnects, entry publishing and dialing by address.
    pub lifecycle: LifecycleConfig,
    /// How sessions reach servers (TCP by default).
    pub dialer: Dialer,
}

impl Default for ClientConfig {
    /// Backlog 20, 5 s deadlines, default lifecycle.
    fn default() -> Self {
        Self {
            mux: MuxConfig::default(),
            pq: PqSettings::default(),
            accept_backlog: ACCEPT_BACKLOG,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            open_timeout: HANDSHAKE_TIMEOUT,
            lifecycle: LifecycleConfig::default(),
            dialer: Dialer::default(),
        }
    }
}

/// Where the client finds discovery.
#[derive(Clone)]
pub enum DiscoveryTarget {
    /// None: the client relies on its seeded servers.
    None,
    /// Discovery's TCP gRPC endpoint, `http://host:port`.
    Tcp(String),
    /// Discovery's dmsg key: reached at `dmsg://<pk>:80` through any live session.
    Dmsg(PublicKey),
    /// Any implementation (an in-memory one in unit tests).
    Custom(Arc<dyn Discovery>),
}

impl std::fmt::Debug for DiscoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Tcp(url) => write!(f, "Tcp({url})"),
            Self::Dmsg(pk) => write!(f, "Dmsg({pk})"),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// The client lifecycle (see the module docs).
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// Servers known without discovery; permanent entries, tried when discovery fails.
    pub seeds: Vec<ServerAddr>,
    /// Add the embedded default deployment ([`crate::deployment`]) to the seeds.
    pub include_default_seeds: bool,
    /// Try the seeds before discovery's list (to home the client on chosen servers), rather
    /// than only when discovery fails or lists none.
    pub prefer_seeds: bool,
    /// Where discovery is.
    pub discovery: DiscoveryTarget,
    /// Sessions to keep up; 0 means every known server.
    pub min_sessions: usize,
    /// First reconnect backoff ceiling.
    pub reconnect_base: Duration,
    /// Largest reconnect backoff ceiling.
    pub reconnect_cap: Duration,
    /// The first attempt after start waits a random time up to this.
    pub start_jitter: Duration,
    /// Publish the client entry (delegated servers) to discovery.
    pub publish_entry: bool,
    /// Session changes within this window make one publish.
    pub publish_debounce: Duration,
    /// Republish this often even without changes.
    pub entry_refresh: Duration,
    /// Check this often that discovery still holds the entry (it may have restarted empty);
    /// republish at once if not.
    pub entry_check: Duration,
    /// How long a looked-up destination entry is reused.
    pub entry_cache_ttl: Duration,
    /// Overall deadline of [`Client::dial`].
    pub dial_timeout: Duration,
    /// Answer pings on [`control::PING_PORT`].
    pub serve_ping: bool,
    /// How often (± half, at random) a client with `min_sessions` > 0 checks whether its
    /// server holds more than its fair share and moves ([`balance`]); zero: never moves.
    pub rebalance_every: Duration,
    /// Seeds every random choice of the lifecycle (jitter, seed order, moves, backoff) for
    /// reproducible runs; `None`: OS randomness.
    pub seed: Option<u64>,
}

impl Default for LifecycleConfig {
    /// One session, 1 s → 60 s reconnects, ≤ 1 s start jitter, entries published within
    /// 500 ms of a change and every 5 minutes, 5-minute entry cache, 15 s dials, a balance
    /// check every 15–45 s.
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            include_default_seeds: true,
            prefer_seeds: false,
            discovery: DiscoveryTarget::None,
            min_sessions: 1,
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(60),
            start_jitter: Duration::from_secs(1),
            publish_entry: true,
            publish_debounce: Duration::from_millis(500),
            entry_refresh: Duration::from_secs(300),
            entry_check: Duration::from_secs(5),
            entry_cache_ttl: Duration::from_secs(300),
            dial_timeout: Duration::from_secs(15),
            serve_ping: true,
            rebalance_every: Duration::from_secs(30),
            seed: None,
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Connecting (TCP, or the configured dialer) failed.
    #[error("cannot reach the server: {0}")]
    Tcp(std::io::Error),
    /// The handshake failed or was refused.
    #[error("session handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server ended the session before accepting it.
    #[error("the server refused the session: {}", .0.description())]
    Refused(Code),
    /// The whole connect took longer than its deadline.
    #[error("connecting took longer than {0:?}")]
    Timeout(Duration),
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
}

/// Why a stream could not be dialed. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No ephemeral port was free.
    #[error("no local port: {0}")]
    Port(#[from] PortError),
    /// The session could not open a stream.
    #[error("cannot open a stream on the session: {0}")]
    Open(#[from] StreamError),
    /// The server or the destination refused the stream.
    #[error("stream to {dst} refused ({}): {reason}", .code.description())]
    Rejected {
        /// The destination.
        dst: DmsgAddr,
        /// Why.
        code: Code,
        /// Detail from whoever refused.
        reason: String,
    },
    /// The session ended while the open was pending.
    #[error("the session closed while opening the stream: {}", .0.description())]
    SessionClosed(Code),
    /// The open was not answered in time.
    #[error("stream open not answered within {0:?}")]
    Timeout(Duration),
    /// The ACCEPT body did not parse.
    #[error("malformed stream accept: {0}")]
    BadAccept(#[from] BodyError),
    /// The end-to-end handshake failed (or the PQ policy refused it).
    #[error("end-to-end handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why a listener could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The port is taken.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
}

struct Inner {
    keypair: Keypair,
    config: ClientConfig,
    sessions: SessionTable,
    /// The one connect under way to each server (see [`Client::connect_with`]).
    connecting: Mutex<HashMap<PublicKey, ConnectSlot>>,
    listeners: Mutex<HashMap<u16, PortListener>>,
    ports: PortAllocator,
    /// Session drivers and incoming-stream handshakes.
    tasks: TaskTracker,
    /// Ends the core (sessions, listeners) on close.
    shutdown: CancellationToken,
    /// The lifecycle's tasks (maintenance, publisher, ping responder), joined first on close.
    lifecycle: TaskTracker,
    /// Stops the lifecycle.
    stop: CancellationToken,
    /// Discovery (an "unavailable" stand-in when none is configured; never absent).
    discovery: Arc<dyn Discovery>,
    /// Servers known by key: the seeds (permanent) and what discovery listed.
    servers: Mutex<lifecycle::KnownServers>,
    /// Destination entries looked up by [`Client::dial`].
    entries: Mutex<dial::EntryCache>,
    /// Publishes the client entry (disabled without discovery or `publish_entry`).
    publisher: Mutex<EntryPublisher>,
    /// Set when the first session came up (the end of the cold start).
    ever_connected: AtomicBool,
    /// Peers known to advertise PQ: from every signed entry the client sees and its `#pq`
    /// seeds; part of `config.pq`'s known-peer rule (PROTOCOL.md §4.5).
    pq_peers: Arc<PqPeers>,
}

/// A handle to a client that does not keep it alive (for things the client itself owns, such
/// as its discovery channel over dmsg).
#[derive(Clone)]
pub struct WeakClient(std::sync::Weak<Inner>);

impl WeakClient {
    /// The client, if it still exists.
    pub fn upgrade(&self) -> Option<Client> {
        self.0.upgrade().map(|inner| Client { inner, _user: None })
    }
}

impl std::fmt::Debug for WeakClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakClient")
    }
}

/// A dmsg client. Clones share the client; dropping the last clone shuts it down (its
/// tasks end, its sessions close) — [`Client::close`] does the same in order and waits for
/// it, and also deletes the client entry from discovery.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Counts the user's handles; `None` in the client's own tasks, which must not keep it
    /// alive (mini-redis's `DbDropGuard`, quinn's endpoint).
    _user: Option<Arc<DropGuard>>,
}

/// Shuts the client down when the last user handle is dropped.
struct DropGuard {
    stop: CancellationToken,
    shutdown: CancellationToken,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        // Stops the lifecycle and ends every session driver; the tasks then end by
        // themselves and the last of them frees the client. (No entry delete: that needs
        // an await — `close` does it.)
        self.stop.cancel();
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("pk", &self.inner.keypair.public())
            .finish_non_exhaustive()
    }
}

/// The bytes a `KK` handshake is bound to: both stream addresses (PROTOCOL.md §4.2).
fn stream_binding(src: &DmsgAddr, dst: &DmsgAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(68);
    for addr in [src, dst] {
        out.extend_from_slice(addr.pk.as_bytes());
        out.extend_from_slice(&addr.port.get().to_be_bytes());
    }
    out
}

impl Client {
    /// A client with `keypair` as its identity. No session is opened yet.
    ///
    /// Always yields a working client, even with discovery unreachable: the lifecycle (if it
    /// has seeds or a discovery) starts in the background at once — call this inside a tokio
    /// runtime. A client without either only does what it is told (`connect`, `dial_via`).
    pub fn new(keypair: Keypair, mut config: ClientConfig) -> Self {
        let mut seeds = config.lifecycle.seeds.clone();
        if config.lifecycle.include_default_seeds {
            seeds.extend(crate::deployment::default_servers());
        }
        let pq_peers = PqPeers::new();
        for seed in seeds.iter().filter(|seed| seed.pq) {
            pq_peers.pin(seed.pk);
        }
        config.pq.known_pq = Some(pq_peers.known_pq(config.pq.known_pq.take()));
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
            discovery: lifecycle::discovery_for(
                &config.lifecycle.discovery,
                WeakClient(weak.clone()),
            ),
            keypair,
            config,
            sessions: SessionTable::new(),
            connecting: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            ports: PortAllocator::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            lifecycle: TaskTracker::new(),
            stop: CancellationToken::new(),
            servers: Mutex::new(lifecycle::KnownServers::new(seeds)),
            entries: Mutex::new(dial::EntryCache::default()),
            publisher: Mutex::new(EntryPublisher::disabled()),
            ever_connected: AtomicBool::new(false),
            pq_peers,
        });
        let user = Some(Arc::new(DropGuard {
            stop: inner.stop.clone(),
            shutdown: inner.shutdown.clone(),
        }));
        let client = Self { inner, _user: user };
        lifecycle::start(&client.internal());
        client
    }

    /// A handle for the client's own tasks: it does not keep the client alive.
    fn internal(&self) -> Client {
        Client {
            inner: self.inner.clone(),
            _user: None,
        }
    }

    /// A handle that does not keep the client alive.
    pub fn downgrade(&self) -> WeakClient {
        WeakClient(Arc::downgrade(&self.inner))
    }

    /// Discovery as the client sees it.
    pub fn discovery(&self) -> &Arc<dyn Discovery> {
        &self.inner.discovery
    }

    /// The servers this client has a live session with (the live set: for the uptime probe).
    pub fn connected_servers(&self) -> Vec<PublicKey> {
        self.inner.sessions.live_keys()
    }

    /// The sequence of the client entry discovery holds, once the lifecycle published it.
    pub fn published_sequence(&self) -> Option<u64> {
        let state = crate::sync::lock(&self.inner.publisher).state();
        (state.phase == Phase::Registered).then_some(state.sequence)
    }

    /// A watch bumped whenever a session is added or removed.
    pub fn session_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.sessions.changes()
    }

    /// Whether any session ever came up (false during a cold start).
    pub fn ever_connected(&self) -> bool {
        self.inner.ever_connected.load(Ordering::Relaxed)
    }

    /// The client's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.keypair.public()
    }

    /// Handshake counters.
    pub fn handshake_stats(&self) -> HandshakeCounts {
        self.inner.config.pq.stats.snapshot()
    }

    /// The peers this client knows to advertise PQ (learned from the signed entries it saw).
    pub fn pq_peers(&self) -> &Arc<PqPeers> {
        &self.inner.pq_peers
    }

    /// Tasks the client owns now (its core and its lifecycle).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.len() + self.inner.lifecycle.len()
    }

    /// dmsg ports reserved now (listeners and dialed streams).
    pub fn ports_in_use(&self) -> usize {
        self.inner.ports.in_use()
    }

    /// The live sessions, by server key.
    pub fn sessions(&self) -> Vec<Session> {
        self.inner.sessions.all()
    }

    /// The live session to `server`, if any.
    pub fn session(&self, server: &PublicKey) -> Option<Session> {
        self.inner.sessions.get(server)
    }

    fn lock_listeners(&self) -> MutexGuard<'_, HashMap<u16, PortListener>> {
        crate::sync::lock(&self.inner.listeners)
    }

    /// Opens a session to the server `pk` at `addr` (`host:port` for TCP; whatever the
    /// configured [`crate::net::Dial`] understands).
    pub async fn connect(
        &self,
        pk: PublicKey,
        addr: impl std::fmt::Display,
    ) -> Result<Session, ConnectError> {
        self.connect_with(pk, addr, false).await
    }

    /// [`Client::connect`] to a server known to advertise PQ: a classical-only handshake is
    /// then refused whatever the policy.
    ///
    /// One session per server: if the client already has a live session to `pk`, that is
    /// the answer; if a connect to `pk` is under way (the lifecycle's, a dial's, another
    /// caller's), this waits for it and returns its session. Only when that connect failed
    /// does this one try itself. So a client never races itself into newest-wins
    /// replacement at the server.
    pub async fn connect_with(
        &self,
        pk: PublicKey,
        addr: impl std::fmt::Display,
        advertises_pq: bool,
    ) -> Result<Session, ConnectError> {
        let address = addr.to_string();
        loop {
            if self.inner.shutdown.is_cancelled() {
                return Err(ConnectError::Closed);
            }
            if let Some(session) = self.session(&pk).filter(|s| !s.is_closed()) {
                return Ok(session);
            }
            match self.claim_connect(pk) {
                ConnectClaim::Mine(gate) => {
                    let result = self.open_session(pk, &address, advertises_pq).await;
                    drop(gate);
                    return result;
                }
                // Another connect to `pk` is under way: wait for it, then look again.
                ConnectClaim::Theirs(mut done) => {
                    let _ = done.changed().await;
                }
            }
        }
    }

    /// Claims the one connect to `pk`, or returns a watch that ends when the current one
    /// finishes.
    fn claim_connect(&self, pk: PublicKey) -> ConnectClaim {
        let mut connecting = crate::sync::lock(&self.inner.connecting);
        if let Some(under_way) = connecting.get(&pk) {
            return ConnectClaim::Theirs(under_way.done.subscribe());
        }
        let (tx, _) = watch::channel(());
        let id = NEXT_CONNECT.fetch_add(1, Ordering::Relaxed);
        connecting.insert(pk, ConnectSlot { id, done: tx });
        ConnectClaim::Mine(ConnectGate {
            client: self.internal(),
            pk,
            id,
        })
    }

    /// Dials `address`, runs the handshake and waits for READY; the new session goes into
    /// the session table.
    async fn open_session(
        &self,
        pk: PublicKey,
        address: &str,
        advertises_pq: bool,
    ) -> Result<Session, ConnectError> {
        let deadline = self.inner.config.handshake_timeout;
        let started = Instant::now();
        let connect = async {
            let mut connection = self
                .inner
                .config
                .dialer
                .0
                .dial(address)
                .await
                .map_err(ConnectError::Tcp)?;
            let handshake = initiate(
                &mut connection.io,
                &self.inner.keypair,
                pk,
                &self.inner.config.pq,
                advertises_pq,
            )
            .await?;
            Ok::<_, ConnectError>((connection, handshake))
        };
        let (connection, handshake) = tokio::time::timeout(deadline, connect)
            .await
            .map_err(|_| ConnectError::Timeout(deadline))??;
        let (session, driver) = Session::over(
            connection.io,
            handshake,
            SessionSetup {
                role: Role::Initiator,
                mux: MuxConfig {
                    open_timeout: self.inner.config.open_timeout,
                    ..self.inner.config.mux
                },
                remote_addr: connection.peer,
                incoming: self.incoming_handler(),
            },
        );
        let client = self.internal();
        let owned = session.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            tokio::pin!(driver);
            // Every session ends when the client closes, even one whose connect was
            // abandoned before it reached the session table.
            let code = tokio::select! {
                code = &mut driver => code,
                () = shutdown.cancelled() => {
                    owned.close(Code::Normal, "client closing");
                    driver.await
                }
            };
            client.inner.sessions.remove(&owned);
            tracing::debug!(server = %pk, code = code.label(), "session ended");
        });

        // Closes the session if this future is dropped (a caller's timeout) before it is
        // handed out: nothing else would ever close it.
        let abandoned = CloseOnDrop(Some(session.clone()));
        let remaining = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, session.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(code)) => {
                session.close(Code::Normal, "refused");
                return Err(ConnectError::Refused(code));
            }
            Err(_) => {
                session.close(Code::Normal, "no READY in time");
                return Err(ConnectError::Timeout(deadline));
            }
        }
        abandoned.defuse();
        self.inner
            .sessions
            .insert(session.clone(), "replaced by a newer session");
        self.inner.ever_connected.store(true, Ordering::Relaxed);
        if self.inner.shutdown.is_cancelled() {
            session.close(Code::ShuttingDown, "client closing");
            return Err(ConnectError::Closed);
        }
        Ok(session)
    }

    /// Listens on `port`: streams dialed to it arrive through [`Listener::accept`].
    pub fn listen(&self, port: Port) -> Result<Listener, ListenError> {
        self.listen_with(port, None)
    }

    /// Listens on `port` for the source keys `allow` admits: a stream from any other key is
    /// refused with `NOT_ALLOWED` before the end-to-end handshake (PROTOCOL.md §7.5), so it
    /// costs this client nothing and its dialer learns why.
    pub fn listen_filtered(
        &self,
        port: Port,
        allow: impl Fn(&PublicKey) -> bool + Send + Sync + 'static,
    ) -> Result<Listener, ListenError> {
        self.listen_with(port, Some(Arc::new(allow)))
    }

    fn listen_with(&self, port: Port, allow: Option<AllowKey>) -> Result<Listener, ListenError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ListenError::Closed);
        }
        let guard = self.inner.ports.reserve(port)?;
        let (tx, rx) = mpsc::channel(self.inner.config.accept_backlog.max(1));
        self.lock_listeners()
            .insert(port.get(), PortListener { queue: tx, allow });
        Ok(Listener {
            client: self.internal(),
            addr: DmsgAddr::new(self.public_key(), port),
            rx,
            _guard: guard,
        })
    }

    /// Dials `dst` through `session` (a session to a server the destination is connected to).
    pub async fn dial_via(
        &self,
        session: &Session,
        dst: DmsgAddr,
    ) -> Result<DmsgStream, DialError> {
        self.dial_via_with(session, dst, false).await
    }

    /// [`Client::dial_via`] to a destination known to advertise PQ.
    pub async fn dial_via_with(
        &self,
        session: &Session,
        dst: DmsgAddr,
        advertises_pq: bool,
    ) -> Result<DmsgStream, DialError> {
        let port = self.inner.ports.reserve_ephemeral()?;
        let src = DmsgAddr::new(self.public_key(), port.port());
        let pq = &self.inner.config.pq;
        let mode = pq.offer();
        let binding = stream_binding(&src, &dst);
        let (expect, msg1) =
            noise::initiate(Pattern::Kk, &self.inner.keypair, dst.pk, mode, &binding)?;
        let request = StreamRequest {
            src,
            dst,
            mode,
            noise: msg1.into(),
        };
        let pending = session.open(&request.encode())?;
        // The open deadline is a timer of the session's mux (`open_timeout`).
        let (raw, body) = match pending.answer().await {
            Ok(accepted) => accepted,
            Err(OpenAnswer::TimedOut) => {
                return Err(DialError::Timeout(self.inner.config.open_timeout));
            }
            Err(OpenAnswer::Rejected(reason)) => {
                return Err(DialError::Rejected {
                    dst,
                    code: reason.code,
                    reason: reason.reason,
                });
            }
            Err(OpenAnswer::Closed(code)) => return Err(DialError::SessionClosed(code)),
            Err(OpenAnswer::Accepted(_)) => {
                return Err(DialError::SessionClosed(Code::SessionClosed));
            }
        };
        let accept = AcceptBody::decode(&body)?;
        let answered = expect.read_answer(&accept.noise)?;
        let established = pq.check(answered.outcome, advertises_pq, "stream")?;
        Ok(DmsgStream::new(raw, established, src, dst, Some(port)))
    }

    fn incoming_handler(&self) -> IncomingHandler {
        let client = self.internal();
        Arc::new(move |open: IncomingOpen| client.route_incoming(open))
    }

    /// Routes a stream the server relays to this client: to a listener with room, after the
    /// end-to-end handshake; otherwise refused with the reason.
    fn route_incoming(&self, open: IncomingOpen) {
        let request = match StreamRequest::decode(open.request()) {
            Ok(request) => request,
            Err(error) => return open.reject(Code::MalformedRequest, error.to_string()),
        };
        if request.dst.pk != self.public_key() {
            return open.reject(Code::WrongDestination, "not addressed to this client");
        }
        let Some(listener) = self.lock_listeners().get(&request.dst.port.get()).cloned() else {
            return open.reject(
                Code::NoListener,
                format!("no listener on port {}", request.dst.port),
            );
        };
        if let Some(allow) = &listener.allow
            && !allow(&request.src.pk)
        {
            return open.reject(
                Code::NotAllowed,
                format!(
                    "port {} does not accept streams from {}",
                    request.dst.port, request.src.pk
                ),
            );
        }
        let Ok(permit) = listener.queue.try_reserve_owned() else {
            return open.reject(
                Code::AcceptQueueFull,
                format!("accept queue of port {} is full", request.dst.port),
            );
        };
        let client = self.internal();
        self.inner.tasks.spawn(async move {
            if let Some(stream) = client.answer_incoming(open, request) {
                permit.send(stream);
            }
        });
    }

    /// The responder's end-to-end handshake for an incoming stream.
    fn answer_incoming(&self, open: IncomingOpen, request: StreamRequest) -> Option<DmsgStream> {
        let pq = &self.inner.config.pq;
        let binding = stream_binding(&request.src, &request.dst);
        let responded = match noise::respond(
            Pattern::Kk,
            &self.inner.keypair,
            Some(request.src.pk),
            request.mode,
            &binding,
            &request.noise,
            pq.enabled,
        ) {
            Ok(responded) => responded,
            Err(error) => {
                open.reject(Code::HandshakeFailed, error.to_string());
                return None;
            }
        };
        let ResponderNext::Done(outcome) = responded.next else {
            open.reject(Code::HandshakeFailed, "unexpected handshake state");
            return None;
        };
        let established = match pq.check(outcome, false, "stream") {
            Ok(established) => established,
            Err(error) => {
                open.reject(Code::PqRequired, error.to_string());
                return None;
            }
        };
        let body = AcceptBody {
            noise: responded.reply.into(),
        };
        let raw = open.accept(&body.encode()).ok()?;
        Some(DmsgStream::new(
            raw,
            established,
            request.dst,
            request.src,
            None,
        ))
    }

    /// Stops the lifecycle and joins its tasks; then deletes the client entry (no publish can
    /// land after the delete: the publisher is already joined); then closes every session and
    /// listener and joins the remaining tasks.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.lifecycle.close();
        self.inner.lifecycle.wait().await;
        let publisher = std::mem::replace(
            &mut *crate::sync::lock(&self.inner.publisher),
            EntryPublisher::disabled(),
        );
        publisher.stop().await;
        self.inner.shutdown.cancel();
        self.lock_listeners().clear();
        let sessions = self.inner.sessions.drain();
        for session in sessions {
            session.close(Code::Normal, "client closing");
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.tasks.reopen();
        self.inner.lifecycle.reopen();
    }
}

/// Connects under way, by server key (ids tell one claim from the next).
struct ConnectSlot {
    id: u64,
    /// Dropped when the connect finishes: every waiter's `changed()` then returns.
    done: watch::Sender<()>,
}

static NEXT_CONNECT: AtomicU64 = AtomicU64::new(1);

/// Whose connect to a server this is.
enum ConnectClaim {
    /// This caller connects; others wait for it until the gate drops.
    Mine(ConnectGate),
    /// Another caller is connecting: wait on this.
    Theirs(watch::Receiver<()>),
}

/// Held by the one caller connecting to `pk`; dropping it (done, failed, or the caller gave
/// up) releases the waiters.
struct ConnectGate {
    client: Client,
    pk: PublicKey,
    id: u64,
}

impl Drop for ConnectGate {
    fn drop(&mut self) {
        let mut connecting = crate::sync::lock(&self.client.inner.connecting);
        if connecting
            .get(&self.pk)
            .is_some_and(|slot| slot.id == self.id)
        {
            connecting.remove(&self.pk);
        }
    }
}

/// Closes a session when dropped, unless defused.
struct CloseOnDrop(Option<Session>);

impl CloseOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.close(Code::Normal, "connect abandoned");
        }
    }
}

/// Which source keys a filtered listener admits.
type AllowKey = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// A listener as incoming streams find it: its queue, and its filter if it has one.
#[derive(Clone)]
struct PortListener {
    queue: mpsc::Sender<DmsgStream>,
    allow: Option<AllowKey>,
}

/// Streams dialed to one port of this client.
#[derive(Debug)]
pub struct Listener {
    client: Client,
    addr: DmsgAddr,
    rx: mpsc::Receiver<DmsgStream>,
    _guard: PortGuard,
}

impl Listener {
    /// The address being listened on.
    pub fn addr(&self) -> DmsgAddr {
        self.addr
    }

    /// The next stream; `None` once the client closed.
    pub async fn accept(&mut self) -> Option<DmsgStream> {
        self.rx.recv().await
    }

    /// Serves every stream arriving until `stop` or the client closes: each runs
    /// `handle(stream)` in a task of `tasks`, at most `limit` (at least 1) at once — more
    /// wait in the backlog; `stop` also ends the handlers in flight.
    pub async fn serve<F, Fut>(
        mut self,
        limit: usize,
        tasks: TaskTracker,
        stop: CancellationToken,
        handle: F,
    ) where
        F: Fn(DmsgStream) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let limit = limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let slots = Arc::new(tokio::sync::Semaphore::new(limit));
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                stream = self.accept() => match stream {
                    Some(stream) => stream,
                    None => return,
                },
            };
            let stop = stop.clone();
            let handler = handle(stream);
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = handler => {}
                }
                drop(permit);
            });
        }
    }

    /// Polls for the next stream.
    pub fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DmsgStream>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.client.lock_listeners().remove(&self.addr.port.get());
    }
}
