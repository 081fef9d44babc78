//! The client core (PROTOCOL.md §7, §10): sessions to relay servers, listeners on dmsg ports,
//! and end-to-end encrypted streams dialed through a session.
//!
//! Every task the client starts (session drivers, incoming-stream handshakes) is tracked and
//! stopped by [`Client::close`]. Choosing servers and reconnecting is the caller's business
//! (the client lifecycle is built on top of this core).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addr::{DmsgAddr, Port};
use crate::handshake_io::initiate_session;
use crate::identity::{Keypair, PublicKey};
use crate::mux::{Mux, MuxConfig, Role, StreamError};
use crate::noise::{self, HandshakeCounts, HandshakeError, PqSettings, ResponderNext};
use crate::port::{PortAllocator, PortError, PortGuard};
use crate::session::{IncomingHandler, IncomingOpen, OpenAnswer, Session};
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
    /// Deadline for TCP connect plus the session handshake.
    pub handshake_timeout: Duration,
    /// Deadline for a stream open to be answered.
    pub open_timeout: Duration,
}

impl Default for ClientConfig {
    /// Backlog 20, 5 s deadlines.
    fn default() -> Self {
        Self {
            mux: MuxConfig::default(),
            pq: PqSettings::default(),
            accept_backlog: ACCEPT_BACKLOG,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            open_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed.
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
    sessions: Mutex<HashMap<PublicKey, Session>>,
    listeners: Mutex<HashMap<u16, mpsc::Sender<DmsgStream>>>,
    ports: PortAllocator,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// A dmsg client. Clones share the client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
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
    pub fn new(keypair: Keypair, config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                keypair,
                config,
                sessions: Mutex::new(HashMap::new()),
                listeners: Mutex::new(HashMap::new()),
                ports: PortAllocator::default(),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The client's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.keypair.public()
    }

    /// Handshake counters.
    pub fn handshake_stats(&self) -> HandshakeCounts {
        self.inner.config.pq.stats.snapshot()
    }

    /// Tasks the client owns now.
    pub fn task_count(&self) -> usize {
        self.inner.tasks.len()
    }

    /// dmsg ports reserved now (listeners and dialed streams).
    pub fn ports_in_use(&self) -> usize {
        self.inner.ports.in_use()
    }

    /// The live sessions, by server key.
    pub fn sessions(&self) -> Vec<Session> {
        self.lock_sessions().values().cloned().collect()
    }

    /// The live session to `server`, if any.
    pub fn session(&self, server: &PublicKey) -> Option<Session> {
        self.lock_sessions().get(server).cloned()
    }

    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<PublicKey, Session>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_listeners(&self) -> MutexGuard<'_, HashMap<u16, mpsc::Sender<DmsgStream>>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session to the server `pk` at `addr`.
    pub async fn connect(
        &self,
        pk: PublicKey,
        addr: impl ToSocketAddrs,
    ) -> Result<Session, ConnectError> {
        self.connect_with(pk, addr, false).await
    }

    /// [`Client::connect`] to a server known to advertise PQ: a classical-only handshake is
    /// then refused whatever the policy.
    pub async fn connect_with(
        &self,
        pk: PublicKey,
        addr: impl ToSocketAddrs,
        advertises_pq: bool,
    ) -> Result<Session, ConnectError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ConnectError::Closed);
        }
        let deadline = self.inner.config.handshake_timeout;
        let started = Instant::now();
        let connect = async {
            let mut tcp = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            let (established, read_ahead) = initiate_session(
                &mut tcp,
                &self.inner.keypair,
                pk,
                &self.inner.config.pq,
                advertises_pq,
            )
            .await?;
            Ok::<_, ConnectError>((tcp, peer, established, read_ahead))
        };
        let (tcp, peer, established, read_ahead) =
            tokio::time::timeout(deadline, connect)
                .await
                .map_err(|_| ConnectError::Timeout(deadline))??;
        let pq = established.pq();
        let (send, recv) = established.into_ciphers();
        let mux = Mux::new(
            Role::Initiator,
            self.inner.config.mux,
            send,
            recv,
            Instant::now(),
        );
        let (session, driver) =
            Session::new(tcp, read_ahead, mux, pk, peer, pq, self.incoming_handler());
        let client = self.clone();
        let owned = session.clone();
        self.inner.tasks.spawn(async move {
            let code = driver.await;
            let mut sessions = client.lock_sessions();
            if sessions.get(&pk).is_some_and(|s| s.id() == owned.id()) {
                sessions.remove(&pk);
            }
            drop(sessions);
            tracing::debug!(server = %pk, code = code.label(), "session ended");
        });

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
        if let Some(old) = self.lock_sessions().insert(pk, session.clone()) {
            old.close(Code::Replaced, "replaced by a newer session");
        }
        if self.inner.shutdown.is_cancelled() {
            session.close(Code::ShuttingDown, "client closing");
            return Err(ConnectError::Closed);
        }
        Ok(session)
    }

    /// Listens on `port`: streams dialed to it arrive through [`Listener::accept`].
    pub fn listen(&self, port: Port) -> Result<Listener, ListenError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ListenError::Closed);
        }
        let guard = self.inner.ports.reserve(port)?;
        let (tx, rx) = mpsc::channel(self.inner.config.accept_backlog.max(1));
        self.lock_listeners().insert(port.get(), tx);
        Ok(Listener {
            client: self.clone(),
            addr: DmsgAddr::new(self.public_key(), port),
            rx,
            _guard: guard,
        })
    }

    /// Dials `dst` through `session` (a session to a server the destination is connected to).
    pub async fn dial(&self, session: &Session, dst: DmsgAddr) -> Result<DmsgStream, DialError> {
        self.dial_with(session, dst, false).await
    }

    /// [`Client::dial`] to a destination known to advertise PQ.
    pub async fn dial_with(
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
        let timeout = self.inner.config.open_timeout;
        let (raw, body) = match tokio::time::timeout(timeout, pending.answer()).await {
            Err(_) => return Err(DialError::Timeout(timeout)),
            Ok(Ok(accepted)) => accepted,
            Ok(Err(OpenAnswer::Rejected(reason))) => {
                return Err(DialError::Rejected {
                    dst,
                    code: reason.code,
                    reason: reason.reason,
                });
            }
            Ok(Err(OpenAnswer::Closed(code))) => return Err(DialError::SessionClosed(code)),
            Ok(Err(OpenAnswer::Accepted(_))) => {
                return Err(DialError::SessionClosed(Code::SessionClosed));
            }
        };
        let accept = AcceptBody::decode(&body)?;
        let answered = expect.read_answer(&accept.noise)?;
        let established = pq.check(answered.outcome, advertises_pq, "stream")?;
        Ok(DmsgStream::new(raw, established, src, dst, Some(port)))
    }

    fn incoming_handler(&self) -> IncomingHandler {
        let client = self.clone();
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
        let Ok(permit) = listener.try_reserve_owned() else {
            return open.reject(
                Code::AcceptQueueFull,
                format!("accept queue of port {} is full", request.dst.port),
            );
        };
        let client = self.clone();
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

    /// Closes every session and listener, stops every task and waits for them.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.lock_listeners().clear();
        let sessions: Vec<Session> = self.lock_sessions().drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.close(Code::Normal, "client closing");
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.tasks.reopen();
    }
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
