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
use middleware::{ServerStackConfig, server_stack};
use observability::reflection::reflection_services;
use observability::{HealthStates, drive_health};
use skywire_proto::skywire::discovery::v1::discovery_server::DiscoveryServer;
use skywire_proto::skywire::discovery::v1::transport_registry_server::TransportRegistryServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::connector::{self, ConnectorConfig};
use crate::guard::GuardedStore;
use crate::service::{ConnectedServers, DiscoveryService, Ttls};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::{DEFAULT_PREFIX, RedisStore};
use crate::transport::TransportService;

/// Largest request the services decode (an entry is at most 4 KiB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long open calls may finish after shutdown before they are cut.
const DRAIN: Duration = Duration::from_secs(2);
/// How often the store's health is checked for `grpc.health.v1`.
const STORE_HEALTH_EVERY: Duration = Duration::from_secs(5);

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
    },
}

impl std::str::FromStr for StoreConfig {
    type Err = String;

    /// `memory` or a `redis://` URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Self::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => Ok(Self::Redis {
                url: url.to_owned(),
                prefix: DEFAULT_PREFIX.to_owned(),
            }),
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
}

/// Why discovery stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store could not be set up.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server on TCP failed.
    #[error("gRPC server on TCP stopped: {0}")]
    Tcp(tonic::transport::Error),
    /// The dmsg listener could not be opened.
    #[error("dmsg listener: {0}")]
    Listen(#[from] dmsg::client::ListenError),
}

/// Builds the store `config` names. Never contacts Redis: it may come up later.
pub fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, crate::store::StoreError> {
    Ok(match config {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Redis { url, prefix } => Arc::new(RedisStore::new(url, prefix)?),
    })
}

/// Runs discovery on `listener` (already bound) until `shutdown` is cancelled; then stops
/// every task it started and waits for them. Returns an error if the TCP server dies.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = open_store(&config.store)?;
    run_with_store(config, store, listener, shutdown).await
}

/// [`run`] with a store built by the caller (`config.store` is ignored): a store wrapped to
/// inject faults in tests, or one shared with something else in the process.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = GuardedStore::new(store);
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

    let (reflection_v1, reflection_v1alpha) =
        reflection_services(&[skywire_proto::FILE_DESCRIPTOR_SET])?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = HealthStates::new();
    // The same services on TCP and on dmsg port 80.
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DiscoveryServer::new(discovery).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            TransportRegistryServer::new(transports).max_decoding_message_size(MAX_REQUEST_BYTES),
        );

    let mut tasks = JoinSet::new();
    let tcp_component = health.component("grpc-tcp");
    let tcp_server = Server::builder()
        .layer(server_stack(&config.server_stack))
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );
    tcp_component.set_serving();
    tasks.spawn(async move {
        let result = tcp_server.await;
        drop(tcp_component);
        result.map_err(RunError::Tcp)
    });
    let dmsg_server = Server::builder()
        .layer(server_stack(&config.server_stack))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            Incoming::new(dmsg_listener),
            shutdown.clone().cancelled_owned(),
        );
    tasks.spawn(async move {
        if let Err(error) = dmsg_server.await {
            tracing::warn!(%error, "gRPC server on dmsg stopped");
        }
        Ok(())
    });
    tasks.spawn({
        let client = client.clone();
        let store = store.store().clone();
        let stop = shutdown.clone();
        async move {
            connector::run(client, config.servers, store, config.connector, stop).await;
            Ok(())
        }
    });
    tasks.spawn({
        let store = store.store().clone();
        let component = health.component("store");
        let stop = shutdown.clone();
        async move {
            while !stop.is_cancelled() {
                match store.health().await {
                    Ok(()) => component.set_serving(),
                    Err(error) => component.set_down(error.to_string()),
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(STORE_HEALTH_EVERY) => {}
                }
            }
            Ok(())
        }
    });
    let services = vec![
        "skywire.discovery.v1.Discovery".to_owned(),
        "skywire.discovery.v1.TransportRegistry".to_owned(),
    ];
    let states = health.subscribe();
    let stop = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        drive_health(reporter, services, states, stop).await;
        Ok(())
    });
    tracing::info!(%pk, store = store.store().kind(), "dmsg-discovery serving");

    // Run until shutdown, or until a task fails (the TCP server dying ends the process).
    let mut result = Ok(());
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            () = shutdown.cancelled() => None,
        };
        let Some(joined) = joined else { break };
        note_task_end(joined, &mut result, &shutdown);
    }
    // Open calls (a health Watch, say) may finish for a moment; then they are cut.
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(joined) = tasks.join_next().await {
            note_task_end(joined, &mut result, &shutdown);
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!("calls still open after {DRAIN:?}; closing them");
        tasks.shutdown().await;
    }
    client.close().await;
    result
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
