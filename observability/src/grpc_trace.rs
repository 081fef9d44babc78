//! One span per RPC, on both ends, with W3C context carried in the gRPC metadata.
//!
//! [`TraceLayer::server`] extracts `traceparent` from the request and opens a `grpc.server`
//! span under it; [`TraceLayer::client`] opens a `grpc.client` span and injects it into the
//! request.
//! Both spans carry the OpenTelemetry RPC semantic-convention attributes (`rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and stay open until the call's real
//! outcome is known — for a stream, when its trailers arrive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{extract_context, inject_span};
use crate::rpc::{OnOutcome, OutcomeBody, RpcOutcome, observe_response, split_grpc_path};

/// Which end of the call a span describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Paths that create no span: health checks, reflection (their calls are still counted in
/// the RPC metrics) and plain HTTP such as `GET /metrics` (neither).
fn quiet(path: &str) -> Quiet {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        Quiet::NoSpan
    } else if path.trim_start_matches('/').contains('/') {
        Quiet::No
    } else {
        Quiet::NotGrpc
    }
}

/// How much of a request [`Traced`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quiet {
    /// A span and metrics.
    No,
    /// Metrics only.
    NoSpan,
    /// Nothing: not a gRPC call.
    NotGrpc,
}

/// Opens the span for one RPC with the semantic-convention fields left to fill.
fn rpc_span(side: Side, path: &str) -> Span {
    if quiet(path) != Quiet::No {
        return Span::none();
    }
    let (service, method) = split_grpc_path(path);
    let name = path.strip_prefix('/').unwrap_or(path);
    match side {
        Side::Server => tracing::info_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        ),
        Side::Client => tracing::info_span!(
            "grpc.client",
            otel.name = name,
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        ),
    }
}

/// Records an RPC's outcome on its span (and closes it when dropped) and in the RPC metrics.
#[derive(Debug)]
pub struct SpanOutcome {
    span: Span,
    side: Side,
    /// The path, when the call is counted.
    counted: Option<String>,
    started: tokio::time::Instant,
}

impl OnOutcome for SpanOutcome {
    fn on_outcome(self, outcome: RpcOutcome) {
        let code = outcome.code();
        if let Some(path) = &self.counted {
            crate::rpc_metrics::record(
                self.side == Side::Server,
                path,
                code,
                self.started.elapsed(),
            );
        }
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_error(self.side, code) {
            self.span.record("otel.status_code", "ERROR");
        }
        if outcome == RpcOutcome::Cancelled {
            tracing::debug!(parent: &self.span, "rpc cancelled before its result was known");
        }
    }
}

/// Whether `code` marks the span as failed, per the OpenTelemetry gRPC conventions: on the
/// client every non-OK code; on the server only codes that mean the server itself failed.
fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// Layer that traces RPCs on one side of the call; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    side: Side,
}

impl TraceLayer {
    /// Server side: extracts the caller's `traceparent` and opens a `grpc.server` span under it.
    pub fn server() -> Self {
        Self { side: Side::Server }
    }

    /// Client side: opens a `grpc.client` span and injects it as `traceparent`.
    pub fn client() -> Self {
        Self { side: Side::Client }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            side: self.side,
        }
    }
}

/// A service traced by [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    side: Side,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Traced<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<OutcomeBody<ResBody, SpanOutcome>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let span = rpc_span(self.side, path);
        let counted = (quiet(path) != Quiet::NotGrpc).then(|| path.to_owned());
        match self.side {
            Side::Server => {
                // Fails only if no OpenTelemetry layer is installed; then there is no trace to join.
                let _ = span.set_parent(extract_context(request.headers()));
            }
            Side::Client => inject_span(&span, request.headers_mut()),
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TracedFuture {
            future,
            span,
            side: self.side,
            counted,
            started: tokio::time::Instant::now(),
        }
    }
}

pin_project! {
    /// Response future of [`Traced`].
    pub struct TracedFuture<F> {
        #[pin]
        future: F,
        span: Span,
        side: Side,
        counted: Option<String>,
        started: tokio::time::Instant,
    }
}

impl<F, ResBody, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<OutcomeBody<ResBody, SpanOutcome>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            std::task::ready!(this.future.poll(cx))
        };
        let outcome = SpanOutcome {
            span: this.span.clone(),
            side: *this.side,
            counted: this.counted.take(),
            started: *this.started,
        };
        Poll::Ready(match result {
            Ok(response) => Ok(observe_response(response, outcome)),
            Err(error) => {
                outcome.on_outcome(RpcOutcome::Transport);
                Err(error)
            }
        })
    }
}
