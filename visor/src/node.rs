//! The visor's data plane at runtime: its transports, its rule table, its route groups and
//! listeners, and the tasks that move packets between them (ROUTING.md §2–§6).
//!
//! [`Visor`] is a cheap handle. Clones share the node; dropping the last user handle shuts
//! it down (every transport closes, every task ends); [`Visor::shutdown`] does the same and
//! waits for every task. Locks guard plain data and are never held across an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::{Bytes, BytesMut};
use dmsg::addr::Port;
use dmsg::identity::{Keypair, PublicKey};
use dmsg::noise::{self, PqSettings, ResponderNext};
use dmsg::wire::{Mode, Pattern};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::packet::{ByeCode, CloseCode, FrameType, Header, RouteId};
use crate::route_group::{
    GroupAddr, GroupOwner, GroupShared, ROUTE_HANDSHAKE_TIMEOUT, ROUTE_KEEPALIVE_INTERVAL,
    RouteGroup, RouteGroupError, binding,
};
use crate::router::{
    self, Decision, DropReason, Rule, RuleKind, RuleTable, TableConfig, TableCounts, TableError,
    TransportId,
};
use crate::transport::frame::{Frame, FrameReader, FrameWriter};
use crate::transport::handshake::{self, StcpHandshakeError};
use crate::transport::link::{self, FrameSink};
use crate::transport::queue::{OutFrame, TRANSPORT_QUEUE_BYTES};
use crate::transport::{Transport, TransportKind, bye, new_connection_wins, stcp};
use discovery_client::entry::TransportEntry;
use discovery_client::publisher::{EntryPublisher, PublishState, PublisherConfig, TransportSource};
use discovery_client::registry::Registry;

pub mod direct;

/// Route groups a listener holds before refusing new ones.
pub const ACCEPT_BACKLOG: usize = 64;
/// The dmsg port visors accept dmsg transports on (ROUTING.md §2.1).
pub const DMSG_TRANSPORT_PORT: Port = match Port::new(45) {
    Some(port) => port,
    None => unreachable!(),
};
/// stcp handshakes in progress at once on the listener.
pub const MAX_STCP_HANDSHAKES: usize = 64;

/// How long the low edge waits for the other edge's SIGN.
pub const SIGN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Registration timing of transports: refreshed (re-signed by both edges) every 10 minutes,
/// well within the registry's one-hour TTL; checked every 30 s.
pub fn registration_config() -> PublisherConfig {
    PublisherConfig {
        refresh: std::time::Duration::from_secs(600),
        check_every: std::time::Duration::from_secs(30),
        ..PublisherConfig::default()
    }
}

/// Data-plane settings.
#[derive(Clone)]
pub struct VisorConfig {
    /// Post-quantum settings (stcp transports and route groups).
    pub pq: PqSettings,
    /// Rule table limits and timers.
    pub table: TableConfig,
    /// Bytes each outgoing transport queue holds at most.
    pub queue_bytes: usize,
    /// Route groups a listener holds before refusing new ones.
    pub accept_backlog: usize,
    /// stcp peers by key.
    pub pk_table: HashMap<PublicKey, SocketAddr>,
    /// Where transports are registered (the low edge registers each, ROUTING.md §2.4);
    /// `None` when no discovery is configured: transports then work unregistered.
    pub registry: Option<Arc<dyn Registry>>,
    /// Registration timing.
    pub registration: PublisherConfig,
    /// The route-setup services [`Visor::dial_route`] asks, in order (none: it cannot).
    pub route_setups: Vec<PublicKey>,
}

impl std::fmt::Debug for VisorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisorConfig")
            .field("pq", &self.pq)
            .field("pk_table", &self.pk_table.len())
            .field("registry", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for VisorConfig {
    /// The defaults of ROUTING.md §7, no stcp peers.
    fn default() -> Self {
        Self {
            pq: PqSettings::default(),
            table: TableConfig::default(),
            queue_bytes: TRANSPORT_QUEUE_BYTES,
            accept_backlog: ACCEPT_BACKLOG,
            pk_table: HashMap::new(),
            registry: None,
            registration: registration_config(),
            route_setups: Vec::new(),
        }
    }
}

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer is not in the `pk_table`.
    #[error("{0} is not in the stcp pk_table")]
    UnknownPeer(PublicKey),
    /// The TCP connect failed.
    #[error("stcp connect to {addr}: {error}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The stcp handshake failed.
    #[error("stcp handshake with {peer}: {error}")]
    Handshake {
        /// With whom.
        peer: PublicKey,
        /// Why.
        error: StcpHandshakeError,
    },
    /// The dmsg stream to the peer's port 45 could not be opened.
    #[error("dmsg transport to {peer}: {error}")]
    Dmsg {
        /// With whom.
        peer: PublicKey,
        /// Why.
        error: dmsg::client::dial::DialByAddrError,
    },
    /// A connection of the other edge's for the same transport was kept instead.
    #[error("a transport to {0} of this type already exists and wins (ROUTING.md §2.5)")]
    Duplicate(PublicKey),
    /// The visor is shutting down.
    #[error("the visor is shutting down")]
    ShuttingDown,
}

/// Counters of the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisorStats {
    /// Rules and reservations by type.
    pub rules: TableCounts,
    /// Live transports.
    pub transports: usize,
    /// Live route groups.
    pub route_groups: usize,
    /// Packets dropped, by reason.
    pub drops: Vec<(DropReason, u64)>,
    /// Bytes queued on all outgoing transports now.
    pub queued_bytes: usize,
    /// Frame bytes written to transports since start.
    pub bytes_sent: u64,
    /// Frame bytes read from transports since start.
    pub bytes_received: u64,
}

impl VisorStats {
    /// The drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

struct Inner {
    keypair: Keypair,
    config: VisorConfig,
    /// The visor's dmsg client (dmsg transports ride on it). Always present: a bare one when
    /// the caller gave none.
    dmsg: dmsg::client::Client,
    table: Mutex<RuleTable>,
    transports: Mutex<HashMap<TransportId, Arc<Transport>>>,
    /// Route groups by the key of their CONSUME rule.
    groups: Mutex<HashMap<RouteId, Arc<GroupShared>>>,
    listeners: Mutex<HashMap<Port, mpsc::Sender<RouteGroup>>>,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Bytes of transports that closed (live ones count their own).
    closed_sent: AtomicU64,
    closed_received: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    stcp_handshakes: Arc<tokio::sync::Semaphore>,
    /// The registration of each transport this visor is the low edge of.
    registrations: Mutex<HashMap<TransportId, EntryPublisher>>,
    /// One channel per route-setup service, reused by every route dial.
    route_setup_channels: crate::route_dial::RouteSetupChannels,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A visor's data plane (see the module docs).
#[derive(Clone)]
pub struct Visor {
    inner: Arc<Inner>,
    _user: Option<Arc<DropGuard>>,
}

struct DropGuard(Weak<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.stop();
        }
    }
}

/// A handle that does not keep the visor alive.
#[derive(Clone, Debug)]
pub struct WeakVisor(Weak<Inner>);

impl WeakVisor {
    /// The visor, if it still exists.
    pub fn upgrade(&self) -> Option<Visor> {
        self.0.upgrade().map(|inner| Visor { inner, _user: None })
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visor")
            .field("pk", &self.keypair.public())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Visor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visor")
            .field("pk", &self.inner.keypair.public())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Signals shutdown and closes every transport (the tasks then end on their own).
    fn stop(&self) {
        self.shutdown.cancel();
        for transport in lock(&self.transports).values() {
            let _ = transport.send(bye(ByeCode::ShuttingDown));
            transport.close("the visor is shutting down");
        }
    }

    fn count_drop(&self, transport: &Transport, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
        transport.count_drop(reason);
    }

    fn transport(&self, id: &TransportId) -> Option<Arc<Transport>> {
        lock(&self.transports)
            .get(id)
            .filter(|t| !t.is_closed())
            .cloned()
    }
}

fn close_packet(route: RouteId, code: CloseCode) -> OutFrame {
    OutFrame {
        header: Header::for_route(FrameType::Close, route, 1),
        body: Bytes::copy_from_slice(&[code as u8]),
    }
}

impl Visor {
    /// A visor with `keypair` as its identity and a bare dmsg client of its own (no seeds, no
    /// discovery: it dials only when told). See [`Visor::with_dmsg`].
    pub fn new(keypair: Keypair, config: VisorConfig) -> Self {
        let client = dmsg::client::Client::new(
            keypair.clone(),
            dmsg::client::ClientConfig {
                pq: config.pq.clone(),
                lifecycle: dmsg::client::LifecycleConfig {
                    include_default_seeds: false,
                    ..dmsg::client::LifecycleConfig::default()
                },
                ..dmsg::client::ClientConfig::default()
            },
        );
        Self::with_dmsg(keypair, config, client)
    }

    /// A visor with `keypair` as its identity, riding dmsg transports on `client` (whose key
    /// must be the same). Its maintenance task (rule collection, route-group keep-alives) and
    /// its dmsg transport listener (port 45) start at once — call inside a tokio runtime.
    pub fn with_dmsg(keypair: Keypair, config: VisorConfig, client: dmsg::client::Client) -> Self {
        let table = RuleTable::new(config.table, Instant::now());
        let listener = client.listen(DMSG_TRANSPORT_PORT);
        let inner = Arc::new(Inner {
            keypair,
            config,
            dmsg: client,
            table: Mutex::new(table),
            transports: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            drops: Default::default(),
            closed_sent: AtomicU64::new(0),
            closed_received: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            stcp_handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_STCP_HANDSHAKES)),
            registrations: Mutex::new(HashMap::new()),
            route_setup_channels: Default::default(),
        });
        let visor = Self {
            _user: Some(Arc::new(DropGuard(Arc::downgrade(&inner)))),
            inner,
        };
        let internal = visor.internal();
        visor
            .inner
            .tasks
            .spawn(async move { internal.maintain().await });
        match listener {
            Ok(listener) => {
                let internal = visor.internal();
                visor
                    .inner
                    .tasks
                    .spawn(async move { internal.serve_dmsg(listener).await });
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for dmsg transports on port 45");
            }
        }
        visor
    }

    /// The visor's dmsg client.
    pub fn dmsg(&self) -> &dmsg::client::Client {
        &self.inner.dmsg
    }

    /// Accepts dmsg transports (streams to port 45) until shutdown.
    async fn serve_dmsg(&self, mut listener: dmsg::client::Listener) {
        loop {
            let stream = tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                stream = listener.accept() => stream,
            };
            let Some(stream) = stream else { return };
            let peer = stream.remote_addr().pk;
            let (read, write) = tokio::io::split(stream);
            if let Err(error) = self.attach(
                peer,
                TransportKind::Dmsg,
                peer,
                FrameReader::new(read, None),
                FrameWriter::new(write, None),
            ) {
                tracing::debug!(%peer, %error, "dmsg transport not kept");
            }
        }
    }

    /// Dials a dmsg transport: a dmsg stream to `peer`'s port 45 (ROUTING.md §2.1), found
    /// through the dmsg client's discovery.
    pub async fn dial_dmsg(&self, peer: PublicKey) -> Result<Arc<Transport>, TransportError> {
        let dst = dmsg::addr::DmsgAddr::new(peer, DMSG_TRANSPORT_PORT);
        let stream = tokio::select! {
            () = self.inner.shutdown.cancelled() => return Err(TransportError::ShuttingDown),
            stream = self.inner.dmsg.dial(dst) => stream,
        }
        .map_err(|error| TransportError::Dmsg { peer, error })?;
        let (read, write) = tokio::io::split(stream);
        self.attach(
            peer,
            TransportKind::Dmsg,
            self.public_key(),
            FrameReader::new(read, None),
            FrameWriter::new(write, None),
        )
    }

    fn internal(&self) -> Visor {
        Visor {
            inner: self.inner.clone(),
            _user: None,
        }
    }

    /// A handle that does not keep the visor alive.
    pub fn downgrade(&self) -> WeakVisor {
        WeakVisor(Arc::downgrade(&self.inner))
    }

    /// The visor's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.keypair.public()
    }

    /// The visor's identity (its apps run their sessions under it).
    pub(crate) fn keypair(&self) -> &Keypair {
        &self.inner.keypair
    }

    /// The visor's post-quantum policy.
    pub(crate) fn pq(&self) -> &dmsg::noise::PqSettings {
        &self.inner.config.pq
    }

    /// Stops everything and waits for every task.
    pub async fn shutdown(&self) {
        // Registrations first: each publisher is joined, then deregisters (ARCHITECTURE
        // §5.5), while the transports still run.
        let registrations: Vec<EntryPublisher> = lock(&self.inner.registrations)
            .drain()
            .map(|(_, publisher)| publisher)
            .collect();
        futures::future::join_all(registrations.into_iter().map(EntryPublisher::stop)).await;
        self.inner.stop();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.dmsg.close().await;
    }

    /// Tasks the visor owns now.
    pub fn task_count(&self) -> usize {
        self.inner.tasks.len()
    }

    // === rules ===

    /// Reserves `count` route IDs (ROUTING.md §5.1).
    pub fn reserve(&self, count: usize) -> Result<Vec<RouteId>, TableError> {
        lock(&self.inner.table).reserve(count, Instant::now())
    }

    /// Installs a rule under a reserved ID (ROUTING.md §5.1).
    pub fn install(&self, rule: Rule) -> Result<(), TableError> {
        lock(&self.inner.table).install(rule, Instant::now())
    }

    /// Removes the rule or reservation under `key`; returns the rule if there was one.
    pub fn remove_rule(&self, key: RouteId) -> Option<Rule> {
        lock(&self.inner.table).remove(key)
    }

    /// The route-setup services route dials ask, in order.
    pub fn route_setups(&self) -> &[PublicKey] {
        &self.inner.config.route_setups
    }

    pub(crate) fn route_setup_channels(&self) -> &crate::route_dial::RouteSetupChannels {
        &self.inner.route_setup_channels
    }

    /// A handle for the visor's own services: it does not keep the visor alive.
    pub fn clone_internal(&self) -> Visor {
        self.internal()
    }

    /// The rule under `key`.
    pub fn rule(&self, key: RouteId) -> Option<Rule> {
        lock(&self.inner.table).rule(key).copied()
    }

    /// Every rule installed now, by key.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = lock(&self.inner.table).rules().copied().collect();
        rules.sort_by_key(|rule| rule.key);
        rules
    }

    /// The route groups open now.
    pub fn route_groups(&self) -> Vec<Arc<GroupShared>> {
        let mut groups: Vec<_> = lock(&self.inner.groups).values().cloned().collect();
        groups.sort_by_key(|group| group.consume_key);
        groups
    }

    /// Counters now.
    pub fn stats(&self) -> VisorStats {
        let transports = lock(&self.inner.transports);
        let live: Vec<_> = transports.values().map(|t| t.stats()).collect();
        VisorStats {
            rules: lock(&self.inner.table).counts(),
            transports: transports.len(),
            route_groups: lock(&self.inner.groups).len(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (*r, self.inner.drops[r.index()].load(Ordering::Relaxed)))
                .collect(),
            queued_bytes: transports.values().map(|t| t.queue.bytes()).sum(),
            bytes_sent: self.inner.closed_sent.load(Ordering::Relaxed)
                + live.iter().map(|s| s.bytes_sent).sum::<u64>(),
            bytes_received: self.inner.closed_received.load(Ordering::Relaxed)
                + live.iter().map(|s| s.bytes_received).sum::<u64>(),
        }
    }

    // === transports ===

    /// The live transport `id`.
    pub fn transport(&self, id: &TransportId) -> Option<Arc<Transport>> {
        self.inner.transport(id)
    }

    /// Every live transport.
    pub fn transports(&self) -> Vec<Arc<Transport>> {
        lock(&self.inner.transports).values().cloned().collect()
    }

    /// Accepts stcp transports on `listener` until shutdown (ROUTING.md §2.2). Handshakes run
    /// in their own tasks, at most [`MAX_STCP_HANDSHAKES`] at once; more are dropped.
    pub async fn serve_stcp(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let accepted = tokio::select! {
                () = self.inner.shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "stcp accept failed; backing off");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.inner.stcp_handshakes.clone().try_acquire_owned() else {
                // Refused at once ("busy", ROUTING.md §2.2): a non-blocking write of two
                // bytes, then the socket closes.
                tracing::debug!(%addr, "stcp handshakes busy; refusing a connection");
                let _ = stream.try_write(&dmsg::wire::HandshakeRefusal::Busy.encode());
                continue;
            };
            let visor = self.internal();
            self.inner.tasks.spawn(async move {
                let _permit = permit;
                if let Err(error) = visor.accept_stcp(stream).await {
                    tracing::debug!(%addr, %error, "stcp transport not set up");
                }
            });
        }
    }

    async fn accept_stcp(&self, mut stream: TcpStream) -> Result<Arc<Transport>, TransportError> {
        let _ = stcp::configure(&stream);
        let established = tokio::select! {
            () = self.inner.shutdown.cancelled() => return Err(TransportError::ShuttingDown),
            result = handshake::accept(&mut stream, &self.inner.keypair, &self.inner.config.pq) => result,
        }
        .map_err(|error| TransportError::Handshake {
            peer: self.public_key(),
            error,
        })?;
        let peer = established.remote();
        let (send, recv) = established.into_ciphers();
        let (read, write) = stream.into_split();
        self.attach(
            peer,
            TransportKind::Stcp,
            peer,
            FrameReader::new(read, Some(recv)),
            FrameWriter::new(write, Some(send)),
        )
    }

    /// Dials an stcp transport to `peer` at its `pk_table` address (ROUTING.md §2.2).
    pub async fn dial_stcp(&self, peer: PublicKey) -> Result<Arc<Transport>, TransportError> {
        let addr = *self
            .inner
            .config
            .pk_table
            .get(&peer)
            .ok_or(TransportError::UnknownPeer(peer))?;
        let mut stream = stcp::connect(addr)
            .await
            .map_err(|error| TransportError::Connect { addr, error })?;
        let established = handshake::dial(
            &mut stream,
            &self.inner.keypair,
            peer,
            &self.inner.config.pq,
            false,
        )
        .await
        .map_err(|error| TransportError::Handshake { peer, error })?;
        let (send, recv) = established.into_ciphers();
        let (read, write) = stream.into_split();
        self.attach(
            peer,
            TransportKind::Stcp,
            self.public_key(),
            FrameReader::new(read, Some(recv)),
            FrameWriter::new(write, Some(send)),
        )
    }

    /// Adds a transport whose handshake is done and starts its tasks; keeps one per peer and
    /// type by the rule of ROUTING.md §2.5.
    pub fn attach<R, W>(
        &self,
        peer: PublicKey,
        kind: TransportKind,
        dialer: PublicKey,
        reader: FrameReader<R>,
        writer: FrameWriter<W>,
    ) -> Result<Arc<Transport>, TransportError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let local = self.public_key();
        let transport = Arc::new(Transport::new(
            &local,
            peer,
            kind,
            dialer,
            self.inner.config.queue_bytes,
        ));
        let low = local.min(peer);
        let replaced = {
            let mut transports = lock(&self.inner.transports);
            if self.inner.shutdown.is_cancelled() {
                return Err(TransportError::ShuttingDown);
            }
            let held = transports.get(&transport.id).filter(|t| !t.is_closed());
            match held {
                Some(held) if !new_connection_wins(&dialer, &held.dialer, &low) => None,
                held => {
                    let replaced = held.cloned();
                    transports.insert(transport.id, transport.clone());
                    Some(replaced)
                }
            }
        };
        // Tasks run either way: a refused duplicate still says BYE and drains.
        let sink: Arc<dyn FrameSink> = Arc::new(self.internal());
        let (t, s) = (transport.clone(), sink);
        self.inner
            .tasks
            .spawn(async move { link::run_reader(t, reader, s).await });
        let t = transport.clone();
        self.inner
            .tasks
            .spawn(async move { link::run_writer(t, writer).await });
        match replaced {
            None => {
                let _ = transport.send(bye(ByeCode::Duplicate));
                transport.close("a connection of the winning edge exists (ROUTING.md §2.5)");
                Err(TransportError::Duplicate(peer))
            }
            Some(old) => {
                if let Some(old) = old {
                    let _ = old.send(bye(ByeCode::Duplicate));
                    old.close("replaced by a newer connection (ROUTING.md §2.5)");
                }
                self.register(&transport);
                tracing::debug!(%peer, %kind, id = hex::encode(transport.id), "transport up");
                Ok(transport)
            }
        }
    }

    /// Starts the registration of `transport` if this visor is its low edge and has a
    /// registry, and none runs for its ID yet (a replaced connection keeps the one running:
    /// it signs over whichever connection is live).
    fn register(&self, transport: &Arc<Transport>) {
        let Some(registry) = self.inner.config.registry.clone() else {
            return;
        };
        if self.public_key() > transport.peer {
            return;
        }
        let mut registrations = lock(&self.inner.registrations);
        if registrations.contains_key(&transport.id) || self.inner.shutdown.is_cancelled() {
            return;
        }
        let signer = Signer {
            inner: Arc::downgrade(&self.inner),
            id: transport.id,
        };
        let publisher = EntryPublisher::start_transport(
            self.inner.keypair.clone(),
            transport.id,
            registry,
            "tcp",
            signer,
            self.inner.config.registration.clone(),
        );
        registrations.insert(transport.id, publisher);
    }

    /// The publish state of transport `id`'s registration, if this visor runs it.
    pub fn registration(&self, id: &TransportId) -> Option<PublishState> {
        lock(&self.inner.registrations)
            .get(id)
            .map(EntryPublisher::state)
    }

    /// A SIGN frame (ROUTING.md §2.4): the high edge countersigns and answers; the low edge
    /// hands the answer to the request waiting for it.
    fn on_sign(&self, transport: &Arc<Transport>, body: &[u8]) {
        let Some((timestamp, signature)) = sign_body(body) else {
            return;
        };
        let local = self.public_key();
        if local < transport.peer {
            let waiting = lock(&transport.pending_signs).remove(&timestamp);
            if let Some(waiting) = waiting {
                let _ = waiting.send(signature);
            }
            return;
        }
        let mut entry = TransportEntry::new(local, transport.peer, transport.kind.name());
        entry.timestamp = timestamp;
        entry.signature_a = signature;
        if !transport.peer.verify(&entry.signing_bytes(), &signature) {
            let _ = transport.send(bye(ByeCode::BadSignature));
            transport.close("the other edge's SIGN does not verify");
            return;
        }
        if !discovery_client::entry::in_window(timestamp, discovery_client::entry::unix_nanos_now())
        {
            tracing::debug!(peer = %transport.peer, "a SIGN outside the clock window; not answered");
            return;
        }
        entry.sign_as(&self.inner.keypair);
        let _ = transport.send(sign_frame(timestamp, &entry.signature_b));
    }

    // === route groups ===

    /// Listens for route groups arriving for local `port`.
    pub fn listen(&self, port: Port) -> Result<RouteListener, RouteGroupError> {
        let mut listeners = lock(&self.inner.listeners);
        if listeners.get(&port).is_some_and(|tx| !tx.is_closed()) {
            return Err(RouteGroupError::BadRules(format!(
                "port {port} is already listened on"
            )));
        }
        let (tx, rx) = mpsc::channel(self.inner.config.accept_backlog.max(1));
        listeners.insert(port, tx);
        Ok(RouteListener { rx, port })
    }

    /// Opens a route group with this visor's two rules of it: `forward` (FORWARD, this end's
    /// first hop) and `consume` (CONSUME, where the other end's packets arrive), both under
    /// reserved IDs. Runs the end-to-end handshake; on any failure the rules are removed
    /// again and nothing is left behind.
    pub async fn dial(&self, forward: Rule, consume: Rule) -> Result<RouteGroup, RouteGroupError> {
        let (descriptor, next) = match forward.kind {
            RuleKind::Forward { descriptor, next } => (descriptor, next),
            _ => {
                return Err(RouteGroupError::BadRules(
                    "`forward` is not a FORWARD rule".into(),
                ));
            }
        };
        match consume.kind {
            RuleKind::Consume(reverse) if reverse == descriptor.reversed() => {}
            _ => {
                return Err(RouteGroupError::BadRules(
                    "`consume` is not the CONSUME rule of the reverse route".into(),
                ));
            }
        }
        if descriptor.src_pk != self.public_key() {
            return Err(RouteGroupError::BadRules(
                "the forward route does not start at this visor".into(),
            ));
        }
        let transport = self
            .transport(&next.transport)
            .ok_or(RouteGroupError::NoTransport(next.transport))?;
        {
            let mut table = lock(&self.inner.table);
            let now = Instant::now();
            table
                .install(forward, now)
                .map_err(|e| RouteGroupError::BadRules(e.to_string()))?;
            if let Err(error) = table.install(consume, now) {
                table.remove(forward.key);
                return Err(RouteGroupError::BadRules(error.to_string()));
            }
        }
        let addr = GroupAddr {
            local: descriptor.src_pk,
            local_port: descriptor.src_port,
            remote: descriptor.dst_pk,
            remote_port: descriptor.dst_port,
        };
        let shared = Arc::new(GroupShared::new(
            addr,
            consume.key,
            forward.key,
            next,
            transport,
        ));
        lock(&self.inner.groups).insert(consume.key, shared.clone());
        // From here the handle's drop guard removes the group and both rules on any error.
        let group = RouteGroup::new(shared.clone(), self.owner());
        let answer = shared.expect_answer();
        let pq = &self.inner.config.pq;
        let (expect, message) = noise::initiate(
            Pattern::Kk,
            &self.inner.keypair,
            addr.remote,
            pq.offer(),
            &binding(
                (addr.local, addr.local_port),
                (addr.remote, addr.remote_port),
            ),
        )
        .map_err(|e| RouteGroupError::Handshake(e.to_string()))?;
        let mut body = BytesMut::with_capacity(1 + message.len());
        body.extend_from_slice(&[pq.offer() as u8]);
        body.extend_from_slice(&message);
        shared.send_frame(FrameType::Handshake, body.freeze())?;
        let reply = tokio::select! {
            () = self.inner.shutdown.cancelled() => return Err(RouteGroupError::ShuttingDown),
            reply = tokio::time::timeout(ROUTE_HANDSHAKE_TIMEOUT, answer) => reply,
        };
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                return Err(group.error().unwrap_or(RouteGroupError::Closed));
            }
            Err(_) => return Err(RouteGroupError::HandshakeTimeout(ROUTE_HANDSHAKE_TIMEOUT)),
        };
        let answered = expect
            .read_answer(&reply)
            .map_err(|e| RouteGroupError::Handshake(e.to_string()))?;
        let established = pq
            .check(answered.outcome, false, "route group")
            .map_err(|e| RouteGroupError::Handshake(e.to_string()))?;
        let status = established.pq();
        let (send, recv) = established.into_ciphers();
        shared.open(send, recv, status);
        Ok(group)
    }

    fn owner(&self) -> Weak<dyn GroupOwner> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        weak
    }

    /// A HANDSHAKE arrived on a CONSUME rule with no route group yet: the responder's side
    /// (ROUTING.md §6.2). Runs in the transport's reader task; it is bounded by the rules
    /// route-setup installed.
    fn accept_route_group(
        &self,
        key: RouteId,
        descriptor: router::RouteDescriptor,
        body: Bytes,
        from: &Arc<Transport>,
    ) {
        let local_port = descriptor.dst_port;
        let reverse = descriptor.reversed();
        let forward = lock(&self.inner.table)
            .rules()
            .find(|rule| matches!(rule.kind, RuleKind::Forward { descriptor, .. } if descriptor == reverse))
            .copied();
        let Some(Rule {
            key: forward_key,
            kind: RuleKind::Forward { next, .. },
            ..
        }) = forward
        else {
            self.inner.count_drop(from, DropReason::UnknownRoute);
            return;
        };
        let Some(transport) = self.transport(&next.transport) else {
            self.inner.count_drop(from, DropReason::TransportClosed);
            return;
        };
        let listener = lock(&self.inner.listeners).get(&local_port).cloned();
        let Some(listener) = listener else {
            let _ = transport.send(close_packet(next.route, CloseCode::NoListener));
            return;
        };
        let addr = GroupAddr {
            local: descriptor.dst_pk,
            local_port,
            remote: descriptor.src_pk,
            remote_port: descriptor.src_port,
        };
        let pq = &self.inner.config.pq;
        let answered = body
            .split_first()
            .and_then(|(mode, message)| Some((Mode::from_u8(*mode)?, message)))
            .ok_or_else(|| "no mode byte".to_owned())
            .and_then(|(mode, message)| {
                noise::respond(
                    Pattern::Kk,
                    &self.inner.keypair,
                    Some(addr.remote),
                    mode,
                    &binding(
                        (addr.remote, addr.remote_port),
                        (addr.local, addr.local_port),
                    ),
                    message,
                    pq.enabled,
                )
                .map_err(|e| e.to_string())
            })
            .and_then(|responded| match responded.next {
                ResponderNext::Done(outcome) => pq
                    .check(outcome, false, "route group")
                    .map(|established| (established, responded.reply))
                    .map_err(|e| e.to_string()),
                ResponderNext::ExpectConfirm(_) => Err("not a KK handshake".to_owned()),
            });
        let (established, reply) = match answered {
            Ok(answered) => answered,
            Err(error) => {
                tracing::debug!(peer = %addr.remote, %error, "route-group handshake refused");
                let _ = transport.send(close_packet(next.route, CloseCode::HandshakeFailed));
                return;
            }
        };
        let shared = Arc::new(GroupShared::new(addr, key, forward_key, next, transport));
        let status = established.pq();
        let (send, recv) = established.into_ciphers();
        shared.open(send, recv, status);
        lock(&self.inner.groups).insert(key, shared.clone());
        let group = RouteGroup::new(shared.clone(), self.owner());
        if shared
            .send_frame(FrameType::Handshake, Bytes::from(reply))
            .is_err()
        {
            return; // dropping `group` cleans up
        }
        if let Err(
            mpsc::error::TrySendError::Full(group) | mpsc::error::TrySendError::Closed(group),
        ) = listener.try_send(group)
        {
            // The drop closes it with a CLOSE record the initiator reads as refused.
            drop(group);
        }
    }

    /// Closes the routes a closed transport breaks (ROUTING.md §6.6): local route groups
    /// using it fail at once, and every route whose packets came over it is told onwards.
    fn transport_closed(&self, closed: &Arc<Transport>) {
        {
            let mut transports = lock(&self.inner.transports);
            if transports
                .get(&closed.id)
                .is_some_and(|held| Arc::ptr_eq(held, closed))
            {
                transports.remove(&closed.id);
            }
            // Counted under the lock, so a scrape never sees its bytes twice or not at all.
            let stats = closed.stats();
            self.inner
                .closed_sent
                .fetch_add(stats.bytes_sent, Ordering::Relaxed);
            self.inner
                .closed_received
                .fetch_add(stats.bytes_received, Ordering::Relaxed);
        }
        let groups: Vec<Arc<GroupShared>> = lock(&self.inner.groups).values().cloned().collect();
        for group in groups {
            if Arc::ptr_eq(&group.transport, closed) || group.last_from() == Some(closed.id) {
                group.fail(RouteGroupError::TransportClosed);
            }
        }
        // The transport is gone (not replaced): join its registration, then deregister.
        let still_held = lock(&self.inner.transports).contains_key(&closed.id);
        if !still_held {
            let registration = lock(&self.inner.registrations).remove(&closed.id);
            if let Some(registration) = registration {
                self.inner.tasks.spawn(registration.stop());
            }
        }
        let broken = lock(&self.inner.table).rules_from(&closed.id);
        for rule in broken {
            if let RuleKind::Intermediary(next) = rule.kind
                && let Some(onward) = self.transport(&next.transport)
            {
                let _ = onward.send(close_packet(next.route, CloseCode::TransportClosed));
            }
        }
        tracing::debug!(
            peer = %closed.peer,
            kind = %closed.kind,
            reason = closed.close_reason().unwrap_or_default(),
            "transport closed"
        );
    }

    /// Collects expired reservations and idle rules, and sends the keep-alives of living
    /// route groups, until shutdown.
    async fn maintain(&self) {
        let mut next_keepalive = Instant::now() + ROUTE_KEEPALIVE_INTERVAL;
        loop {
            let next_gc = lock(&self.inner.table).poll_timeout();
            let wake = next_gc.map_or(next_keepalive, |gc| gc.min(next_keepalive));
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            let collected = lock(&self.inner.table).handle_timeout(now);
            if !collected.idle.is_empty() || !collected.released.is_empty() {
                tracing::debug!(
                    idle = collected.idle.len(),
                    released = collected.released.len(),
                    "rules collected"
                );
            }
            if now >= next_keepalive {
                next_keepalive = now + ROUTE_KEEPALIVE_INTERVAL;
                let groups: Vec<Arc<GroupShared>> =
                    lock(&self.inner.groups).values().cloned().collect();
                for group in groups.iter().filter(|g| !g.is_failed()) {
                    {
                        let mut table = lock(&self.inner.table);
                        table.touch(group.forward_key, now);
                        table.touch(group.consume_key, now);
                    }
                    let _ = group.send_frame(FrameType::KeepAlive, Bytes::new());
                }
            }
        }
    }
}

impl GroupOwner for Inner {
    fn forget(&self, group: &GroupShared) {
        {
            let mut groups = lock(&self.groups);
            if groups
                .get(&group.consume_key)
                .is_some_and(|held| std::ptr::eq(Arc::as_ptr(held), group))
            {
                groups.remove(&group.consume_key);
            }
        }
        let mut table = lock(&self.table);
        table.remove(group.forward_key);
        table.remove(group.consume_key);
    }
}

impl FrameSink for Visor {
    fn on_frame(&self, transport: &Arc<Transport>, frame: Frame) {
        let Frame { header, body } = frame;
        let Some(route) = header.route else {
            if header.kind == FrameType::Sign {
                self.on_sign(transport, &body);
            }
            if header.kind == FrameType::Bye {
                let code = body.first().and_then(|b| ByeCode::from_u8(*b));
                transport.close(format!(
                    "the peer closed the transport ({})",
                    code.map_or("unknown code", ByeCode::label)
                ));
            }
            return;
        };
        // A direct open is between the two ends of this transport: no rule is involved.
        match header.kind {
            FrameType::Open => return self.on_open(transport, route, &body),
            FrameType::Opened => return self.on_opened(transport, route, &body),
            _ => {}
        }
        let decision = {
            let mut table = lock(&self.inner.table);
            router::route(&mut table, route, transport.id, Instant::now())
        };
        match decision {
            Decision::Forward(next) => {
                let Some(onward) = self.transport(&next.transport) else {
                    self.inner
                        .count_drop(transport, DropReason::TransportClosed);
                    return;
                };
                let frame = OutFrame {
                    header: header.with_route(next.route),
                    body: body.freeze(),
                };
                if let Err(reason) = onward.queue.try_push(frame) {
                    self.inner.count_drop(transport, reason);
                }
            }
            Decision::Deliver(descriptor) => {
                let group = lock(&self.inner.groups).get(&route).cloned();
                match group {
                    Some(group) => group.on_packet(header.kind, body, transport.id),
                    None if header.kind == FrameType::Handshake => {
                        self.accept_route_group(route, descriptor, body.freeze(), transport);
                    }
                    None => self.inner.count_drop(transport, DropReason::UnknownRoute),
                }
            }
            Decision::Drop(reason) => self.inner.count_drop(transport, reason),
        }
    }

    fn on_closed(&self, transport: &Arc<Transport>) {
        self.transport_closed(transport);
    }
}

fn sign_frame(timestamp: i64, signature: &[u8; 64]) -> OutFrame {
    let mut body = BytesMut::with_capacity(crate::packet::SIGN_BODY_LEN);
    body.extend_from_slice(&timestamp.to_be_bytes());
    body.extend_from_slice(signature);
    OutFrame {
        header: Header::for_transport(FrameType::Sign, crate::packet::SIGN_BODY_LEN as u16),
        body: body.freeze(),
    }
}

fn sign_body(body: &[u8]) -> Option<(i64, [u8; 64])> {
    let timestamp = i64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let signature: [u8; 64] = body.get(8..72)?.try_into().ok()?;
    Some((timestamp, signature))
}

/// Gets a transport entry signed by both edges over the transport (the low edge's side of
/// ROUTING.md §2.4).
struct Signer {
    inner: Weak<Inner>,
    id: TransportId,
}

#[tonic::async_trait]
impl TransportSource for Signer {
    async fn signed(&self) -> Option<TransportEntry> {
        let inner = self.inner.upgrade()?;
        let transport = inner.transport(&self.id)?;
        let local = inner.keypair.public();
        let mut entry = TransportEntry::new(local, transport.peer, transport.kind.name());
        entry.sign_as(&inner.keypair);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&transport.pending_signs).insert(entry.timestamp, tx);
        let sent = transport.send(sign_frame(entry.timestamp, &entry.signature_a));
        let shutdown = inner.shutdown.clone();
        drop(inner);
        let answer = if sent.is_ok() {
            tokio::select! {
                () = shutdown.cancelled() => None,
                answer = tokio::time::timeout(SIGN_TIMEOUT, rx) => answer.ok().and_then(Result::ok),
            }
        } else {
            None
        };
        lock(&transport.pending_signs).remove(&entry.timestamp);
        entry.signature_b = answer?;
        match entry.validate(discovery_client::entry::unix_nanos_now()) {
            Ok(()) => Some(entry),
            Err(error) => {
                tracing::warn!(peer = %transport.peer, %error, "the other edge's SIGN does not verify");
                None
            }
        }
    }
}

/// Route groups arriving for one local port.
#[derive(Debug)]
pub struct RouteListener {
    rx: mpsc::Receiver<RouteGroup>,
    port: Port,
}

impl RouteListener {
    /// The next route group; `None` once the visor shuts down.
    pub async fn accept(&mut self) -> Option<RouteGroup> {
        self.rx.recv().await
    }

    /// The port.
    pub fn port(&self) -> Port {
        self.port
    }
}
