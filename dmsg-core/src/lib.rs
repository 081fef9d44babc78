//! The sans-IO core of the dmsg protocol: identities, addresses, the wire format, the
//! PQ-hybrid Noise handshakes and the session multiplexer.
//!
//! The byte-level specification is `dmsg/PROTOCOL.md`; the code cites its sections.
//!
//! # IO contract
//! Nothing here does IO, spawns a task or reads a clock. [`wire`] parses and encodes bytes,
//! [`noise`] runs handshakes as typestates over byte messages, and [`mux::Mux`] is a session
//! state machine: feed it received bytes and `now`, then collect bytes to write, events and
//! its next timeout. The `dmsg` crate runs it over sockets; a fuzzer or a simulator can run
//! it over anything. The crate builds without tonic, hyper or tokio's net (tokio is used
//! only for its `Instant`, so paused-time tests drive the timers).
//!
//! # Layout
//! - [`identity`]: Ed25519 key pairs (one key for signatures and Noise), key files.
//! - [`addr`]: `dmsg://<pk>:<port>` addresses and ports, `PK@HOST:PORT` server addresses.
//! - [`wire`]: constants, frame headers, bodies and the numbered codes.
//! - [`noise`]: XK/KK handshakes hybridised with ML-KEM-768, the PQ policy gate, traffic keys.
//! - [`mux`]: the session multiplexer: frames, flow-control windows, pings.
//! - [`backoff`]: full-jitter exponential backoff with a seedable random source.

pub mod addr;
pub mod backoff;
pub mod identity;
pub mod mux;
pub mod noise;
pub mod wire;
