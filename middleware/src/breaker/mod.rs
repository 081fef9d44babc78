//! A circuit breaker with a single-probe half-open state.
//!
//! Closed → open after [`BreakerConfig::failure_threshold`] failures within
//! [`BreakerConfig::window`] → after [`BreakerConfig::open_for`], half-open admits **exactly
//! one** probe while every other caller is rejected at once with [`BreakerOpen`] (UNAVAILABLE,
//! naming the breaker) → the probe's success closes it, its failure re-opens it and restarts
//! the timer. [`BreakerConfig::max_open`] optionally force-closes a breaker that has stayed
//! tripped too long.
//!
//! A call holds a [`Permit`]. The permit records the call's real outcome (for a streaming
//! response, when the trailers arrive) and, however the call ends — success, failure, the
//! caller dropping the future, a panic unwinding through it — releases the probe slot in its
//! `Drop`. A permit dropped after the request's deadline counts as a DEADLINE_EXCEEDED failure;
//! one dropped before it is a cancellation and counts as nothing.
//!
//! State changes are broadcast ([`Breaker::subscribe`]) and logged.

mod core;
mod metrics;
mod policy;
pub(crate) mod service;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use observability::rpc::{OnOutcome, RpcOutcome};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use self::core::{BreakerConfig, BreakerState, Transition};
pub use self::policy::{DEFAULT_FAILURE_CODES, FailurePolicy};
pub use self::service::{BreakerFuture, CircuitBreaker, CircuitBreakerLayer};

pub(crate) use self::core::{Admission, Core, Outcome, Refusal};

/// Metadata key on a rejection's status naming the breaker that refused the call.
pub const BREAKER_METADATA_KEY: &str = "skywire-breaker";
/// `google.rpc.ErrorInfo` reason of a call refused by an open breaker.
pub const REASON_BREAKER_OPEN: &str = "breaker_open";

/// Capacity of each breaker's event channel; a slow subscriber misses the oldest events.
const EVENT_CAPACITY: usize = 64;

/// A state change of a named breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerEvent {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// What changed.
    pub transition: Transition,
}

/// A call was refused because the breaker is open or its half-open probe is in flight.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {breaker:?} is {}: {hint}", state.as_str().replace('_', "-"))]
pub struct BreakerOpen {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state when it refused.
    pub state: BreakerState,
    /// What the caller can expect.
    pub hint: String,
}

impl BreakerOpen {
    /// The gRPC status for this refusal: UNAVAILABLE, the message, a `google.rpc.ErrorInfo`
    /// (reason [`REASON_BREAKER_OPEN`], domain `skywire`, metadata `breaker` and `state`) and
    /// the breaker's name in the `skywire-breaker` metadata.
    pub fn to_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let details = ErrorDetails::with_error_info(
            REASON_BREAKER_OPEN,
            "skywire",
            std::collections::HashMap::from([
                ("breaker".to_owned(), self.breaker.to_string()),
                ("state".to_owned(), self.state.as_str().to_owned()),
            ]),
        );
        let mut status =
            tonic::Status::with_error_details(tonic::Code::Unavailable, self.to_string(), details);
        if let Ok(value) = self.breaker.parse() {
            status.metadata_mut().insert(BREAKER_METADATA_KEY, value);
        }
        status
    }

    /// The breaker's name if `status` is a breaker refusal.
    pub fn breaker_of(status: &tonic::Status) -> Option<&str> {
        status
            .metadata()
            .get(BREAKER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
    }
}

impl From<BreakerOpen> for tonic::Status {
    fn from(refusal: BreakerOpen) -> Self {
        refusal.to_status()
    }
}

struct Shared {
    name: Arc<str>,
    /// The name metrics report it under: its own, or its keyed set's.
    family: Arc<str>,
    core: Mutex<Core>,
    policy: FailurePolicy,
    events: broadcast::Sender<BreakerEvent>,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_now(&self) -> BreakerState {
        self.core().state(Instant::now())
    }
}

/// A named circuit breaker. Clones share state.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker with the default [`FailurePolicy`].
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        Self::with_policy(name, config, FailurePolicy::default())
    }

    /// A closed breaker that classifies outcomes with `policy`.
    pub fn with_policy(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        policy: FailurePolicy,
    ) -> Self {
        let name = name.into();
        Self::with_events(
            name.clone(),
            name,
            config,
            policy,
            broadcast::channel(EVENT_CAPACITY).0,
        )
    }

    /// A breaker that reports its changes on a shared channel (used by keyed breakers).
    pub(crate) fn with_events(
        name: impl Into<Arc<str>>,
        family: Arc<str>,
        config: BreakerConfig,
        policy: FailurePolicy,
        events: broadcast::Sender<BreakerEvent>,
    ) -> Self {
        let shared = Arc::new(Shared {
            name: name.into(),
            family,
            core: Mutex::new(Core::new(config)),
            policy,
            events,
        });
        metrics::track(&shared);
        Self { shared }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The state now (an elapsed open period reads as half-open).
    pub fn state(&self) -> BreakerState {
        self.shared.state_now()
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.shared.events.subscribe()
    }

    /// Asks to make one call. On success the returned permit must live until the call's
    /// outcome is known; see [`Permit`].
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let mut transitions = Vec::new();
        let admitted = self.core().try_admit(now, &mut transitions);
        self.publish(&transitions);
        match admitted {
            Ok(admission) => Ok(Permit {
                breaker: self.clone(),
                admission,
                deadline: None,
                done: false,
            }),
            Err(Refusal::Open { probe_at }) => Err(BreakerOpen {
                breaker: self.shared.name.clone(),
                state: BreakerState::Open,
                hint: format!(
                    "recent calls failed; the next probe goes in {:.1?}",
                    probe_at.saturating_duration_since(now)
                ),
            }),
            Err(Refusal::ProbeInFlight) => Err(BreakerOpen {
                breaker: self.shared.name.clone(),
                state: BreakerState::HalfOpen,
                hint: "a probe call is checking whether the destination recovered; retry shortly"
                    .to_owned(),
            }),
        }
    }

    fn record(&self, admission: Admission, outcome: Outcome) {
        let mut transitions = Vec::new();
        self.core()
            .record(Instant::now(), admission, outcome, &mut transitions);
        self.publish(&transitions);
    }

    /// Locks the state machine. Never held across an await; a poisoned lock is still usable
    /// because every transition leaves the core consistent.
    fn core(&self) -> MutexGuard<'_, Core> {
        self.shared.core()
    }

    fn publish(&self, transitions: &[Transition]) {
        for transition in transitions {
            metrics::transition(&self.shared.family, transition.from, transition.to);
            tracing::info!(
                breaker = %self.shared.name,
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                reason = transition.reason,
                "circuit breaker changed state"
            );
            // No subscriber is fine.
            let _ = self.shared.events.send(BreakerEvent {
                breaker: self.shared.name.clone(),
                transition: *transition,
            });
        }
    }
}

/// Permission to make one call through a [`Breaker`].
///
/// Report the result with [`Permit::success`], [`Permit::failure`] or [`Permit::record`]
/// (or hand the permit to [`observability::observe_response`], which does it at the real
/// result). Dropped without a result, it releases its probe slot; if a deadline was set and has
/// passed, the drop counts as a failure (the call timed out).
#[must_use = "a permit records nothing unless it is given an outcome"]
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    admission: Admission,
    deadline: Option<Instant>,
    done: bool,
}

impl Permit {
    /// True if this is the half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.admission, Admission::Probe(_))
    }

    /// Sets the call's deadline: a drop after it counts as a failure.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline `timeout` from now.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }

    /// The call worked.
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// The call failed in a way that counts against the destination.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    /// Classifies `outcome` with the breaker's policy and records it.
    pub fn record(self, outcome: RpcOutcome) {
        let classified = if outcome == RpcOutcome::Cancelled {
            self.cancellation()
        } else if self.breaker.shared.policy.is_failure(&outcome) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        self.finish(classified);
    }

    /// What a result-less end means: a timeout if the deadline passed, else a cancellation.
    fn cancellation(&self) -> Outcome {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Outcome::Failure,
            _ => Outcome::Cancelled,
        }
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record(self.admission, outcome);
    }
}

impl OnOutcome for Permit {
    fn on_outcome(self, outcome: RpcOutcome) {
        self.record(outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            let outcome = self.cancellation();
            self.breaker.record(self.admission, outcome);
        }
    }
}

#[cfg(test)]
mod tests;
