//! Trace export that says when it fails: a dead collector is logged at WARN, at most once a
//! period, with how many batches failed since the last warning.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// A span exporter that warns (rate-limited) when its inner exporter fails.
#[derive(Debug)]
pub struct WarnOnFailure<E> {
    inner: E,
    endpoint: String,
    every: Duration,
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    last_warning: Option<Instant>,
    failed_since: u64,
}

impl<E> WarnOnFailure<E> {
    /// Wraps `inner`, which exports to `endpoint`; warns at most once every `every`.
    pub fn new(inner: E, endpoint: String, every: Duration) -> Self {
        Self {
            inner,
            endpoint,
            every,
            state: Mutex::new(WarnState::default()),
        }
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.failed_since += 1;
        let due = state
            .last_warning
            .is_none_or(|last| last.elapsed() >= self.every);
        if due {
            let failed = std::mem::take(&mut state.failed_since);
            state.last_warning = Some(Instant::now());
            drop(state);
            tracing::warn!(
                endpoint = %self.endpoint,
                failed_batches = failed,
                %error,
                "cannot export spans to the OTLP collector; spans are being dropped"
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for WarnOnFailure<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
