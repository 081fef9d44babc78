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

/// A reflection builder knowing every Skywire-rs service and `grpc.health.v1` (served as v1
/// and as v1alpha: grpcurl 1.8 speaks only v1alpha).
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(skywire_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
    let store = GuardedStore::new(open_store(&config.store)?);
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

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = HealthStates::new();
    // The same services on TCP and on dmsg port 80.
    let routes = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
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
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Err(error)) => {
                tracing::error!(%error, "dmsg-discovery task failed; shutting down");
                result = Err(error);
                shutdown.cancel();
            }
            Err(panic) if panic.is_panic() => {
                tracing::error!("a dmsg-discovery task panicked; shutting down");
                shutdown.cancel();
            }
            _ => {}
        }
    }
    client.close().await;
    result
}
