//! Process-wide logging and trace export: [`init`] and the [`TelemetryGuard`] it returns.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Environment variable naming the OTLP/gRPC collector (e.g. `http://127.0.0.1:4317`).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Environment variable choosing the log format: `human` (default) or `json`.
pub const LOG_FORMAT_ENV: &str = "SKYWIRE_LOG_FORMAT";
/// Filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info";
/// Filter of exported spans, whatever the log filter says (`RUST_LOG=warn` still exports
/// every RPC span).
pub const SPAN_FILTER: &str = "info";
/// Environment variable of extra OpenTelemetry resource attributes (`k=v,k=v`).
pub const RESOURCE_ATTRIBUTES_ENV: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Longest quiet time between two warnings about failed trace exports.
pub const EXPORT_WARN_EVERY: Duration = Duration::from_secs(60);
/// Longest time [`TelemetryGuard`] waits for the last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What [`init_with`] sets up. [`TelemetryConfig::from_env`] reads it from the environment once.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive string for log lines, e.g. `info,dmsg=debug`.
    pub filter: String,
    /// An `EnvFilter` directive string for exported spans ([`SPAN_FILTER`]).
    pub span_filter: String,
    /// `service.instance.id` of exported spans (one process among several of a service),
    /// unless `OTEL_RESOURCE_ATTRIBUTES` sets it.
    pub instance_id: Option<String>,
    /// OTLP/gRPC collector endpoint; `None` exports nothing (context still propagates).
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Reads `RUST_LOG`, `SKYWIRE_LOG_FORMAT` and `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn from_env(service_name: &str) -> Result<Self, InitError> {
        Ok(Self {
            service_name: service_name.to_owned(),
            log_format: Self::log_format_from_env()?,
            filter: std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned()),
            span_filter: SPAN_FILTER.to_owned(),
            instance_id: None,
            otlp_endpoint: std::env::var(OTLP_ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.is_empty()),
        })
    }

    /// The log format `SKYWIRE_LOG_FORMAT` names.
    pub fn log_format_from_env() -> Result<LogFormat, InitError> {
        match std::env::var(LOG_FORMAT_ENV).as_deref() {
            Err(_) | Ok("" | "human") => Ok(LogFormat::Human),
            Ok("json") => Ok(LogFormat::Json),
            Ok(other) => Err(InitError::LogFormat(other.to_owned())),
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// `SKYWIRE_LOG_FORMAT` holds something other than `human` or `json`.
    #[error("{LOG_FORMAT_ENV}={0:?} is not a log format; use \"human\" or \"json\"")]
    LogFormat(String),
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The rejected directive string.
        filter: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// OTLP export was asked for outside a tokio runtime (the exporter needs one).
    #[error("OTLP export needs a tokio runtime: call init from inside one")]
    NoRuntime,
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("cannot build the OTLP exporter for {endpoint:?}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter builder said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInitialised(#[from] tracing_subscriber::util::TryInitError),
}

/// Sets up logging (and OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) for a process.
///
/// Call once, early in `main`, inside the tokio runtime. Keep the guard alive and call
/// [`TelemetryGuard::shutdown`] before the runtime stops so the last spans are exported.
pub fn init(service_name: &str) -> Result<TelemetryGuard, InitError> {
    init_with(TelemetryConfig::from_env(service_name)?)
}

/// [`init`] with an explicit configuration.
///
/// A tracer provider is always installed so every span gets trace and span ids and W3C
/// context propagates through the process even when nothing is exported.
pub fn init_with(config: TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    let env_filter = |filter: &str| {
        EnvFilter::try_new(filter).map_err(|source| InitError::Filter {
            filter: filter.to_owned(),
            source,
        })
    };
    let log_filter = env_filter(&config.filter)?;
    let span_filter = env_filter(&config.span_filter)?;
    let provider = tracer_provider(&config)?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(config.service_name.clone()))
        .with_filter(span_filter);
    let log = match config.log_format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => crate::json_log::JsonLines::new()
            .with_filter(log_filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init()?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(%endpoint, service = %config.service_name, "exporting traces over OTLP/gRPC");
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// The tracer provider for `config`: with a batch OTLP exporter when an endpoint is set.
fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, InitError> {
    let mut resource = Resource::builder().with_service_name(config.service_name.clone());
    let set_by_env = std::env::var(RESOURCE_ATTRIBUTES_ENV)
        .is_ok_and(|attributes| attributes.contains("service.instance.id="));
    if let Some(instance) = config.instance_id.clone().filter(|_| !set_by_env) {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance,
        ));
    }
    let resource = resource.build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(builder.build());
    };
    // The tonic exporter spawns its connection onto the current runtime.
    tokio::runtime::Handle::try_current().map_err(|_| InitError::NoRuntime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| InitError::Exporter {
            endpoint: endpoint.clone(),
            source,
        })?;
    Ok(builder
        .with_batch_exporter(crate::export::WarnOnFailure::new(
            exporter,
            endpoint.clone(),
            EXPORT_WARN_EVERY,
        ))
        .build())
}

/// Keeps trace export running; flushes the last spans when shut down or dropped.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops trace export, waiting at most [`FLUSH_TIMEOUT`].
    ///
    /// The blocking flush runs on a blocking thread, so this also works on a current-thread
    /// runtime (a synchronous shutdown there would starve the exporter's own connection).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let flushed =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                    .await;
            if let Ok(Err(error)) = flushed {
                eprintln!("trace export did not flush cleanly: {error}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    /// Best effort when [`TelemetryGuard::shutdown`] was not called: flush on a helper thread
    /// and wait for it at most [`FLUSH_TIMEOUT`] (it may time out on a current-thread runtime).
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let flusher = std::thread::spawn(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
            let _ = flusher.join();
        }
    }
}
