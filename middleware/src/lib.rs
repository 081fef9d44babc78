//! Tower layers that every Skywire-rs service and client uses, and the two stacks that
//! compose them.
//!
//! Servers wrap their tonic routes with [`server_stack`] (tracing → catch-panic → load-shed →
//! concurrency limit → timeout); clients wrap their channel with [`client_stack`] (context
//! propagation → timeout → breaker → concurrency limit). Handlers add nothing of their own.
//!
//! # Layout
//! - [`breaker`]: [`Breaker`], a circuit breaker whose half-open state admits exactly one
//!   probe, its [`Permit`]s and its tower layer [`CircuitBreakerLayer`].
//! - [`keyed_breaker`]: [`KeyedBreakers`], one breaker per destination in a bounded map.
//! - [`catch_panic`]: [`CatchPanicLayer`], a panic in a handler or a stream → INTERNAL.
//! - [`timeout`]: [`TimeoutLayer`], per-method budgets and `grpc-timeout` → DEADLINE_EXCEEDED.
//! - [`recover`]: [`RecoverErrorLayer`], layer errors (load shed) → gRPC statuses.
//! - [`deadline`]: the `grpc-timeout` header.
//! - [`stack`]: [`server_stack`] and [`client_stack`].
//!
//! Every response-producing layer answers with a real gRPC response (status in the headers
//! or trailers), so the same layers work on both sides of a call and a tonic client always
//! sees a proper status code.

pub mod breaker;
pub mod catch_panic;
pub mod deadline;
pub mod keyed_breaker;
pub mod recover;
pub mod stack;
mod status_body;
pub mod timeout;

pub use breaker::{
    Breaker, BreakerConfig, BreakerEvent, BreakerOpen, BreakerState, CircuitBreaker,
    CircuitBreakerLayer, FailurePolicy, Permit,
};
pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub use keyed_breaker::{KeyedBreakers, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use recover::{RecoverError, RecoverErrorLayer};
pub use stack::{
    ClientStackConfig, GrpcChannel, GrpcTransport, ServerStack, ServerStackConfig,
    ServerStackLayer, client_stack, server_stack,
};
pub use timeout::{Timeout, TimeoutConfig, TimeoutLayer};
