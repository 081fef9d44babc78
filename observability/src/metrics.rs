//! A Prometheus text registry for admin endpoints, and the HTTP route that serves it.

use std::future::Future;
use std::sync::OnceLock;

use prometheus::{Encoder, Registry, TextEncoder};

/// The registry of the process-wide families every admin endpoint also serves: process
/// metrics (CPU seconds, resident memory, open fds, start time), RPC counts and latencies,
/// circuit breakers. Code anywhere in the process registers into it.
pub fn process_registry() -> &'static Registry {
    static PROCESS: OnceLock<Registry> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(error) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(%error, "cannot register the process metrics");
        }
        registry
    })
}

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus registry a process fills with its metrics and exposes on `/metrics`.
///
/// Clones share the same registry.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a metric (counter, gauge, histogram, or a custom collector).
    pub fn register<C>(&self, collector: C) -> Result<C, prometheus::Error>
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// The underlying registry, for collectors that need it directly.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every registered metric, and the process-wide ones ([`process_registry`]), in the
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(process_registry().gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// An HTTP router answering `GET /metrics` with [`MetricsRegistry::render`].
    pub fn router(&self) -> axum::Router {
        let registry = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = registry.render();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                        body,
                    )
                }
            }),
        )
    }

    /// Serves [`MetricsRegistry::router`] on an already-bound listener until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Sets `counter` to an absolute value read from live state at a scrape (for counters kept
/// elsewhere as plain numbers, which only grow there).
pub fn set_counter(counter: &prometheus::IntCounter, value: u64) {
    counter.reset();
    counter.inc_by(value);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn serves_registered_metrics_as_prometheus_text_over_http() {
        let metrics = MetricsRegistry::new();
        let relayed = metrics
            .register(prometheus::IntCounter::new("bytes_relayed_total", "Bytes relayed").unwrap())
            .unwrap();
        relayed.inc_by(42);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let metrics = metrics.clone();
            async move {
                metrics
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });

        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(response.contains("bytes_relayed_total 42"), "{response}");

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
