//! The `dmsg-discovery` binary (see `--help`): flags, telemetry, bind, run until a signal.
//! The binary's `main` is a call to [`main`]; anyhow is used here and only here.

use crate::config::Args;
use crate::run::{Config, run};
use crate::service::Ttls;
use anyhow::Context;
use clap::Parser;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use tokio_util::sync::CancellationToken;

/// Runs the `dmsg-discovery` binary with `args` (the first is the program name) and returns its
/// exit code: what `main` does, callable from a multi-call binary such as `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args = Args::parse_from(args);
    observability::process::block_on_main("dmsg-discovery", start(args))
}

async fn start(args: Args) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    observability::process::with_telemetry("dmsg-discovery", serve(settings)).await
}

async fn serve(settings: crate::config::Settings) -> anyhow::Result<()> {
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
