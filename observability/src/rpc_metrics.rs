//! Per-method RPC counts by status code and latency histograms, on the server and the client
//! side, in the process-wide registry ([`crate::metrics::process_registry`]).
//!
//! Families (the labels of go-grpc-prometheus): `grpc_server_handled_total` and
//! `grpc_client_handled_total` {`grpc_service`, `grpc_method`, `grpc_code`};
//! `grpc_server_handling_seconds` and `grpc_client_handling_seconds` {`grpc_service`,
//! `grpc_method`}. On the server side a call is counted under its own service and method
//! only if the process serves that method ([`serve_methods`]); everything else is
//! `unknown`, so a peer sending made-up paths cannot grow the label sets. Client-side paths
//! are the process's own.

use std::collections::HashSet;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tonic::Code;

/// Latency buckets in seconds: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Side {
    handled: IntCounterVec,
    seconds: HistogramVec,
}

struct RpcMetrics {
    server: Side,
    client: Side,
}

fn side(name: &str) -> Result<Side, prometheus::Error> {
    let registry = crate::metrics::process_registry();
    let handled = IntCounterVec::new(
        Opts::new(
            format!("grpc_{name}_handled_total"),
            format!("RPCs completed on the {name} side, by method and status code"),
        ),
        &["grpc_service", "grpc_method", "grpc_code"],
    )?;
    let seconds = HistogramVec::new(
        HistogramOpts::new(
            format!("grpc_{name}_handling_seconds"),
            format!("Time from request to final status on the {name} side, in seconds"),
        )
        .buckets(BUCKETS.to_vec()),
        &["grpc_service", "grpc_method"],
    )?;
    registry.register(Box::new(handled.clone()))?;
    registry.register(Box::new(seconds.clone()))?;
    Ok(Side { handled, seconds })
}

fn metrics() -> Option<&'static RpcMetrics> {
    static METRICS: OnceLock<Option<RpcMetrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            match side("server").and_then(|server| {
                Ok(RpcMetrics {
                    server,
                    client: side("client")?,
                })
            }) {
                Ok(metrics) => Some(metrics),
                Err(error) => {
                    tracing::warn!(%error, "cannot register the RPC metrics");
                    None
                }
            }
        })
        .as_ref()
}

/// The label a status code carries (`OK`, `NotFound`, `Unavailable`, …).
fn code_label(code: Code) -> String {
    match code {
        Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The paths (`/service/method`) this process serves: their calls keep their names.
fn served() -> &'static RwLock<HashSet<String>> {
    static SERVED: OnceLock<RwLock<HashSet<String>>> = OnceLock::new();
    SERVED.get_or_init(RwLock::default)
}

/// Declares methods a port of this process serves, as `(service, method)` (the endpoint
/// builder calls it with what its descriptors list).
pub fn serve_methods(methods: impl IntoIterator<Item = (String, String)>) {
    let mut served = served().write().unwrap_or_else(PoisonError::into_inner);
    served.extend(
        methods
            .into_iter()
            .map(|(service, method)| format!("/{service}/{method}")),
    );
}

/// Records one finished RPC to `path` (`/service/method`).
pub(crate) fn record(server: bool, path: &str, code: Code, elapsed: Duration) {
    let (service, method) = crate::rpc::split_grpc_path(path);
    let Some(metrics) = metrics() else { return };
    let side = if server {
        &metrics.server
    } else {
        &metrics.client
    };
    let known = !server
        || code != Code::Unimplemented
            && served()
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(path);
    let (service, method) = if known {
        (service, method)
    } else {
        ("unknown", "unknown")
    };
    side.handled
        .with_label_values(&[service, method, &code_label(code)])
        .inc();
    side.seconds
        .with_label_values(&[service, method])
        .observe(elapsed.as_secs_f64());
}

/// Registers the families now, so `/metrics` lists them before the first call.
pub fn register() {
    let _ = metrics();
}
