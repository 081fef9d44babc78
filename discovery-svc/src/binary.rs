//! The `dmsg-discovery` binary (see `--help`): settings, telemetry, bind, run until a signal.
//! The binary's `main` is a call to [`main`]; anyhow is used here and only here.

use crate::config::{Args, BINARY, Settings};
use crate::run::{Config, Listeners, run};
use crate::service::Ttls;
use anyhow::Context;
use dmsg::identity::Keypair;
use dmsg::noise::PqSettings;
use tokio_util::sync::CancellationToken;

/// Runs the `dmsg-discovery` binary with `args` (the first is the program name) and returns its
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
    let grpc = service::process::bind(settings.listen, "listen").await?;
    let admin = service::process::bind(settings.admin, "admin").await?;
    tracing::info!(
        addr = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        pk = %keypair.public(),
        "listening"
    );
    let grace = settings.common.shutdown_grace();
    let config = Config {
        keypair,
        store: settings.store,
        servers: settings.servers,
        ttls: Ttls {
            server: settings.server_ttl,
            client: settings.client_ttl,
        },
        connector: Default::default(),
        pq: PqSettings::with_required(settings.common.require_pq),
        server_stack: Default::default(),
        grace,
    };
    let shutdown = CancellationToken::new();
    let listeners = Listeners {
        grpc,
        admin: Some(admin),
    };
    service::process::run_until_signal(shutdown.clone(), grace, run(config, listeners, shutdown))
        .await
        .context("dmsg-discovery stopped")
}
