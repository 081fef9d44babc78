//! What every Skywire-rs binary shares around its service: the shutdown signal and the TOML
//! config file under its flags.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use serde::de::DeserializeOwned;

/// Why a configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: toml::de::Error,
    },
    /// A setting has a bad value.
    #[error("{0}")]
    Invalid(String),
}

/// The settings in the TOML file at `path`; the defaults (every key absent) without one.
pub fn read_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// A duration setting in whole seconds: the flag, else the file, else `default`; zero is
/// refused, naming the flag (`--<name>`).
pub fn seconds_setting(
    flag: Option<u64>,
    file: Option<u64>,
    default: u64,
    name: &str,
) -> Result<Duration, ConfigError> {
    match flag.or(file).unwrap_or(default) {
        0 => Err(ConfigError::Invalid(format!(
            "--{name} must be at least 1 second"
        ))),
        secs => Ok(Duration::from_secs(secs)),
    }
}

/// Drives `running` (a service that stops when `shutdown` is cancelled) until it ends by itself
/// or SIGINT/SIGTERM arrives; then cancels `shutdown` and waits for it to finish.
pub async fn run_until_signal<F: Future>(shutdown: CancellationToken, running: F) -> F::Output {
    tokio::pin!(running);
    tokio::select! {
        output = &mut running => return output,
        () = shutdown_signal() => tracing::info!("signal received; shutting down"),
    }
    shutdown.cancel();
    running.await
}

/// A service's life around `serve`: telemetry for `service` is set up first and flushed last,
/// and an error `serve` returns is logged as well as returned.
pub async fn with_telemetry<E>(
    service: &str,
    serve: impl Future<Output = Result<(), E>>,
) -> Result<(), E>
where
    E: std::fmt::Display + From<crate::InitError>,
{
    let telemetry = crate::init(service)?;
    let result = serve.await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    telemetry.shutdown().await;
    result
}

/// A binary's `main`: runs `body` on a new multi-threaded tokio runtime; an error is printed
/// to stderr as `<program>: <error:#>` and makes the exit code 1.
pub fn block_on_main<E: std::fmt::Display>(
    program: &str,
    body: impl Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the tokio runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// first polled), so a signal that arrives before the caller awaits it is not lost — and
/// from then on SIGINT no longer kills the process outright.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut only), Err(error)) | (Err(error), Ok(mut only)) => {
                    tracing::warn!(%error, "cannot handle one of SIGINT/SIGTERM");
                    only.recv().await;
                }
                (Err(error), Err(_)) => {
                    // Signals keep their default action (the process ends at once).
                    tracing::warn!(%error, "cannot handle SIGINT/SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
