//! Test harnesses shared by the service crates: ports, child processes, `redis-server`, and
//! gRPC reflection and health probes, plain TCP services. Test-only code: failures panic with what went wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod grpc;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod python;
pub mod redis;
pub mod tcp;

pub use process::ChildProcess;
pub use redis::Redis;

/// A loopback port nothing listens on right now, below the kernel's ephemeral range: a test
/// that binds it later (a server started after its clients) cannot lose it to the source
/// port of some outbound connection in between, which an ephemeral port can.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    // Spread processes apart (pid and clock), then walk.
    let seed = std::process::id().wrapping_mul(7_919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + seed.wrapping_add(step.wrapping_mul(7)) % span;
        let port = u16::try_from(port).unwrap_or(u16::MAX);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
