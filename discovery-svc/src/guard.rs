//! The store behind a circuit breaker: when the backend fails (Redis down), calls fail fast
//! with UNAVAILABLE instead of piling up, and one probe at a time checks for recovery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use middleware::{Breaker, BreakerConfig};

use crate::store::{Store, StoreError};

/// A store and the breaker guarding it. Clones share both.
#[derive(Clone)]
pub struct GuardedStore {
    store: Arc<dyn Store>,
    breaker: Breaker,
}

impl GuardedStore {
    /// Guards `store` with a breaker named `store:<kind>`: 3 failures in 10 s open it for 1 s.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let breaker = Breaker::new(
            format!("store:{}", store.kind()),
            BreakerConfig {
                failure_threshold: 3,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(1),
                max_open: None,
            },
        );
        Self { store, breaker }
    }

    /// The store itself.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The breaker (for metrics and health).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs `operation` if the breaker admits it; its failure counts against the store.
    pub async fn call<'a, T, F>(
        &'a self,
        operation: impl FnOnce(&'a dyn Store) -> F,
    ) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<T, StoreError>> + 'a,
    {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|open| open.to_status())?;
        match operation(self.store.as_ref()).await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                match &error {
                    StoreError::Unavailable(_) => permit.failure(),
                    StoreError::Corrupt(_) => permit.success(),
                }
                tracing::warn!(%error, "store operation failed");
                Err(store_status(&error))
            }
        }
    }
}

/// The status for a store failure.
pub fn store_status(error: &StoreError) -> tonic::Status {
    match error {
        StoreError::Unavailable(reason) => tonic::Status::unavailable(format!(
            "the entry store is unavailable ({reason}); retry with backoff"
        )),
        StoreError::Corrupt(reason) => {
            tonic::Status::internal(format!("the entry store returned corrupt data: {reason}"))
        }
    }
}
