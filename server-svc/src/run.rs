//! The dmsg-server process as a function: [`run`] takes listeners the caller already bound and
//! starts the relay's accept loop before anything else (ARCHITECTURE §5 rule 1).
//!
//! Everything outbound — the transit client, registration — starts after and runs in the
//! background. If the accept loop dies, health turns NOT_SERVING and [`run`] returns
//! [`RunError::RelayDied`] (the binary exits non-zero). Shutdown is ordered: stop accepting;
//! stop and join the publisher; delete the entry; close the sessions; stop the transit client
//! and the admin endpoint.

use std::sync::Arc;

use dmsg::addr::ServerAddr;
use dmsg::client::{Client, ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::discovery::{Discovery, DiscoveryClient, DiscoveryError, FirstAvailable};
use dmsg::identity::{Keypair, PublicKey};
use dmsg::server::{Server, ServerConfig};
use middleware::ServerStackConfig;
use observability::{HealthStates, MetricsRegistry};
use service::{EndpointError, GrpcEndpoint};
use skywire_proto::skywire::server::v1::admin_server::AdminServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminService, AdminView, RelayCollector};
use crate::registration::{Registration, RegistrationConfig};

/// The health component of the relay's accept loop.
const RELAY_COMPONENT: &str = "relay";

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server's identity.
    pub keypair: Keypair,
    /// The relay core's settings (capacity, PQ, limits).
    pub relay: ServerConfig,
    /// Discovery's TCP endpoint.
    pub discovery: Option<String>,
    /// Discovery's dmsg key (reached through `servers`).
    pub discovery_pk: Option<PublicKey>,
    /// Other servers, for the transit client in dmsg-only mode.
    pub servers: Vec<ServerAddr>,
    /// Registration timing and the registered address.
    pub registration: RegistrationConfig,
    /// Admin gRPC middleware settings.
    pub server_stack: ServerStackConfig,
    /// How long open admin calls may finish after shutdown before they are cut.
    pub grace: std::time::Duration,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The relay's accept loop failed: the data plane is dead.
    #[error("the relay accept loop died: {0}")]
    RelayDied(std::io::Error),
    /// A task of the server panicked.
    #[error("a dmsg-server task panicked")]
    Panicked,
    /// The admin endpoint failed.
    #[error("the admin endpoint: {0}")]
    Admin(#[from] EndpointError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The discovery URL is unusable.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
}

/// Discovery as the server reaches it, and how ("tcp", "dmsg" or "tcp+dmsg").
type DiscoveryWay = (Arc<dyn Discovery>, &'static str);

/// How the server reaches discovery: its TCP endpoint, then its dmsg address through the
/// transit client; `None` when neither is configured.
fn discovery_ways(
    config: &Config,
    transit: Option<&Client>,
) -> Result<Option<DiscoveryWay>, DiscoveryError> {
    let mut ways: Vec<Arc<dyn Discovery>> = Vec::new();
    let mut via = Vec::new();
    if let Some(url) = &config.discovery {
        ways.push(Arc::new(DiscoveryClient::over_tcp(url)?));
        via.push("tcp");
    }
    if let Some(client) = transit {
        ways.push(client.discovery().clone());
        via.push("dmsg");
    }
    let via = match via.as_slice() {
        [] => return Ok(None),
        ["tcp"] => "tcp",
        ["dmsg"] => "dmsg",
        _ => "tcp+dmsg",
    };
    let discovery: Arc<dyn Discovery> = if ways.len() == 1 {
        ways.remove(0)
    } else {
        Arc::new(FirstAvailable::new(ways))
    };
    Ok(Some((discovery, via)))
}

/// The transit client of dmsg-only mode: the server's own key, a session to every seeded
/// server, discovery at `dmsg://<discovery_pk>:80`, no entry of its own (the server's entry
/// is the one that matters).
fn transit_client(config: &Config) -> Option<Client> {
    let discovery_pk = config.discovery_pk?;
    Some(Client::new(
        config.keypair.clone(),
        ClientConfig {
            pq: config.relay.pq.clone(),
            lifecycle: LifecycleConfig {
                seeds: config.servers.clone(),
                include_default_seeds: false,
                discovery: DiscoveryTarget::Dmsg(discovery_pk),
                min_sessions: 0,
                publish_entry: false,
                serve_ping: false,
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        },
    ))
}

/// Runs the server on `relay` and `admin` (both already bound) until `shutdown` is
/// cancelled or the relay dies.
pub async fn run(
    config: Config,
    relay: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let server = Server::new(config.keypair.clone(), config.relay.clone());
    let health = HealthStates::new();
    let (relay_up_tx, relay_up) = watch::channel(true);

    // 1. The accept loop, before anything else.
    let stop_accepting = CancellationToken::new();
    let relay_component = health.component(RELAY_COMPONENT);
    let mut relay_task = tokio::spawn({
        let server = server.clone();
        let stop = stop_accepting.clone();
        async move {
            relay_component.set_serving();
            let result = tokio::select! {
                result = server.serve(relay) => result,
                () = stop.cancelled() => Ok(()),
            };
            if let Err(error) = &result {
                relay_component.set_down(format!("accept loop died: {error}"));
            }
            let _ = relay_up_tx.send(false);
            result
        }
    });
    let started = Instant::now();
    tracing::info!(pk = %server.public_key(), "relay accepting");

    // 2. Outbound work, all in the background.
    let transit = transit_client(&config);
    let registration = match discovery_ways(&config, transit.as_ref()) {
        Ok(Some((discovery, via))) => {
            // A classical session's peer is looked up here afterwards (PROTOCOL.md §4.5).
            server.look_up_peers_in(discovery.clone());
            Registration::start(
                server.clone(),
                config.keypair.clone(),
                discovery,
                via,
                config.registration.clone(),
                transit.as_ref().map(Client::session_changes),
            )
        }
        Ok(None) => {
            tracing::warn!("no discovery configured: clients find this server only by seeds");
            Registration::disabled()
        }
        Err(error) => {
            stop_accepting.cancel();
            let _ = relay_task.await;
            server.shutdown().await;
            return Err(error.into());
        }
    };

    // 3. The admin endpoint: health, reflection, Stats, /metrics.
    let view = AdminView {
        server: server.clone(),
        registration: registration.subscribe(),
        public_address: config.registration.public_address.clone(),
        started,
        relay_up,
    };
    let admin_stop = CancellationToken::new();
    let mut admin_tasks = JoinSet::new();
    let admin_result = start_admin(&config, view, &health, admin, &admin_stop, &mut admin_tasks);

    // 4. Run until shutdown, the relay dying, or the admin endpoint failing.
    let mut result = admin_result;
    let mut relay_joined = false;
    if result.is_ok() {
        tokio::select! {
            () = shutdown.cancelled() => tracing::info!("shutting down"),
            joined = &mut relay_task => {
                relay_joined = true;
                result = match joined {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(RunError::RelayDied(error)),
                    Err(_) => Err(RunError::Panicked),
                };
                if let Err(error) = &result {
                    tracing::error!(%error, "the data plane is dead; health is NOT_SERVING; exiting");
                }
            }
            Some(joined) = admin_tasks.join_next() => {
                result = match joined {
                    Ok(Err(error)) => Err(error),
                    Ok(Ok(())) => Ok(()),
                    Err(_) => Err(RunError::Panicked),
                };
                tracing::error!("the admin endpoint stopped; shutting down");
            }
        }
    }

    // 5. Ordered shutdown.
    stop_accepting.cancel();
    if !relay_joined {
        match relay_task.await {
            Ok(Err(error)) if result.is_ok() => result = Err(RunError::RelayDied(error)),
            Err(_) if result.is_ok() => result = Err(RunError::Panicked),
            _ => {}
        }
    }
    registration.stop().await;
    server.shutdown().await;
    if let Some(transit) = transit {
        transit.close().await;
    }
    admin_stop.cancel();
    while let Some(joined) = admin_tasks.join_next().await {
        if let Ok(Err(error)) = joined
            && result.is_ok()
        {
            result = Err(error);
        }
    }
    result
}

/// Starts the admin endpoint (health, reflection, Stats, `/metrics`) and its health driver.
fn start_admin(
    config: &Config,
    view: AdminView,
    health: &HealthStates,
    listener: TcpListener,
    stop: &CancellationToken,
    tasks: &mut JoinSet<Result<(), RunError>>,
) -> Result<(), RunError> {
    let metrics = MetricsRegistry::new();
    metrics.register(RelayCollector::new(view.clone())?)?;
    let (endpoint, health_driver) = GrpcEndpoint::new(config.server_stack.clone())
        .add_service(AdminServer::new(AdminService::new(view)))
        .with_metrics(&metrics)
        .build(health, stop)?;
    let serve = endpoint.serve_tcp(listener, stop.clone(), config.grace);
    tasks.spawn(async move { serve.await.map_err(RunError::Admin) });
    tasks.spawn(async move {
        health_driver.await;
        Ok(())
    });
    Ok(())
}
