//! The store behind a circuit breaker: when the backend fails (Redis down), calls fail fast
//! with UNAVAILABLE instead of piling up, and one probe at a time checks for recovery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use middleware::{Breaker, BreakerConfig};
use observability::MetricsRegistry;
use prometheus::{HistogramOpts, HistogramVec};

use skywire_proto::skywire::discovery::v1 as pb;

use crate::store::{KeyBytes, StaleCopy, Store, StoreError};

/// An entry as `GetEntry` serves it.
#[derive(Debug)]
pub enum EntryRead {
    /// What the store holds now (or a copy it knows to be current).
    Current(pb::Entry),
    /// The store could not be read: the last copy read, while its TTL lasts.
    Stale(StaleCopy),
}

/// A store and the breaker guarding it, timing every operation. Clones share all three.
#[derive(Clone)]
pub struct GuardedStore {
    store: Arc<dyn Store>,
    breaker: Breaker,
    latency: HistogramVec,
}

/// Latency buckets of store operations, in seconds: 50 µs to 1 s (Redis gives up at 0.8 s).
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl GuardedStore {
    /// Guards `store` with a breaker named `store:<kind>` (3 failures in 10 s open it for
    /// 1 s) and times its operations into `discovery_store_operation_duration_seconds`
    /// {`operation`, `store`} of `metrics`.
    pub fn new(
        store: Arc<dyn Store>,
        metrics: &MetricsRegistry,
    ) -> Result<Self, prometheus::Error> {
        let latency = metrics.register(HistogramVec::new(
            HistogramOpts::new(
                "discovery_store_operation_duration_seconds",
                "Time one store operation took (refused ones included), in seconds",
            )
            .buckets(BUCKETS.to_vec()),
            &["operation", "store"],
        )?)?;
        store.register_metrics(metrics)?;
        let breaker = Breaker::new(
            format!("store:{}", store.kind()),
            BreakerConfig {
                failure_threshold: 3,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(1),
                max_open: None,
            },
        );
        Ok(Self {
            store,
            breaker,
            latency,
        })
    }

    /// The store itself.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The breaker (for metrics and health).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs `operation` (named `name` in the metrics) if the breaker admits it; only a store
    /// that is unreachable or too slow counts against it — never a request the store refuses.
    pub async fn call<'a, T, F>(
        &'a self,
        name: &'static str,
        operation: impl FnOnce(&'a dyn Store) -> F,
    ) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<T, StoreError>> + 'a,
    {
        self.admitted(name, operation)
            .await
            .map_err(Refused::into_status)
    }

    /// The entry under `key`: a current copy the store holds in memory, else a read of the
    /// store, else — only when the store cannot be read (unreachable, or its breaker open) —
    /// the last copy read while its TTL lasts. `None`: there is no entry.
    pub async fn get_entry(&self, key: &KeyBytes) -> Result<Option<EntryRead>, tonic::Status> {
        if let Some(entry) = self.store.cached_entry(key) {
            return Ok(Some(EntryRead::Current(entry)));
        }
        match self
            .admitted("get_proto", |store| store.get_proto(key))
            .await
        {
            Ok(entry) => Ok(entry.map(EntryRead::Current)),
            Err(refused) => {
                let unreachable = matches!(
                    refused,
                    Refused::Open(_) | Refused::Store(StoreError::Unavailable(_))
                );
                let stale = if unreachable {
                    self.store.last_known_entry(key)
                } else {
                    None
                };
                match stale {
                    Some(stale) => Ok(Some(EntryRead::Stale(stale))),
                    None => Err(refused.into_status()),
                }
            }
        }
    }

    /// Whether the store serves now, for health and `Status`: its breaker admits a call and
    /// the backend answers a health check (while the breaker is half-open, this check is its
    /// probe). The error says why not, for operators.
    pub async fn health(&self) -> Result<(), String> {
        self.admitted("health", |store| store.health())
            .await
            .map_err(|refused| match refused {
                Refused::Open(open) => format!("the store is not used now: {open}"),
                Refused::Store(error) => error.to_string(),
            })
    }

    async fn admitted<'a, T, F>(
        &'a self,
        name: &'static str,
        operation: impl FnOnce(&'a dyn Store) -> F,
    ) -> Result<T, Refused>
    where
        F: Future<Output = Result<T, StoreError>> + 'a,
    {
        let permit = self.breaker.try_acquire().map_err(Refused::Open)?;
        let started = tokio::time::Instant::now();
        let result = operation(self.store.as_ref()).await;
        self.latency
            .with_label_values(&[name, self.store.kind()])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                match &error {
                    StoreError::Unavailable(_) => permit.failure(),
                    // The store answered: neither is a fault of its availability.
                    StoreError::Corrupt(_) | StoreError::BadRequest { .. } => permit.success(),
                }
                if !matches!(error, StoreError::BadRequest { .. }) {
                    tracing::warn!(%error, operation = name, "store operation failed");
                }
                Err(Refused::Store(error))
            }
        }
    }
}

/// Why a guarded call did not run or did not succeed.
enum Refused {
    /// The breaker is open (or its probe is in flight).
    Open(middleware::BreakerOpen),
    /// The store failed or refused.
    Store(StoreError),
}

impl Refused {
    fn into_status(self) -> tonic::Status {
        match self {
            Refused::Open(open) => open.to_status(),
            Refused::Store(error) => crate::status::store_status(&error),
        }
    }
}
