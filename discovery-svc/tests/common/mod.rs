//! Test harnesses: dmsg-discovery in-process on 127.0.0.1 (and testkit's `redis-server`).

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::SocketAddr;

use discovery_svc::run::{Config, Listeners, StoreConfig, run};
use discovery_svc::service::Ttls;
use dmsg::addr::ServerAddr;
use dmsg::discovery::DiscoveryClient;
use dmsg::identity::Keypair;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use testkit::{Redis, free_port};

/// dmsg-discovery running in this process.
pub struct Discovery {
    pub addr: SocketAddr,
    /// The admin endpoint (`/metrics`).
    pub admin: SocketAddr,
    pub keypair: Keypair,
    pub client: DiscoveryClient,
    stop: CancellationToken,
    task: JoinHandle<Result<(), discovery_svc::run::RunError>>,
}

impl Discovery {
    pub async fn start(store: StoreConfig) -> Self {
        Self::start_with(store, Vec::new(), Ttls::default()).await
    }

    pub async fn start_with(store: StoreConfig, servers: Vec<ServerAddr>, ttls: Ttls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let keypair = Keypair::generate();
        let config = Config {
            keypair: keypair.clone(),
            store,
            servers,
            ttls,
            connector: Default::default(),
            pq: Default::default(),
            server_stack: Default::default(),
            grace: std::time::Duration::from_secs(2),
        };
        let stop = CancellationToken::new();
        let listeners = Listeners {
            grpc: listener,
            admin: Some(admin_listener),
        };
        let task = tokio::spawn(run(config, listeners, stop.clone()));
        let client = DiscoveryClient::over_tcp(&format!("http://{addr}")).unwrap();
        Self {
            addr,
            admin,
            keypair,
            client,
            stop,
            task,
        }
    }

    /// A raw generated client (to send what the typed client would refuse to build).
    pub async fn raw(
        &self,
    ) -> skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient<
        tonic::transport::Channel,
    > {
        skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient::connect(format!(
            "http://{}",
            self.addr
        ))
        .await
        .unwrap()
    }

    /// One series of its `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        testkit::metrics::value(&testkit::metrics::scrape(self.admin).await, series).unwrap_or(0.0)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Redis as a store config.
pub fn redis_store(redis: &Redis, prefix: &str) -> StoreConfig {
    StoreConfig::redis(redis.url(), prefix)
}

/// `who`'s signed deregistration of `transport`, timestamped now.
pub fn deregistration(
    transport: &dmsg::entry::TransportEntry,
    who: &Keypair,
) -> skywire_proto::skywire::discovery::v1::DeregisterTransportRequest {
    let timestamp = dmsg::entry::unix_nanos_now();
    skywire_proto::skywire::discovery::v1::DeregisterTransportRequest {
        id: dmsg::entry::id_to_proto(&transport.id),
        edge: dmsg::entry::pk_to_proto(&who.public()),
        timestamp_unix_nanos: timestamp,
        signature: who
            .sign(&dmsg::entry::deregister_signing_bytes(
                &transport.id,
                &who.public(),
                timestamp,
            ))
            .to_vec(),
    }
}
