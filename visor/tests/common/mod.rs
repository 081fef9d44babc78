//! Visors in one process over real loopback TCP, and routes through them with rules
//! installed through the library.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use dmsg::addr::Port;
use dmsg::identity::{Keypair, PublicKey};
use tokio::net::TcpListener;
use visor::node::{Visor, VisorConfig};
use visor::route_group::RouteGroup;
use visor::router::{NextHop, RouteDescriptor, Rule, RuleKind, TransportId};

/// A visor with its stcp listener.
pub struct Node {
    pub visor: Visor,
    pub addr: SocketAddr,
    pub keypair: Keypair,
}

/// Starts `n` visors, each listening for stcp on 127.0.0.1, each knowing every other's address.
pub async fn nodes(n: usize) -> Vec<Node> {
    nodes_with(n, VisorConfig::default()).await
}

/// [`nodes`] with `config` for each (its `pk_table` is filled in).
pub async fn nodes_with(n: usize, config: VisorConfig) -> Vec<Node> {
    let (keys, listeners) = keys_and_listeners(n).await;
    let table: HashMap<PublicKey, SocketAddr> = keys
        .iter()
        .zip(&listeners)
        .map(|(k, l)| (k.public(), l.local_addr().unwrap()))
        .collect();
    start(keys, listeners, table, config)
}

/// [`nodes`] where every visor is reached through a [`Recorder`] (the `i`th in front of the
/// `i`th visor).
pub async fn nodes_recorded(n: usize) -> (Vec<Node>, Vec<Recorder>) {
    let (keys, listeners) = keys_and_listeners(n).await;
    let mut recorders = Vec::new();
    let mut table = HashMap::new();
    for (key, listener) in keys.iter().zip(&listeners) {
        let recorder = Recorder::start(listener.local_addr().unwrap()).await;
        table.insert(key.public(), recorder.addr);
        recorders.push(recorder);
    }
    (
        start(keys, listeners, table, VisorConfig::default()),
        recorders,
    )
}

async fn keys_and_listeners(n: usize) -> (Vec<Keypair>, Vec<TcpListener>) {
    let mut keys = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..n {
        keys.push(Keypair::generate());
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    (keys, listeners)
}

fn start(
    keys: Vec<Keypair>,
    listeners: Vec<TcpListener>,
    table: HashMap<PublicKey, SocketAddr>,
    config: VisorConfig,
) -> Vec<Node> {
    start_on(keys, listeners, table, config, None)
}

/// A real dmsg relay server core on loopback, and the discovery its clients share.
pub struct Relay {
    pub server: dmsg::server::Server,
    pub seed: dmsg::addr::ServerAddr,
    pub discovery: std::sync::Arc<dmsg::memory::MemoryDiscovery>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Relay {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            dmsg::server::Server::new(Keypair::generate(), dmsg::server::ServerConfig::default());
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        Self {
            seed: dmsg::addr::ServerAddr::new(server.public_key(), addr.to_string()),
            server,
            discovery: std::sync::Arc::new(dmsg::memory::MemoryDiscovery::default()),
            serve,
        }
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        let _ = self.serve.await;
    }

    /// A dmsg client homed on this relay that publishes its entry to the shared discovery.
    pub fn client(&self, keypair: &Keypair) -> dmsg::client::Client {
        dmsg::client::Client::new(
            keypair.clone(),
            dmsg::client::ClientConfig {
                lifecycle: dmsg::client::LifecycleConfig {
                    seeds: vec![self.seed.clone()],
                    include_default_seeds: false,
                    discovery: dmsg::client::DiscoveryTarget::Custom(self.discovery.clone()),
                    start_jitter: Duration::ZERO,
                    publish_debounce: Duration::from_millis(10),
                    ..dmsg::client::LifecycleConfig::default()
                },
                ..dmsg::client::ClientConfig::default()
            },
        )
    }

    /// Waits until `visor`'s entry in discovery names this relay.
    pub async fn published(&self, visor: &Visor) {
        let pk = visor.public_key();
        let relay = self.server.public_key();
        wait_until("the visor's entry names the relay", || {
            self.discovery
                .get(&pk)
                .and_then(|entry| entry.client)
                .is_some_and(|client| client.delegated_servers.contains(&relay))
        })
        .await;
    }
}

/// [`nodes`] whose dmsg clients are homed on `relay`.
pub async fn nodes_on(n: usize, relay: &Relay) -> Vec<Node> {
    nodes_on_with(n, relay, VisorConfig::default()).await
}

/// [`nodes_on`] with `config` for each (its `pk_table` is filled in).
pub async fn nodes_on_with(n: usize, relay: &Relay, config: VisorConfig) -> Vec<Node> {
    let (keys, listeners) = keys_and_listeners(n).await;
    let table: HashMap<PublicKey, SocketAddr> = keys
        .iter()
        .zip(&listeners)
        .map(|(k, l)| (k.public(), l.local_addr().unwrap()))
        .collect();
    let nodes = start_on(keys, listeners, table, config, Some(relay));
    for node in &nodes {
        relay.published(&node.visor).await;
    }
    nodes
}

fn start_on(
    keys: Vec<Keypair>,
    listeners: Vec<TcpListener>,
    table: HashMap<PublicKey, SocketAddr>,
    config: VisorConfig,
    relay: Option<&Relay>,
) -> Vec<Node> {
    let mut out = Vec::new();
    for (keypair, listener) in keys.into_iter().zip(listeners) {
        let addr = listener.local_addr().unwrap();
        let config = VisorConfig {
            pk_table: table.clone(),
            ..config.clone()
        };
        let visor = match relay {
            Some(relay) => Visor::with_dmsg(keypair.clone(), config, relay.client(&keypair)),
            None => Visor::new(keypair.clone(), config),
        };
        let serving = visor.clone();
        tokio::spawn(async move { serving.serve_stcp(listener).await });
        out.push(Node {
            visor,
            addr,
            keypair,
        });
    }
    out
}

/// Dials an stcp transport from `a` to `b` and waits until both ends hold it.
pub async fn link(a: &Node, b: &Node) -> TransportId {
    let transport = a.visor.dial_stcp(b.visor.public_key()).await.unwrap();
    held_by(b, transport.id).await
}

/// Dials a dmsg transport from `a` to `b` and waits until both ends hold it.
pub async fn link_dmsg(a: &Node, b: &Node) -> TransportId {
    let transport = a.visor.dial_dmsg(b.visor.public_key()).await.unwrap();
    held_by(b, transport.id).await
}

async fn held_by(b: &Node, id: TransportId) -> TransportId {
    wait_until("the listener holds the transport", || {
        b.visor.transport(&id).is_some()
    })
    .await;
    id
}

/// Polls `condition` every 10 ms for up to 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn port(n: u16) -> Port {
    Port::new(n).unwrap()
}

/// A route group's rules along a path of visors: `path[0]` dials, `path.last()` listens on
/// `dst_port`; `links[i]` is the transport between `path[i]` and `path[i + 1]`.
pub struct Route {
    /// The dialer's FORWARD rule.
    pub forward: Rule,
    /// The dialer's CONSUME rule.
    pub consume: Rule,
}

/// Reserves and installs every rule of a route group along `path` except the dialer's two,
/// which it returns for [`visor::node::Visor::dial`].
pub fn install_route(
    path: &[&Node],
    links: &[TransportId],
    src_port: Port,
    dst_port: Port,
) -> Route {
    assert_eq!(links.len() + 1, path.len());
    let n = path.len();
    // Two ids per visor: [0] on the forward route, [1] on the reverse route.
    let ids: Vec<Vec<_>> = path.iter().map(|v| v.visor.reserve(2).unwrap()).collect();
    let forward_desc = RouteDescriptor {
        src_pk: path[0].visor.public_key(),
        dst_pk: path[n - 1].visor.public_key(),
        src_port,
        dst_port,
    };
    let reverse_desc = forward_desc.reversed();
    // Forward route: path[0] → … → path[n-1], arriving at ids[i][0] on visor i.
    for i in 1..n - 1 {
        path[i]
            .visor
            .install(Rule::new(
                ids[i][0],
                RuleKind::Intermediary(NextHop {
                    route: ids[i + 1][0],
                    transport: links[i],
                }),
            ))
            .unwrap();
        path[i]
            .visor
            .install(Rule::new(
                ids[i][1],
                RuleKind::Intermediary(NextHop {
                    route: ids[i - 1][1],
                    transport: links[i - 1],
                }),
            ))
            .unwrap();
    }
    let last = path[n - 1];
    last.visor
        .install(Rule::new(ids[n - 1][0], RuleKind::Consume(forward_desc)))
        .unwrap();
    last.visor
        .install(Rule::new(
            ids[n - 1][1],
            RuleKind::Forward {
                descriptor: reverse_desc,
                next: NextHop {
                    route: ids[n - 2][1],
                    transport: links[n - 2],
                },
            },
        ))
        .unwrap();
    Route {
        forward: Rule::new(
            ids[0][0],
            RuleKind::Forward {
                descriptor: forward_desc,
                next: NextHop {
                    route: ids[1][0],
                    transport: links[0],
                },
            },
        ),
        consume: Rule::new(ids[0][1], RuleKind::Consume(reverse_desc)),
    }
}

/// Dials a route group along `path` and accepts it at the far end.
pub async fn route_group(
    path: &[&Node],
    links: &[TransportId],
    src_port: Port,
    dst_port: Port,
) -> (RouteGroup, RouteGroup) {
    let mut listener = path.last().unwrap().visor.listen(dst_port).unwrap();
    let route = install_route(path, links, src_port, dst_port);
    let (dialed, accepted) = tokio::join!(
        path[0].visor.dial(route.forward, route.consume),
        listener.accept()
    );
    (dialed.unwrap(), accepted.unwrap())
}

/// The byte at `offset` of the test pattern of `seed`.
pub fn pattern(seed: u8, offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31).wrapping_add(seed) ^ ((offset >> 8) as u8)
}

/// A TCP proxy that records every byte it forwards, both ways.
pub struct Recorder {
    pub addr: SocketAddr,
    captured: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Proxies connections to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = captured.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                pipes.spawn(copy_recording(ri, wo, sink.clone()));
                pipes.spawn(copy_recording(ro, wi, sink.clone()));
            }
        });
        Self {
            addr,
            captured,
            task,
        }
    }

    /// Everything forwarded so far.
    pub fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn copy_recording(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        sink.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// dmsg-discovery (memory store) running in this process, its TransportRegistry reached
/// over TCP.
pub struct Discovery {
    pub registry: std::sync::Arc<discovery_client::registry::RegistryClient>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), discovery_svc::run::RunError>>,
}

impl Discovery {
    pub async fn start() -> Self {
        use discovery_svc::run::{Config, Listeners, StoreConfig, run};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            keypair: Keypair::generate(),
            store: StoreConfig::Memory,
            servers: Vec::new(),
            ttls: Default::default(),
            connector: Default::default(),
            pq: Default::default(),
            server_stack: Default::default(),
            grace: Duration::from_secs(2),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(config, Listeners::grpc(listener), stop.clone()));
        let registry =
            discovery_client::registry::RegistryClient::over_tcp(&format!("http://{addr}"))
                .unwrap();
        Self {
            registry: std::sync::Arc::new(registry),
            stop,
            task,
        }
    }

    /// Visor settings that register transports here.
    pub fn config(&self) -> VisorConfig {
        VisorConfig {
            registry: Some(self.registry.clone()),
            ..VisorConfig::default()
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The gateways of some visors, served until [`ServedGateways::stop`].
pub struct ServedGateways {
    pub counters: Vec<visor::gateway::GatewayCounters>,
    _health: observability::HealthStates,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl ServedGateways {
    /// Serves the gateways of every visor in `nodes`, the `i`th trusting `trusted(i)`.
    pub fn start(nodes: &[Node], trusted: impl Fn(usize) -> visor::gateway::TrustedKeys) -> Self {
        let health = observability::HealthStates::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let counters = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                visor::gateway::serve(
                    &node.visor,
                    trusted(i),
                    &health,
                    &stop,
                    Duration::from_secs(2),
                    &mut tasks,
                )
                .unwrap()
            })
            .collect();
        Self {
            counters,
            _health: health,
            stop,
            tasks,
        }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
