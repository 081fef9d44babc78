//! The `skywire-visor` binary (see `--help`): settings, telemetry, bind, run until a signal.
//! The binary's `main` is a call to [`main`]; anyhow is used here and only here.

use anyhow::Context;
use dmsg::identity::Keypair;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Args, BINARY, Settings};

/// Runs the `skywire-visor` binary with `args` (the first is the program name) and returns
/// its exit code: what `main` does, callable from a multi-call binary such as
/// `skywire-localnet`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    service::process::main::<Args, _, _>(&BINARY, args, start)
}

async fn start(settings: Settings) -> anyhow::Result<()> {
    let keypair = settings.dmsg.keypair()?;
    let instance = Some(keypair.public().short());
    service::process::with_telemetry(BINARY.name, instance, serve(settings, keypair)).await
}

async fn serve(settings: Settings, keypair: Keypair) -> anyhow::Result<()> {
    let grace = settings.common.shutdown_grace();
    let pk = keypair.public();
    // Bind first: nothing below may delay accepting.
    let app = App::build(settings, keypair).await?;
    tracing::info!(
        stcp = %app.stcp_addr()?,
        admin = %app.admin_addr()?,
        %pk,
        "listening"
    );
    let admin = app.admin_addr()?;
    if admin.ip().is_loopback() {
        tracing::info!(%admin, "control API (skywire-cli) on loopback only");
    } else {
        tracing::warn!(
            %admin,
            "control API reachable beyond this machine: whoever reaches it controls this \
             visor (--admin 127.0.0.1:PORT keeps it local)"
        );
    }
    let mut handle = app.spawn()?;
    let shutdown = CancellationToken::new();
    let run = {
        let shutdown = shutdown.clone();
        async move {
            let failure = tokio::select! {
                () = shutdown.cancelled() => None,
                error = handle.failed() => Some(error),
            };
            handle.shutdown().await;
            match failure {
                Some(error) => Err(anyhow::Error::new(error)),
                None => Ok(()),
            }
        }
    };
    service::process::run_until_signal(shutdown, grace, run)
        .await
        .context("skywire-visor stopped")
}
