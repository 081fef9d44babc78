//! Test helpers: the one test subscriber every crate's tests use.

/// Installs a test log subscriber once per test binary (`RUST_LOG` filter, output captured by
/// the test harness). Safe to call from every test.
pub fn trace_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
