//! A binary's life: its `main` (settings, runtime, fatal errors), telemetry around the
//! service, and shutdown on SIGINT/SIGTERM bounded by a grace period.

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use observability::LogFormat;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Binary, ConfigError};

/// How long a stopping binary waits for its service before it gives up, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Time the process gives its own clean-up (closing clients, flushing) after the endpoints'
/// grace period, before it exits anyway.
pub const CLEANUP_MARGIN: Duration = Duration::from_secs(1);
/// Exit code after a second signal (128 + SIGINT, what a shell reports for Ctrl-C).
pub const SECOND_SIGNAL_EXIT: i32 = 130;

/// Settings checked beyond what each flag's type checks (values that only make sense
/// together): a binary's definition resolves into what its service runs with.
pub trait Resolve {
    /// What the service runs with.
    type Settings;

    /// Checks the settings together.
    fn resolve(self) -> Result<Self::Settings, ConfigError>;
}

/// A binary's `main`: parses `T` from `args` (the first is the program name) with
/// [`config::parse`], resolves it, then runs `body` on a new multi-threaded tokio runtime.
///
/// `--help` and `--version` print and exit 0; a bad command line, config file or
/// combination of settings exits 2, an error `body` returns exits 1; both are printed as
/// `<program>: <error:#>` (one JSON object under `SKYWIRE_LOG_FORMAT=json`).
pub fn main<T, E, F>(
    binary: &Binary,
    args: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(T::Settings) -> F,
) -> ExitCode
where
    T: CommandFactory + FromArgMatches + Resolve,
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    let settings = match config::parse::<T>(binary, args).and_then(T::resolve) {
        Ok(settings) => settings,
        Err(ConfigError::Command(error))
            if log_format() != LogFormat::Json || !error.use_stderr() =>
        {
            // Help, version and usage errors the way clap prints them.
            let code = error.exit_code();
            let _ = error.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
        Err(error) => {
            print_fatal(binary.name, &error);
            return ExitCode::from(2);
        }
    };
    block_on_main(binary.name, body(settings))
}

/// Runs `body` on a new multi-threaded tokio runtime; an error is printed as
/// `<program>: <error:#>` (JSON under `SKYWIRE_LOG_FORMAT=json`) and makes the exit code 1.
pub fn block_on_main<E: Display>(
    program: &str,
    body: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            print_fatal(program, &format!("cannot start the tokio runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(body);
    // Tasks cut at a grace expiry must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            print_fatal(program, &format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The log format `SKYWIRE_LOG_FORMAT` asks for (human when unset or unknown: the error for
/// an unknown one comes from telemetry set-up).
pub fn log_format() -> LogFormat {
    observability::TelemetryConfig::log_format_from_env().unwrap_or_default()
}

/// Prints a fatal error to stderr, as a JSON log line in JSON mode; never panics.
pub fn print_fatal(program: &str, error: &dyn Display) {
    use std::io::Write;
    let line = match log_format() {
        LogFormat::Json => observability::json_log::error_line(program, &error.to_string()),
        LogFormat::Human => format!("{program}: {error}"),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A service's life around `serve`: telemetry for `service` (instance `instance`) is set up
/// first and flushed last, and an error `serve` returns is logged as well as returned.
pub async fn with_telemetry<E>(
    service: &str,
    instance: Option<String>,
    serve: impl Future<Output = Result<(), E>>,
) -> Result<(), E>
where
    E: Display + From<observability::InitError>,
{
    let mut config = observability::TelemetryConfig::from_env(service)?;
    config.instance_id = instance;
    let telemetry = observability::init_with(config)?;
    let result = serve.await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    telemetry.shutdown().await;
    result
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--{flag}): {source}")]
pub struct BindError {
    /// The address.
    pub addr: std::net::SocketAddr,
    /// The flag that named it.
    pub flag: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// Connections the kernel queues for a listener before `accept` takes them (capped by
/// `net.core.somaxconn`, 4096 on current kernels): a burst of thousands of connections waits
/// there instead of overflowing while the accept loop drains it.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the TCP listener of `--<flag>` at `addr` (address reuse on, [`LISTEN_BACKLOG`]).
pub async fn bind(
    addr: std::net::SocketAddr,
    flag: &'static str,
) -> Result<tokio::net::TcpListener, BindError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| BindError { addr, flag, source })
}

/// Drives `running` (a service that stops when `shutdown` is cancelled) until it ends by itself
/// or SIGINT/SIGTERM arrives; then cancels `shutdown` and waits for it at most `grace` plus
/// [`CLEANUP_MARGIN`] (its endpoints drain for at most `grace`, then it cleans up).
///
/// A service still stopping after that is abandoned with a WARN and `Ok(())`: what it had
/// left (calls still open, say) ends with the process. A second signal while it stops ends
/// the process at once with exit code 130.
pub async fn run_until_signal<E>(
    shutdown: CancellationToken,
    grace: Duration,
    running: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    tokio::pin!(running);
    tokio::select! {
        output = &mut running => return output,
        () = shutdown_signal() => tracing::info!(
            ?grace,
            "signal received; shutting down (a second signal exits at once)"
        ),
    }
    shutdown.cancel();
    let second = shutdown_signal();
    tokio::select! {
        output = &mut running => output,
        () = tokio::time::sleep(grace + CLEANUP_MARGIN) => {
            tracing::warn!(?grace, "still stopping after the grace period; exiting anyway");
            Ok(())
        }
        () = second => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(SECOND_SIGNAL_EXIT)
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
