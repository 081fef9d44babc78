//! dmsg-discovery: the registry of signed entries (which dmsg servers exist, which servers
//! each client is reachable through) and of transports between visors, served as gRPC over
//! TCP and over dmsg port 80.
//!
//! # Layout
//! - [`store`]: the [`store::Store`] trait, [`store::memory`] (default) and
//!   [`store::redis`] (replicas sharing a Redis; atomic compare-and-write in Lua), whose
//!   entry reads go through [`store::cache`], kept coherent by Redis over the invalidation
//!   connection of [`store::tracking`].
//! - [`guard`]: the store behind a circuit breaker; `GetEntry`'s read path (a current copy,
//!   the store, or a stale copy while the store cannot be read).
//! - [`service`]: the Discovery service; [`transport`]: the TransportRegistry service.
//! - [`connector`]: discovery's own dmsg sessions (configured servers dialed at once).
//! - [`run`]: the whole process as a function over a bound listener.
//! - [`config`]: command line, environment and TOML configuration.
//! - [`binary`]: the `dmsg-discovery` binary's `main` (also run by `skywire-localnet`).
//!
//! Entries, their signing bytes and validation live in `dmsg::entry`, shared with clients.

pub mod binary;
pub mod config;
pub mod connector;
pub mod guard;
pub mod run;
pub mod service;
pub mod status;
pub mod store;
pub mod transport;
