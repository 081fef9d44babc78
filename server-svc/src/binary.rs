//! The `dmsg-server` binary (see `--help`): flags, telemetry, bind, run until a signal.
//! The binary's `main` is a call to [`main`]; anyhow is used here and only here.

use crate::config::{Args, Settings};
use crate::registration::RegistrationConfig;
use crate::run::{Config, run};
use anyhow::Context;
use clap::Parser;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use dmsg::server::ServerConfig;
use tokio_util::sync::CancellationToken;

/// Runs the `dmsg-server` binary with `args` (the first is the program name) and returns its
/// exit code: what `main` does, callable from a multi-call binary such as `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args = Args::parse_from(args);
    observability::process::block_on_main("dmsg-server", start(args))
}

async fn start(args: Args) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    observability::process::with_telemetry("dmsg-server", serve(settings)).await
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let keypair = Keypair::load_or_ephemeral(settings.key_file.as_deref())?;
    // Bind first: nothing below may delay accepting.
    let relay = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let admin = tokio::net::TcpListener::bind(settings.admin)
        .await
        .with_context(|| format!("cannot listen on the admin address {}", settings.admin))?;
    tracing::info!(
        relay = %relay.local_addr()?,
        admin = %admin.local_addr()?,
        pk = %keypair.public(),
        "listening"
    );
    let pq = PqSettings::from_env();
    let mut registration = RegistrationConfig::new(settings.public_address, pq.enabled);
    registration.backoff_cap = settings.registration_backoff_cap;
    registration.refresh = settings.registration_refresh;
    let config = Config {
        keypair,
        relay: ServerConfig {
            mux: dmsg::mux::MuxConfig {
                ping: settings
                    .ping_interval
                    .map_or_else(Default::default, dmsg::mux::PingConfig::every),
                ..Default::default()
            },
            pq,
            max_sessions: settings.max_sessions,
            ..ServerConfig::default()
        },
        discovery: settings.discovery,
        discovery_pk: settings.discovery_pk,
        servers: settings.servers,
        registration,
        server_stack: Default::default(),
    };
    let shutdown = CancellationToken::new();
    observability::process::run_until_signal(shutdown.clone(), run(config, relay, admin, shutdown))
        .await
        .context("dmsg-server stopped")
}
