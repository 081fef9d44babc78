//! The dmsg protocol.
pub mod addr;
pub mod client;
pub mod grpc;
mod handshake_io;
pub mod identity;
pub mod mux;
pub mod noise;
pub mod port;
pub mod server;
pub mod session;
pub mod stream;
pub mod wire;

#[cfg(test)]
mod tests;
