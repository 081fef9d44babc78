//! A whole network on loopback as real processes: [`Fleet`] starts dmsg-discovery,
//! dmsg-servers, client agents (`dmsg-cli agent`), the setup services and visors as child
//! processes of the multi-call
//! `skywire-localnet` binary — each runs exactly the code of the real binary — and observes
//! them through their gRPC admin APIs. The fleet tests (`tests/`) and the README demo
//! (`skywire-localnet`) are built on it.
//!
//! # Layout
//! - [`member`]: one child process: start, SIGTERM, `kill -9`, restart; killed on drop.
//! - [`fleet`]: keys, ports and configs for a whole fleet; start orders; admin queries;
//!   convergence waits.
//! - [`http`]: a tiny HTTP server, what the demo fetches through the SOCKS5 proxy.
//! - [`launcher`]: the `member <binary> …` dispatch of the multi-call binary.
//! - [`usage`]: peak CPU and memory of member processes, from `/proc`.

pub mod fleet;
pub mod http;
pub mod launcher;
pub mod member;
pub mod usage;

pub use fleet::{ECHO_PORT, Fleet, FleetError, FleetSpec, StartOrder};
pub use member::{Member, MemberError, Role};
