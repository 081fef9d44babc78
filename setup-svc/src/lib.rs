//! The control plane (ARCHITECTURE §6): transport-setup and route-setup. This first part is
//! their pure core; the services and binaries come next.
//!
//! # Layout
//! - [`paths`]: simple paths over the transport graph, BFS within [min, max] hops, shortest
//!   first, at most three.
//! - [`rules`]: the rules a route group needs on every visor of its two paths.

pub mod paths;
pub mod rules;
