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

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
