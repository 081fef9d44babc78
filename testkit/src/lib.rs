//! Test harnesses shared by the service crates: ports, child processes, `redis-server`, and
//! gRPC reflection and health probes. Test-only code: failures panic with what went wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod grpc;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod python;
pub mod redis;

pub use process::ChildProcess;
pub use redis::Redis;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
