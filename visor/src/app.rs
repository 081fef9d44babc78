//! The visor as a process (ARCHITECTURE §5): [`App::build`] binds every listener, then
//! [`App::spawn`] starts the data plane, the stcp accept loop and the admin endpoint, and
//! returns the handle that shuts them down. The dmsg client connects in the background: a
//! minimal first boot (a key, no reachable discovery) runs and connects as soon as a seeded
//! server answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use discovery_client::registry::{Registry, RegistryClient};
use dmsg::client::Client;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use middleware::ServerStackConfig;
use observability::{HealthStates, MetricsRegistry};
use service::{EndpointError, GrpcEndpoint};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::apps::registry::AppRegistry;
use crate::config::Settings;
use crate::control::{ControlParts, ControlService};
use crate::forward::{Forwarded, Forwarding};
use crate::metrics::{SharedKeepers, VisorCollector};
use crate::node::{Visor, VisorConfig};
use crate::transport::persistent::{TransportKeepers, TransportLink};
use dmsg::client::keeper::KeeperConfig;
use skywire_proto::skywire::visor::v1::visor_control_server::VisorControlServer;

/// The health component of the data plane (the stcp accept loop).
pub const DATA_PLANE_COMPONENT: &str = "data-plane";

/// Why the visor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] service::process::BindError),
    /// The admin endpoint failed.
    #[error("the admin endpoint: {0}")]
    Admin(#[from] EndpointError),
    /// The gateways could not start.
    #[error("gateways: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The stcp accept loop died.
    #[error("the stcp accept loop died: {0}")]
    StcpDied(std::io::Error),
    /// The discovery URL is unusable.
    #[error("discovery: {0}")]
    Discovery(#[from] dmsg::discovery::DiscoveryError),
    /// An app could not start.
    #[error("apps: {0}")]
    Apps(#[from] crate::apps::registry::AppsError),
    /// Port forwarding could not start.
    #[error("port forwarding: {0}")]
    Forward(#[from] crate::forward::ForwardError),
    /// A task panicked.
    #[error("a skywire-visor task panicked")]
    Panicked,
}

/// A visor with its listeners bound, not running yet.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    keypair: Keypair,
    stcp: TcpListener,
    admin: TcpListener,
    forwards: Vec<(Forwarded, TcpListener)>,
    socks: Option<TcpListener>,
}

impl App {
    /// Binds the stcp and admin listeners; nothing else happens yet.
    pub async fn build(settings: Settings, keypair: Keypair) -> Result<Self, AppError> {
        let stcp = service::process::bind(settings.stcp_listen, "stcp-listen").await?;
        let admin = service::process::bind(settings.admin, "admin").await?;
        let mut forwards = Vec::new();
        for forward in &settings.forwarded {
            forwards.push((
                *forward,
                service::process::bind(forward.listen, "forward").await?,
            ));
        }
        let socks = match &settings.skysocks_client {
            Some((_, listen)) => Some(service::process::bind(*listen, "socks-listen").await?),
            None => None,
        };
        Ok(Self {
            settings,
            keypair,
            stcp,
            admin,
            forwards,
            socks,
        })
    }

    /// Where the stcp listener is bound.
    pub fn stcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.stcp.local_addr()
    }

    /// Where the admin endpoint is bound.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Starts everything in the background; returns the handle that stops it.
    pub fn spawn(self) -> Result<AppHandle, AppError> {
        let settings = self.settings;
        let pq = PqSettings::with_required(settings.common.require_pq);
        let client = Client::new(
            self.keypair.clone(),
            settings.dmsg.client_config(pq.clone()),
        );
        // Transports are registered through discovery's TCP endpoint when there is one.
        let registry = match &settings.dmsg.discovery {
            Some(url) => Some(Arc::new(RegistryClient::over_tcp(url)?) as Arc<dyn Registry>),
            None => None,
        };
        let visor = Visor::with_dmsg(
            self.keypair,
            VisorConfig {
                pq,
                pk_table: settings.pk_table.clone(),
                registry,
                // The route-setups it trusts are the ones it asks (lowest key first).
                route_setups: {
                    let mut keys: Vec<_> = settings.trusted.route_setup.iter().copied().collect();
                    keys.sort_by_key(|pk| pk.to_string());
                    keys
                },
                ..VisorConfig::default()
            },
            client,
        );
        // Persistent transports: dmsg's one keeper, dialing through the visor.
        let mut keepers = TransportKeepers::with_link(
            TransportLink(visor.downgrade()),
            KeeperConfig {
                backoff_base: Duration::from_secs(1),
                backoff_cap: Duration::from_secs(30),
                seed: None,
            },
        );
        keepers.keep_exactly(&settings.transports);
        let keepers: SharedKeepers = Arc::new(std::sync::Mutex::new(Some(keepers)));
        let stop = CancellationToken::new();
        let health = HealthStates::new();
        let mut tasks = JoinSet::new();

        let data_plane = health.component(DATA_PLANE_COMPONENT);
        let serving = visor.clone();
        let listener = self.stcp;
        let stcp_addr = listener.local_addr().map_err(AppError::StcpDied)?;
        tasks.spawn(async move {
            data_plane.set_serving();
            let result = serving.serve_stcp(listener).await;
            if let Err(error) = &result {
                data_plane.set_down(format!("stcp accept loop died: {error}"));
            }
            result.map_err(AppError::StcpDied)
        });

        // The gateways for the control plane, on the dmsg client (ports 47 and 136).
        let mut gateway_tasks = JoinSet::new();
        let gateways = crate::gateway::serve(
            &visor,
            settings.trusted.clone(),
            &health,
            &stop,
            settings.common.shutdown_grace(),
            &mut gateway_tasks,
        )?;
        let forwarding = Arc::new(Forwarding::start(
            &visor,
            &settings.published,
            self.forwards,
        )?);
        // The apps of the flags; the control API starts and stops them later.
        let apps = Arc::new(AppRegistry::new(visor.clone_internal()));
        if settings.skysocks {
            apps.start_skysocks()?;
        }
        if let (Some((config, _)), Some(listener)) = (settings.skysocks_client.clone(), self.socks)
        {
            apps.start_client_on(config, listener)?;
        }
        let uptime = crate::uptime::Uptime::new(settings.uptime_every);
        tasks.spawn({
            let (uptime, visor, stop) = (uptime.clone(), visor.clone_internal(), stop.clone());
            async move {
                uptime.run(visor, stop).await;
                Ok(())
            }
        });
        let metrics = MetricsRegistry::new();
        metrics.register(forwarding.metrics())?;
        metrics.register(VisorCollector::new(
            visor.clone(),
            keepers.clone(),
            gateways,
            uptime.clone(),
        )?)?;
        let control = ControlService::new(
            visor.clone(),
            stcp_addr,
            ControlParts {
                uptime: uptime.clone(),
                apps: apps.clone(),
                forwarding: forwarding.clone(),
            },
        );
        let (endpoint, health_driver) = GrpcEndpoint::new(ServerStackConfig::default())
            .add_service(VisorControlServer::new(control))
            .with_metrics(&metrics)
            .build(&health, &stop)?;
        let grace = settings.common.shutdown_grace();
        let serve = endpoint.serve_tcp(self.admin, stop.clone(), grace);
        tasks.spawn(async move { serve.await.map_err(AppError::Admin) });
        tasks.spawn(async move {
            health_driver.await;
            Ok(())
        });
        Ok(AppHandle {
            visor,
            forwarding,
            apps,
            keepers,
            gateway_tasks,
            stop,
            tasks,
            grace,
        })
    }
}

/// A running visor.
#[derive(Debug)]
pub struct AppHandle {
    visor: Visor,
    forwarding: Arc<Forwarding>,
    apps: Arc<AppRegistry>,
    keepers: SharedKeepers,
    gateway_tasks: JoinSet<()>,
    stop: CancellationToken,
    tasks: JoinSet<Result<(), AppError>>,
    grace: Duration,
}

impl AppHandle {
    /// The data plane.
    pub fn visor(&self) -> &Visor {
        &self.visor
    }

    /// Waits until a task of the visor ends by itself (a failure: it runs until stopped).
    pub async fn failed(&mut self) -> AppError {
        match self.tasks.join_next().await {
            Some(Ok(Err(error))) => error,
            Some(Err(_)) => AppError::Panicked,
            Some(Ok(Ok(()))) | None => {
                AppError::StcpDied(std::io::Error::other("a visor task ended before shutdown"))
            }
        }
    }

    /// Stops the admin endpoint and the data plane and waits for every task, within the
    /// grace period.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let keepers = self
            .keepers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(keepers) = keepers {
            keepers.stop().await;
        }
        self.forwarding.shutdown().await;
        self.apps.shutdown().await;
        self.visor.shutdown().await;
        let drain = async {
            while self.tasks.join_next().await.is_some() {}
            while self.gateway_tasks.join_next().await.is_some() {}
        };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!("visor tasks still running after the grace period; leaving them");
            self.tasks.abort_all();
            self.gateway_tasks.abort_all();
        }
    }
}
