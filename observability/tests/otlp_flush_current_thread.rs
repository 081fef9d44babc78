//! On a current-thread runtime (plain `#[tokio::test]`, small tools), shutting the guard down
//! still delivers the last spans: a synchronous flush there would starve the exporter's own
//! connection and lose them (../shared/reference/rust-stack.md, gotcha 3).
//! One test per binary: `init` installs the global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use observability::TelemetryConfig;
use testkit::otlp::start_collector;

#[tokio::test(flavor = "current_thread")]
async fn guard_shutdown_delivers_spans_on_a_current_thread_runtime() {
    let collector = start_collector().await;
    let guard = observability::init_with(TelemetryConfig {
        service_name: "current-thread".into(),
        log_format: observability::LogFormat::Human,
        filter: "info".into(),
        span_filter: "info".into(),
        instance_id: None,
        otlp_endpoint: Some(collector.endpoint()),
    })
    .unwrap();
    tracing::info_span!("last-words").in_scope(|| tracing::info!("about to exit"));

    tokio::time::timeout(Duration::from_secs(10), guard.shutdown())
        .await
        .expect("the guard flushes without hanging");
    let names: Vec<String> = collector.spans().into_iter().map(|(_, s)| s.name).collect();
    assert!(names.contains(&"last-words".to_owned()), "{names:?}");
    collector.stop().await;
}
