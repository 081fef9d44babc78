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
    let keypair = match &settings.key_file {
        Some(path) => Keypair::load(path)?,
        None => {
            let keypair = Keypair::generate();
            tracing::warn!(
                pk = %keypair.public(),
                "no --key-file: using an ephemeral key (development only; it changes at every start)"
            );
            keypair
        }
    };
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
    let running = run(config, listener, shutdown.clone());
    tokio::pin!(running);
    tokio::select! {
        result = &mut running => return result.context("dmsg-discovery stopped"),
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    shutdown.cancel();
    running.await.context("dmsg-discovery stopped")
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
