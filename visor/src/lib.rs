//! The Skywire visor: the node of the network. It keeps transports to other visors (`dmsg`
//! streams, direct `stcp` links), routes packets by route ID along rules, and carries route
//! groups — end-to-end encrypted byte streams over multi-hop routes.
//!
//! The byte-level specification is `ROUTING.md` beside this crate; the code cites its
//! sections.
//!
//! # Layout
//! - [`packet`]: frames and route packets on a transport, and every wire number.
//! - [`router`]: the sans-IO router: rules, the rule table (reservations, keep-alive, GC), and
//!   the decision for an arriving packet.
//! - [`transport`]: transports (stcp handshake, framing, queues, the reader and writer tasks).
//! - [`route_group`]: route groups: end-to-end records, credits, the `AsyncRead + AsyncWrite` handle.
//! - [`node`]: the data plane at runtime: [`node::Visor`].
//! - [`route_dial`]: [`node::Visor::dial_route`], a route group through route-setup.
//! - [`cli`]: `skywire-cli`, tables (or JSON) from a running visor's control API.
//! - [`control`]: the visor control API (`VisorControl`) on the admin address.
//! - [`apps`]: skysocks (the SOCKS5 exit) and skysocks-client, over a mux in one route group.
//! - [`deployment`]: a deployment (servers, discovery, setup keys) as `config gen` reads it.
//! - [`forward`]: port forwarding: local services published on route ports, local listeners
//!   forwarded to other visors' published ports.
//! - [`gateway`]: the transport and route gateways (dmsg ports 47, 136) for the control plane.
//! - [`uptime`]: the live uptime probe (dmsg tier and route tier, sampled now, hour and day).
//! - [`app`], [`config`], [`binary`], [`metrics`]: the `skywire-visor` process on the shared
//!   service skeleton (bind first, then run), its settings, and its Prometheus metrics.

pub mod app;
pub mod apps;
pub mod binary;
pub mod cli;
pub mod config;
pub mod control;
pub mod deployment;
pub mod forward;
pub mod gateway;
pub mod metrics;
pub mod node;
pub mod packet;
pub mod route_dial;
pub mod route_group;
pub mod router;
pub mod transport;
pub mod uptime;
