//! The two standard stacks. Every server and every client uses these, so timeouts, panic
//! recovery, load shedding, breakers and tracing behave the same everywhere.

use std::sync::Arc;

use observability::grpc_trace::{TraceLayer, Traced};
use tokio::sync::Semaphore;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::load_shed::LoadShed;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use crate::breaker::{Breaker, CircuitBreakerLayer};
use crate::catch_panic::{CatchPanic, CatchPanicLayer};
use crate::recover::{RecoverError, RecoverErrorLayer};
use crate::timeout::{Timeout, TimeoutConfig, TimeoutLayer};

/// Settings of [`server_stack`].
#[derive(Clone, Debug)]
pub struct ServerStackConfig {
    /// Handler budgets; a caller's shorter `grpc-timeout` wins.
    pub timeouts: TimeoutConfig,
    /// Requests handled at once across all connections; more are shed with RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
}

impl Default for ServerStackConfig {
    /// 30 s budgets, 1024 concurrent requests.
    fn default() -> Self {
        Self {
            timeouts: TimeoutConfig::default(),
            max_concurrent_requests: 1024,
        }
    }
}

/// The server stack around tonic's routes: see [`server_stack`].
pub type ServerStack<S> = Traced<CatchPanic<RecoverError<LoadShed<ConcurrencyLimit<Timeout<S>>>>>>;

/// Layer building a [`ServerStack`]; pass it to `tonic::transport::Server::builder().layer(..)`.
#[derive(Clone, Debug)]
pub struct ServerStackLayer {
    timeout: TimeoutLayer,
    limit: GlobalConcurrencyLimitLayer,
}

/// The standard server stack: tracing → catch-panic → load-shed → concurrency limit → timeout.
///
/// One semaphore bounds concurrent requests across every connection the server accepts.
pub fn server_stack(config: &ServerStackConfig) -> ServerStackLayer {
    ServerStackLayer {
        timeout: TimeoutLayer::new(config.timeouts.clone()),
        limit: GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(Semaphore::new(
            config.max_concurrent_requests.max(1),
        ))),
    }
}

impl<S> Layer<S> for ServerStackLayer {
    type Service = ServerStack<S>;

    fn layer(&self, routes: S) -> Self::Service {
        ServiceBuilder::new()
            // Outermost: one span per RPC, parented on the caller's traceparent; it sees every
            // status produced below, including panics and shed requests.
            .layer(TraceLayer::server())
            // A panic anywhere below (handler, stream) fails only its own call with INTERNAL.
            .layer(CatchPanicLayer)
            // Turns the load-shed refusal into RESOURCE_EXHAUSTED so the span records it.
            .layer(RecoverErrorLayer)
            // When the limit below is reached, refuse at once instead of queueing.
            .load_shed()
            .layer(self.limit.clone())
            // Innermost: the deadline covers the handler and its stream, not time spent shed.
            .layer(self.timeout.clone())
            .service(routes)
    }
}

/// Settings of [`client_stack`].
#[derive(Clone, Debug)]
pub struct ClientStackConfig {
    /// Call budgets; a shorter deadline set on the request wins.
    pub timeouts: TimeoutConfig,
    /// Calls in flight at once on this channel; more wait (within their deadline).
    pub max_concurrent_requests: usize,
}

impl Default for ClientStackConfig {
    /// 30 s budgets, 256 calls in flight.
    fn default() -> Self {
        Self {
            timeouts: TimeoutConfig::default(),
            max_concurrent_requests: 256,
        }
    }
}

/// A gRPC channel with the client stack applied; generated clients take it as their transport
/// (`FooClient::new(channel)`). Cheap to clone; clones share the breaker and the limit.
///
/// Its error type is a concrete [`tonic::Status`] (a transport failure is classified once, by
/// tonic's own rules, e.g. connection refused → UNAVAILABLE). A boxed error type would make
/// client futures fail the `Send` check when spawned (rust-lang/rust#102211).
pub type GrpcChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    tonic::Status,
>;

/// What a client stack runs over: a tonic `Channel`, or a channel tunnelled through dmsg.
pub trait GrpcTransport:
    Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> GrpcTransport for T
where
    T: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
}

/// The standard client stack over `transport` (a tonic `Channel` or a dmsg-tunnelled one):
/// context propagation → timeout → breaker → concurrency limit.
pub fn client_stack<T: GrpcTransport>(
    transport: T,
    config: &ClientStackConfig,
    breaker: Breaker,
) -> GrpcChannel {
    let stack = ServiceBuilder::new()
        // Outermost: the client span, injected as `traceparent`, covers the whole call.
        .layer(TraceLayer::client())
        // Sets `grpc-timeout` (so the server and the breaker know the deadline) and bounds the
        // wait for the breaker and the limit below as well as the call.
        .layer(TimeoutLayer::new(config.timeouts.clone()))
        // Refuses at once while open; learns the outcome at the real result (stream trailers).
        .layer(CircuitBreakerLayer::new(breaker))
        // Bounds calls in flight on this channel.
        .concurrency_limit(config.max_concurrent_requests.max(1))
        .service(transport);
    BoxCloneSyncService::new(
        stack
            .map_response(|response| response.map(tonic::body::Body::new))
            .map_err(|error: T::Error| tonic::Status::from_error(error.into())),
    )
}
