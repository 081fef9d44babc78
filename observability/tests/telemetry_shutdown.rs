//! The telemetry guard never hangs a process on exit, even when the collector is unreachable.
//! One test per binary: `init` installs the global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use observability::TelemetryConfig;
use observability::telemetry::FLUSH_TIMEOUT;

#[tokio::test(flavor = "current_thread")]
async fn shutdown_with_an_unreachable_collector_returns_within_the_flush_timeout() {
    // A port nothing listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let guard = observability::init_with(TelemetryConfig {
        service_name: "shutdown-test".into(),
        log_format: observability::LogFormat::Json,
        filter: "info".into(),
        span_filter: "info".into(),
        instance_id: None,
        otlp_endpoint: Some(format!("http://{addr}")),
    })
    .unwrap();
    tracing::info_span!("work").in_scope(|| tracing::info!("a span to export"));

    let started = tokio::time::Instant::now();
    tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(5), guard.shutdown())
        .await
        .expect("shutdown is bounded");
    assert!(started.elapsed() <= FLUSH_TIMEOUT + Duration::from_secs(1));

    let second = observability::init_with(TelemetryConfig {
        service_name: "again".into(),
        log_format: observability::LogFormat::Human,
        filter: "info".into(),
        span_filter: "info".into(),
        instance_id: None,
        otlp_endpoint: None,
    });
    assert!(
        matches!(second, Err(observability::InitError::AlreadyInitialised(_))),
        "a second init is refused with a typed error"
    );
}
