//! Observability for every Skywire-rs process: logs, OpenTelemetry traces with W3C context
//! propagated through gRPC metadata, Prometheus metrics and `grpc.health.v1` reporting.
//!
//! Call [`init`] early in `main` (inside the tokio runtime) and
//! [`TelemetryGuard::shutdown`] at the end. Set `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. Jaeger's
//! `http://127.0.0.1:4317`) to export traces; `RUST_LOG` filters; `SKYWIRE_LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! # Layout
//! - [`telemetry`]: [`init`], its configuration and the flushing guard.
//! - [`rpc`]: the real outcome of an RPC ([`RpcOutcome`]), heard where it is known — at the
//!   headers or at the trailers of a stream. Shared with the circuit breaker in `middleware`.
//! - [`grpc_trace`]: server and client tower layers, one span per RPC with the
//!   OpenTelemetry RPC attributes, context injected into and extracted from gRPC metadata.
//! - [`propagation`]: W3C `traceparent` inject/extract over HTTP header maps.
//! - [`metrics`]: a Prometheus text registry and its `/metrics` route.
//! - [`json_log`]: JSON log lines carrying the trace and span ids.
//! - [`export`]: trace export that warns when the collector is unreachable.
//! - [`health`]: `grpc.health.v1` status driven by a watch of component states.
//! - [`test`]: the test subscriber.

pub mod export;
pub mod grpc_trace;
pub mod health;
pub mod json_log;
pub mod metrics;
pub mod propagation;
pub mod rpc;
pub mod rpc_metrics;
pub mod telemetry;
pub mod test;

pub use grpc_trace::TraceLayer;
pub use health::{ComponentHealth, ComponentState, HealthStates, drive_health};
pub use metrics::MetricsRegistry;
pub use rpc::{OnOutcome, OutcomeBody, RpcOutcome, observe_response};
pub use telemetry::{InitError, LogFormat, TelemetryConfig, TelemetryGuard, init, init_with};
