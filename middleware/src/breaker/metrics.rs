//! Circuit breakers on `/metrics`, in the process-wide registry:
//! `circuit_breaker_state{breaker, state}` (1 for the state each live breaker is in, 0 for the
//! others) read at every scrape, and `circuit_breaker_transitions_total{breaker, from, to}`.
//! A keyed set's breakers are reported under the set's name, so destinations do not grow the
//! label sets; its state gauge counts how many of its breakers are in each state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::{BreakerState, Shared};

/// The live breakers of the process, and the two families.
struct BreakerMetrics {
    live: Mutex<Vec<Weak<Shared>>>,
    state: IntGaugeVec,
    transitions: IntCounterVec,
}

const STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
];

/// The state family (one is registered for its description; each scrape fills a new one).
fn state_gauge() -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(
        Opts::new(
            "circuit_breaker_state",
            "Circuit breakers in each state (closed, open, half_open), by breaker",
        ),
        &["breaker", "state"],
    )
}

impl BreakerMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            live: Mutex::new(Vec::new()),
            state: state_gauge()?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "circuit_breaker_transitions_total",
                    "Circuit breaker state changes, by breaker and states",
                ),
                &["breaker", "from", "to"],
            )?,
        })
    }
}

/// The collector registered once in the process registry.
#[derive(Clone)]
struct Registered(Arc<BreakerMetrics>);

impl Collector for Registered {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.0.state.desc();
        descs.extend(self.0.transitions.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counts: BTreeMap<Arc<str>, [i64; 3]> = BTreeMap::new();
        {
            let mut live = self.0.live.lock().unwrap_or_else(PoisonError::into_inner);
            live.retain(|weak| weak.strong_count() > 0);
            for shared in live.iter().filter_map(Weak::upgrade) {
                let state = shared.state_now();
                let slot = counts.entry(shared.family.clone()).or_default();
                if let Some(index) = STATES.iter().position(|s| *s == state) {
                    slot[index] += 1;
                }
            }
        }
        // A gauge of this scrape's own, so concurrent scrapes never see each other's resets.
        let Ok(state) = state_gauge() else {
            return self.0.transitions.collect();
        };
        for (family, per_state) in &counts {
            for (s, count) in STATES.iter().zip(per_state) {
                state.with_label_values(&[family, s.as_str()]).set(*count);
            }
        }
        let mut families = state.collect();
        families.extend(self.0.transitions.collect());
        families
    }
}

fn metrics() -> Option<&'static Arc<BreakerMetrics>> {
    static METRICS: OnceLock<Option<Arc<BreakerMetrics>>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let metrics = Arc::new(BreakerMetrics::new().ok()?);
            let registry = observability::metrics::process_registry();
            match registry.register(Box::new(Registered(metrics.clone()))) {
                Ok(()) => Some(metrics),
                Err(error) => {
                    tracing::warn!(%error, "cannot register the circuit breaker metrics");
                    None
                }
            }
        })
        .as_ref()
}

/// Every transition a breaker can make, so each counter is on `/metrics` from the start.
const TRANSITIONS: [(BreakerState, BreakerState); 5] = [
    (BreakerState::Closed, BreakerState::Open),
    (BreakerState::Open, BreakerState::HalfOpen),
    (BreakerState::HalfOpen, BreakerState::Closed),
    (BreakerState::HalfOpen, BreakerState::Open),
    (BreakerState::Open, BreakerState::Closed),
];

/// Lists a new breaker for the state gauge, and starts its family's transition counters at 0.
pub(super) fn track(shared: &Arc<Shared>) {
    if let Some(metrics) = metrics() {
        for (from, to) in TRANSITIONS {
            let _ = metrics.transitions.with_label_values(&[
                &shared.family,
                from.as_str(),
                to.as_str(),
            ]);
        }
        let mut live = metrics.live.lock().unwrap_or_else(PoisonError::into_inner);
        // Keyed sets create and drop breakers; keep the list near the live count.
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|weak| weak.strong_count() > 0);
        }
        live.push(Arc::downgrade(shared));
    }
}

/// Counts one transition.
pub(super) fn transition(family: &str, from: BreakerState, to: BreakerState) {
    if let Some(metrics) = metrics() {
        metrics
            .transitions
            .with_label_values(&[family, from.as_str(), to.as_str()])
            .inc();
    }
}
