//! What a dmsg node needs from dmsg-discovery, above the protocol core and beside the dmsg
//! runtime (it never imports the runtime, so the runtime's client can use it without a cycle):
//!
//! - [`entry`]: discovery and transport entries — the model, the canonical bytes their
//!   signatures cover, and validation (`dmsg/PROTOCOL.md` §14).
//! - [`hexfield`]: keys and ids as the hex strings the protos carry.
//! - [`discovery`]: the [`discovery::Discovery`] trait and its gRPC implementation over any
//!   tonic transport (TCP; a dmsg stream comes from `dmsg::grpc`), and the resyncing publish.
//! - [`reason`]: the `google.rpc.ErrorInfo` every discovery error carries, built and read.
//! - [`registry`]: the [`registry::Registry`] trait (the transport registry) and its gRPC client.
//! - [`publisher`]: the one entry publisher (servers, clients, next visors and transports).
//! - [`memory`]: discovery in memory, for unit tests and simulations.

pub mod discovery;
pub mod entry;
pub mod hexfield;
pub mod memory;
pub mod publisher;
pub mod reason;
pub mod registry;
