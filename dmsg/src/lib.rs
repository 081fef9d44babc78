//! The dmsg protocol: identities, PQ-hybrid Noise sessions to relay servers, end-to-end
//! encrypted streams relayed between clients, the relay server core and the client core.
//!
//! The byte-level specification is `PROTOCOL.md` beside this crate; the code cites its
//! sections.
//!
//! # IO contract
//! The protocol logic is the `dmsg-core` crate, re-exported here ([`identity`], [`addr`],
//! [`wire`], [`noise`], [`mux`]): it has no IO and no clock of its own — [`wire`] parses
//! bytes, [`noise`] runs handshakes as typestates over byte messages, and [`mux::Mux`] is a
//! session state machine fed with received bytes and `now`, whose output is bytes to write,
//! events and a next timeout. This crate is the tokio layer ([`session`], [`stream`],
//! [`server`], [`client`]): it owns sockets and tasks — one driver task per session, cheap
//! handles that lock the mux only to issue a command (never across an await), and every task
//! owned by a tracker that shutdown joins.
//!
//! # Layout
//! - [`identity`], [`addr`], [`wire`], [`noise`], [`mux`]: the protocol core (`dmsg-core`).
//! - [`backoff`]: full-jitter exponential backoff (`dmsg-core`).
//! - [`net`]: the [`net::Dial`] / [`net::Listen`] seam (TCP, or any byte stream).
//! - [`handshake`]: the session handshake over any byte stream.
//! - [`session`]: a session at runtime over any byte stream: its driver task and handles.
//! - [`stream`]: raw streams (what a relay moves) and end-to-end encrypted [`stream::DmsgStream`]s.
//! - [`admission`]: which connections get handshake work: per-source, then server-wide limits.
//! - [`server`]: the relay server core: accept loop, session table, relay, stats.
//! - [`client`]: the client core (connect, listen, dial through a session) and its lifecycle
//!   (server choice, reconnects, entry publishing, dial by address, pings).
//! - [`deployment`]: the embedded default servers.
//! - [`port`]: port reservations (fixed and ephemeral).
//! - [`pq_peers`]: which peers advertise PQ (from signed entries and seeds), bounded.
//! - [`grpc`]: tonic channels and servers over dmsg.
//! - [`entry`], [`hexfield`], [`discovery`], [`publisher`], [`reason`]: the `discovery-client` crate,
//!   re-exported — entries and their signing bytes, the gRPC discovery client, the one entry
//!   publisher. It sits below this crate and never imports it, so there is no cycle.

pub use discovery_client::{discovery, entry, hexfield, memory, publisher, reason};
pub use dmsg_core::{addr, backoff, identity, mux, noise, wire};

pub mod admission;
mod changes;
pub mod client;
pub mod deployment;
pub mod grpc;
pub mod handshake;
pub mod net;
pub mod port;
pub mod pq_peers;
pub mod server;
pub mod session;
mod session_table;
pub mod stream;
mod sync;

#[cfg(test)]
mod tests;
