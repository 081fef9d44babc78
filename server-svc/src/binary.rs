//! The `dmsg-server` binary (see `--help`): settings, telemetry, bind, run until a signal.
//! The binary's `main` is a call to [`main`]; anyhow is used here and only here.

use crate::config::{Args, BINARY, Settings};
use crate::registration::RegistrationConfig;
use crate::run::{Config, run};
use anyhow::Context;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use dmsg::server::ServerConfig;
use tokio_util::sync::CancellationToken;

/// Runs the `dmsg-server` binary with `args` (the first is the program name) and returns its
/// exit code: what `main` does, callable from a multi-call binary such as `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    service::process::main::<Args, _, _>(&BINARY, args, start)
}

async fn start(settings: Settings) -> anyhow::Result<()> {
    let keypair = Keypair::load_or_ephemeral(settings.key_file.as_deref())?;
    let instance = Some(keypair.public().short());
    service::process::with_telemetry(BINARY.name, instance, serve(settings, keypair)).await
}

async fn serve(settings: Settings, keypair: Keypair) -> anyhow::Result<()> {
    // Bind first: nothing below may delay accepting.
    let relay = service::process::bind(settings.listen, "listen").await?;
    let admin = service::process::bind(settings.admin, "admin").await?;
    tracing::info!(
        relay = %relay.local_addr()?,
        admin = %admin.local_addr()?,
        pk = %keypair.public(),
        "listening"
    );
    let pq = PqSettings::with_required(settings.common.require_pq);
    let mut registration = RegistrationConfig::new(settings.public_address, pq.enabled);
    registration.backoff_cap = settings.registration_backoff_cap;
    registration.refresh = settings.registration_refresh;
    let grace = settings.common.shutdown_grace();
    let config = Config {
        keypair,
        relay: ServerConfig {
            mux: dmsg::mux::MuxConfig {
                ping: dmsg::mux::PingConfig::every(settings.ping_interval),
                ..Default::default()
            },
            pq,
            max_sessions: settings.max_sessions,
            per_source: settings.per_source,
            first_message_timeout: settings.first_message_timeout,
            ..ServerConfig::default()
        },
        discovery: settings.discovery,
        discovery_pk: settings.discovery_pk,
        servers: settings.servers,
        registration,
        server_stack: Default::default(),
        grace,
    };
    let shutdown = CancellationToken::new();
    service::process::run_until_signal(shutdown.clone(), grace, run(config, relay, admin, shutdown))
        .await
        .context("dmsg-server stopped")
}
