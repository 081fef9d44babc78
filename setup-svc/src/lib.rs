//! The control plane (ARCHITECTURE §6): transport-setup and route-setup, their pure core,
//! their gRPC services and their binaries.
//!
//! # Layout
//! - [`paths`]: simple paths over the transport graph, BFS within [min, max] hops, shortest
//!   first, at most three.
//! - [`rules`]: the rules a route group needs on every visor of its two paths.
//! - [`gateway`]: calls to visor route gateways — gRPC over dmsg, or in memory for tests.
//! - [`setup`]: setting a route group up over the gateways, failures attributed to a hop.
//! - [`route_setup`]: route-setup's core — bounded slots, the per-destination breaker, the
//!   deadline, the graph from the transport registry.
//! - [`metrics`]: route-setup's setups by outcome, late setups, setup times.
//! - [`service`]: the `RouteSetup` gRPC service over the core (`DialRouteGroup`, `Breakers`).
//! - [`transport_setup`]: the `TransportSetup` gRPC service, relaying to visors' transport
//!   gateways over dmsg.
//! - [`binary`]: the `transport-setup` and `route-setup` binaries on the service skeleton.

pub mod binary;
pub mod gateway;
pub mod metrics;
pub mod paths;
pub mod route_setup;
pub mod rules;
pub mod service;
pub mod setup;
pub mod transport_setup;
