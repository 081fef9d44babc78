//! The `route-setup` binary: the RouteSetup service on dmsg port 36 (visors) and on TCP
//! (operators), setting route groups up through the visors' route gateways.

use std::sync::Arc;

use anyhow::Context;
use discovery_client::registry::{Registry, RegistryClient};
use dmsg::addr::DmsgAddr;
use dmsg::client::Client;
use dmsg::discovery::DISCOVERY_PORT;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use middleware::ServerStackConfig;
use observability::MetricsRegistry;
use service::GrpcEndpoint;
use skywire_proto::skywire::setup::v1::route_setup_server::RouteSetupServer;

use super::Process;
use super::config::{ROUTE_SETUP, RouteSetupArgs, RouteSetupSettings};
use crate::gateway::GrpcGateways;
use crate::route_setup::{RegistryGraph, RouteSetup};
use crate::service::{BreakerBoard, ROUTE_SETUP_PORT, RouteSetupService};

/// Runs the `route-setup` binary with `args` (the first is the program name) and returns its
/// exit code: what `main` does, callable from a multi-call binary such as `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    service::process::main::<RouteSetupArgs, _, _>(&ROUTE_SETUP, args, start)
}

async fn start(settings: RouteSetupSettings) -> anyhow::Result<()> {
    let keypair = settings.dmsg.keypair()?;
    let instance = Some(keypair.public().short());
    service::process::with_telemetry(ROUTE_SETUP.name, instance, serve(settings, keypair)).await
}

async fn serve(settings: RouteSetupSettings, keypair: Keypair) -> anyhow::Result<()> {
    // Bind first: nothing below may delay accepting.
    let grpc = service::process::bind(settings.grpc, "grpc").await?;
    tracing::info!(grpc = %grpc.local_addr()?, pk = %keypair.public(), "listening");
    let pq = PqSettings::with_required(settings.common.require_pq);
    let client = Client::new(keypair, settings.dmsg.client_config(pq));
    let visors = client
        .listen(ROUTE_SETUP_PORT)
        .context("listening on dmsg port 36")?;
    // The transport graph: discovery's registry over TCP, or over dmsg by its key.
    let registry: Arc<dyn Registry> = match (&settings.dmsg.discovery, settings.dmsg.discovery_pk) {
        (Some(url), _) => Arc::new(RegistryClient::over_tcp(url)?),
        (None, Some(pk)) => Arc::new(RegistryClient::new(dmsg::grpc::channel_any(
            client.downgrade(),
            DmsgAddr::new(pk, DISCOVERY_PORT),
        ))),
        (None, None) => anyhow::bail!("route-setup needs --discovery or --discovery-pk"),
    };
    let core = RouteSetup::new(
        // A hop that hangs fails as itself, within a third of the setup deadline.
        Arc::new(GrpcGateways::with_call_timeout(
            client.downgrade(),
            settings.core.request_timeout / 3,
        )),
        Arc::new(RegistryGraph(registry)),
        settings.core,
    );
    let board = BreakerBoard::default();
    let mut process = Process::new(ROUTE_SETUP.name, settings.common.shutdown_grace());
    process.spawn(board.follow(core.breakers()));
    {
        // Setups whose callers left finish and release what they built.
        let core = core.clone();
        process.on_stop(async move { core.drain().await });
    }
    let service = RouteSetupService::new(core, board);
    crate::metrics::register();
    let metrics = MetricsRegistry::new();
    let (operators, operators_health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(RouteSetupServer::new(service.clone()))
        .with_metrics(&metrics)
        .build(&process.health, &process.shutdown)?;
    let (on_dmsg, dmsg_health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(RouteSetupServer::new(service))
        .build(&process.health, &process.shutdown)?;
    process.serve_tcp(&operators, grpc);
    process.serve_dmsg(&on_dmsg, visors);
    process.spawn(operators_health);
    process.spawn(dmsg_health);
    process.run_until_signal(client).await
}
