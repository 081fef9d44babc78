//! The `transport-setup` binary: the TransportSetup service on TCP, relaying to the visors'
//! transport gateways through its dmsg client.

use dmsg::client::Client;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use middleware::ServerStackConfig;
use observability::MetricsRegistry;
use service::GrpcEndpoint;
use skywire_proto::skywire::setup::v1::transport_setup_server::TransportSetupServer;

use super::Process;
use super::config::{TRANSPORT_SETUP, TransportSetupArgs};
use crate::transport_setup::TransportSetupService;

/// Runs the `transport-setup` binary with `args` (the first is the program name) and
/// returns its exit code: what `main` does, callable from a multi-call binary such as
/// `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    service::process::main::<TransportSetupArgs, _, _>(&TRANSPORT_SETUP, args, start)
}

async fn start(settings: TransportSetupArgs) -> anyhow::Result<()> {
    let keypair = settings.dmsg.keypair()?;
    let instance = Some(keypair.public().short());
    service::process::with_telemetry(TRANSPORT_SETUP.name, instance, serve(settings, keypair)).await
}

async fn serve(settings: TransportSetupArgs, keypair: Keypair) -> anyhow::Result<()> {
    // Bind first: nothing below may delay accepting.
    let grpc = service::process::bind(settings.grpc, "grpc").await?;
    tracing::info!(grpc = %grpc.local_addr()?, pk = %keypair.public(), "listening");
    let pq = PqSettings::with_required(settings.common.require_pq);
    let client = Client::new(keypair, settings.dmsg.client_config(pq));
    let mut process = Process::new(TRANSPORT_SETUP.name, settings.common.shutdown_grace());
    let metrics = MetricsRegistry::new();
    let (endpoint, health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(TransportSetupServer::new(TransportSetupService::new(
            client.downgrade(),
        )))
        .with_metrics(&metrics)
        .build(&process.health, &process.shutdown)?;
    process.serve_tcp(&endpoint, grpc);
    process.spawn(health);
    process.run_until_signal(client).await
}
