//! `dmsg-discovery`: see `--help`.

use anyhow::Context;
use clap::Parser;
use discovery_svc::config::Args;
use discovery_svc::run::{Config, run};
use discovery_svc::service::Ttls;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Args::parse().resolve()?;
    let telemetry = observability::init("dmsg-discovery")?;
    let result = serve(settings).await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    telemetry.shutdown().await;
    result
}

async fn serve(settings: discovery_svc::config::Settings) -> anyhow::Result<()> {
    let keypair = Keypair::load_or_ephemeral(settings.key_file.as_deref())?;
    // Bind first: nothing below may delay accepting.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(addr = %listener.local_addr()?, pk = %keypair.public(), "listening");
    let config = Config {
        keypair,
        store: settings.store,
        servers: settings.servers,
        ttls: Ttls {
            server: settings.server_ttl,
            client: settings.client_ttl,
        },
        connector: Default::default(),
        pq: PqSettings::from_env(),
        server_stack: Default::default(),
    };
    let shutdown = CancellationToken::new();
    observability::process::run_until_signal(shutdown.clone(), run(config, listener, shutdown))
        .await
        .context("dmsg-discovery stopped")
}
