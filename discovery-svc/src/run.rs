//! The dmsg-discovery process as a function: [`run`] takes a listener the caller already
//! bound, so "listening" never waits on anything (ARCHITECTURE §5), and runs until shutdown.

use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::ServerAddr;
use dmsg::client::{Client, ClientConfig};
use dmsg::discovery::DISCOVERY_PORT;
use dmsg::grpc::Incoming;
use dmsg::identity::{Keypair, PublicKey};
use dmsg::noise::PqSettings;
use middleware::ServerStackConfig;
use observability::{HealthStates, MetricsRegistry};
use prometheus::{IntGaugeVec, Opts};
use service::{EndpointError, GrpcEndpoint};
use skywire_proto::skywire::discovery::v1::discovery_server::DiscoveryServer;
use skywire_proto::skywire::discovery::v1::transport_registry_server::TransportRegistryServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connector::{self, ConnectorConfig};
use crate::guard::GuardedStore;
use crate::service::{ConnectedServers, DiscoveryService, Ttls};
use crate::store::Store;
use crate::store::cache::CacheConfig;
use crate::store::memory::MemoryStore;
use crate::store::redis::{DEFAULT_PREFIX, RedisStore};
use crate::transport::TransportService;

/// Largest request the services decode (an entry is at most 8 KiB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How often the store's health is checked for `grpc.health.v1`.
const STORE_HEALTH_EVERY: Duration = Duration::from_secs(5);
/// How often it is checked while it is down.
const STORE_RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Which store to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process.
    Memory,
    /// A Redis shared with other replicas.
    Redis {
        /// `redis://host:port[/db]`.
        url: String,
        /// Key prefix.
        prefix: String,
        /// The read cache in front of it.
        cache: CacheConfig,
    },
}

impl StoreConfig {
    /// The Redis at `url` under `prefix`, with the default read cache.
    pub fn redis(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::Redis {
            url: url.into(),
            prefix: prefix.into(),
            cache: CacheConfig::default(),
        }
    }
}

impl std::str::FromStr for StoreConfig {
    type Err = String;

    /// `memory` or a `redis://` URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Self::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Ok(Self::redis(url, DEFAULT_PREFIX))
            }
            other => Err(format!(
                "--store takes `memory` or a redis:// URL, not {other:?}"
            )),
        }
    }
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Discovery's identity (its dmsg address is `dmsg://<pk>:80`).
    pub keypair: Keypair,
    /// The store.
    pub store: StoreConfig,
    /// dmsg servers to connect to at once, before anything registers.
    pub servers: Vec<ServerAddr>,
    /// Entry TTLs.
    pub ttls: Ttls,
    /// Connector timing.
    pub connector: ConnectorConfig,
    /// Post-quantum settings of discovery's dmsg sessions.
    pub pq: PqSettings,
    /// Server middleware settings.
    pub server_stack: ServerStackConfig,
    /// How long open calls may finish after shutdown before they are cut.
    pub grace: Duration,
}

/// The listeners [`run`] serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC on TCP: Discovery and TransportRegistry.
    pub grpc: TcpListener,
    /// The admin endpoint: health, reflection and `/metrics`; none in tests that do not
    /// need it.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Just the gRPC listener.
    pub fn grpc(grpc: TcpListener) -> Self {
        Self { grpc, admin: None }
    }
}

/// Why discovery stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store could not be set up.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// An endpoint could not be built, or the one on TCP failed.
    #[error("gRPC endpoint on TCP: {0}")]
    Endpoint(#[from] EndpointError),
    /// The admin endpoint failed.
    #[error("admin endpoint: {0}")]
    Admin(EndpointError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The dmsg listener could not be opened.
    #[error("dmsg listener: {0}")]
    Listen(#[from] dmsg::client::ListenError),
}

/// Builds the store `config` names. Never contacts Redis: it may come up later.
pub fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, crate::store::StoreError> {
    Ok(match config {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Redis { url, prefix, cache } => {
            Arc::new(RedisStore::new(url, prefix, *cache)?)
        }
    })
}

/// Runs discovery on `listener` (already bound) until `shutdown` is cancelled; then stops
/// every task it started and waits for them. Returns an error if the TCP server dies.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = open_store(&config.store)?;
    let result = run_with_store(config, store.clone(), listeners, shutdown).await;
    store.close().await;
    result
}

/// [`run`] with a store built by the caller (`config.store` is ignored): a store wrapped to
/// inject faults in tests, or one shared with something else in the process. The store is
/// left open: closing it ([`Store::close`]) is the caller's.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = MetricsRegistry::new();
    let entries = metrics.register(IntGaugeVec::new(
        Opts::new(
            "discovery_entries",
            "Entries stored, by kind (server, client), read every 5 s",
        ),
        &["kind"],
    )?)?;
    let store = GuardedStore::new(store, &metrics)?;
    let pk = config.keypair.public();
    let client = Client::new(
        config.keypair.clone(),
        ClientConfig {
            pq: config.pq.clone(),
            ..ClientConfig::default()
        },
    );
    let dmsg_listener = client.listen(DISCOVERY_PORT)?;
    let connected: ConnectedServers = {
        let client = client.clone();
        Arc::new(move || {
            client
                .sessions()
                .iter()
                .map(dmsg::session::Session::remote)
                .collect::<Vec<PublicKey>>()
        })
    };
    let discovery = DiscoveryService::new(store.clone(), config.ttls, pk, connected);
    let transports = TransportService::new(store.clone(), config.ttls);

    let health = HealthStates::new();
    // The same services on TCP and on dmsg port 80.
    let (endpoint, health_driver) = GrpcEndpoint::new(config.server_stack.clone())
        .add_service(DiscoveryServer::new(discovery).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            TransportRegistryServer::new(transports).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .build(&health, &shutdown)?;
    let admin = match listeners.admin {
        Some(listener) => {
            let (admin, admin_health) = GrpcEndpoint::new(config.server_stack.clone())
                .with_metrics(&metrics)
                .build(&health, &shutdown)?;
            Some((admin, admin_health, listener))
        }
        None => None,
    };

    let mut tasks = JoinSet::new();
    let tcp_component = health.component("grpc-tcp");
    let tcp_server = endpoint.serve_tcp(listeners.grpc, shutdown.clone(), config.grace);
    tcp_component.set_serving();
    tasks.spawn(async move {
        let result = tcp_server.await;
        drop(tcp_component);
        result.map_err(RunError::Endpoint)
    });
    let dmsg_server = endpoint.serve(Incoming::new(dmsg_listener), shutdown.clone(), config.grace);
    tasks.spawn(async move {
        if let Err(error) = dmsg_server.await {
            tracing::warn!(%error, "gRPC server on dmsg stopped");
        }
        Ok(())
    });
    tasks.spawn(async move {
        health_driver.await;
        Ok(())
    });
    if let Some((admin, admin_health, listener)) = admin {
        let serving = admin.serve_tcp(listener, shutdown.clone(), config.grace);
        tasks.spawn(async move { serving.await.map_err(RunError::Admin) });
        tasks.spawn(async move {
            admin_health.await;
            Ok(())
        });
    }
    tasks.spawn({
        let client = client.clone();
        let store = store.store().clone();
        let stop = shutdown.clone();
        async move {
            connector::run(client, config.servers, store, config.connector, stop).await;
            Ok(())
        }
    });
    tasks.spawn(watch_store(
        store.clone(),
        health.component("store"),
        entries,
        shutdown.clone(),
    ));
    tracing::info!(%pk, store = store.store().kind(), "dmsg-discovery serving");

    // Run until shutdown, or until a task fails (the TCP server dying ends the process).
    // Every endpoint bounds its own drain by the grace period.
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        note_task_end(joined, &mut result, &shutdown);
    }
    client.close().await;
    result
}

/// Keeps the `store` health component true to what callers get: NOT_SERVING the moment the
/// store's breaker opens (callers are refused then, whatever a PING would say), and checked
/// through the breaker every [`STORE_HEALTH_EVERY`] — every [`STORE_RECHECK_EVERY`] while
/// down, so recovery shows as soon as the breaker's probe succeeds. Also reads the entry
/// counts into `entries`.
async fn watch_store(
    store: GuardedStore,
    component: observability::ComponentHealth,
    entries: IntGaugeVec,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let mut events = store.breaker().subscribe();
    let mut listening = true;
    while !stop.is_cancelled() {
        let wait = match store.health().await {
            Ok(()) => {
                component.set_serving();
                STORE_HEALTH_EVERY
            }
            Err(why) => {
                component.set_down(why);
                STORE_RECHECK_EVERY
            }
        };
        if let Ok(counts) = store.store().counts().await {
            let gauge = |kind: &str, n: u64| {
                entries
                    .with_label_values(&[kind])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            gauge("server", counts.servers);
            gauge("client", counts.clients);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
            // Any state change: look again now.
            event = events.recv(), if listening => {
                listening = !matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed));
            }
        }
    }
    Ok(())
}

/// Records how a task ended: a failure becomes the result and shuts everything down.
fn note_task_end(
    joined: Result<Result<(), RunError>, tokio::task::JoinError>,
    result: &mut Result<(), RunError>,
    shutdown: &CancellationToken,
) {
    match joined {
        Ok(Err(error)) => {
            tracing::error!(%error, "dmsg-discovery task failed; shutting down");
            if result.is_ok() {
                *result = Err(error);
            }
            shutdown.cancel();
        }
        Err(panic) if panic.is_panic() => {
            tracing::error!("a dmsg-discovery task panicked; shutting down");
            shutdown.cancel();
        }
        _ => {}
    }
}
