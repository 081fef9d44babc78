//! Route-setup's own metrics, in the process-wide registry
//! ([`observability::metrics::process_registry`]), recorded when each outcome is known:
//! `route_setup_setups_total{outcome}` (every `DialRouteGroup`: refused at once, or set up
//! and how it ended — a setup whose caller left is counted when it finishes),
//! `route_setup_late_total` (setups that ended after their caller's deadline), and
//! `route_setup_setup_seconds` (how long the setups that ran took). The destination breakers
//! are the middleware's `circuit_breaker_*` families (breaker `route-setup-destination`).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

use crate::route_setup::DialError;
use crate::setup::{Role, SetupError};

/// Setup times in seconds: 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a `DialRouteGroup` ended: the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Set up.
    Ok,
    /// Refused: every slot taken.
    Overloaded,
    /// Refused: the destination's breaker is open.
    BreakerOpen,
    /// The transport graph could not be read.
    GraphFailed,
    /// No path within the hop bounds.
    NoRoute,
    /// A visor's answers did not make rules.
    BadRules,
    /// The source visor failed.
    SourceFailed,
    /// A visor in the middle failed.
    HopFailed,
    /// The destination failed (what its breaker counts).
    DestinationFailed,
    /// The setup's own time ran out (a caller's deadline passing is counted in
    /// `route_setup_late_total` once the setup ends).
    Timeout,
}

impl Outcome {
    /// The outcome of a dial's result.
    pub fn of<T>(result: &Result<T, DialError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(DialError::Overloaded(_)) => Self::Overloaded,
            Err(DialError::BreakerOpen(_)) => Self::BreakerOpen,
            Err(DialError::Graph(_)) => Self::GraphFailed,
            Err(DialError::Timeout(_)) => Self::Timeout,
            Err(DialError::Setup(SetupError::NoRoute(_))) => Self::NoRoute,
            Err(DialError::Setup(SetupError::Rules(_))) => Self::BadRules,
            Err(DialError::Setup(SetupError::Hop { role, .. })) => match role {
                Role::Source => Self::SourceFailed,
                Role::Intermediate => Self::HopFailed,
                Role::Destination => Self::DestinationFailed,
            },
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Overloaded => "overloaded",
            Self::BreakerOpen => "breaker_open",
            Self::GraphFailed => "graph_failed",
            Self::NoRoute => "no_route",
            Self::BadRules => "bad_rules",
            Self::SourceFailed => "source_failed",
            Self::HopFailed => "hop_failed",
            Self::DestinationFailed => "destination_failed",
            Self::Timeout => "timeout",
        }
    }
}

struct SetupMetrics {
    setups: IntCounterVec,
    late: IntCounter,
    seconds: Histogram,
}

fn metrics() -> Option<&'static SetupMetrics> {
    static METRICS: OnceLock<Option<SetupMetrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let made = (|| -> Result<SetupMetrics, prometheus::Error> {
                let setups = IntCounterVec::new(
                    Opts::new(
                        "route_setup_setups_total",
                        "DialRouteGroup requests by outcome (refused at once, or how the setup \
                         ended; one whose caller left is counted when it finishes)",
                    ),
                    &["outcome"],
                )?;
                let late = IntCounter::new(
                    "route_setup_late_total",
                    "Setups that ended after their caller was answered DEADLINE_EXCEEDED \
                     (what they built was then released)",
                )?;
                let seconds = Histogram::with_opts(
                    HistogramOpts::new(
                        "route_setup_setup_seconds",
                        "Time a setup took, from its start to its outcome, in seconds",
                    )
                    .buckets(BUCKETS.to_vec()),
                )?;
                let registry = observability::metrics::process_registry();
                registry.register(Box::new(setups.clone()))?;
                registry.register(Box::new(late.clone()))?;
                registry.register(Box::new(seconds.clone()))?;
                Ok(SetupMetrics {
                    setups,
                    late,
                    seconds,
                })
            })();
            made.map_err(|error| tracing::warn!(%error, "route-setup metrics unavailable"))
                .ok()
        })
        .as_ref()
}

/// Counts a request refused before any setup work.
pub fn record_refused(outcome: Outcome) {
    if let Some(metrics) = metrics() {
        metrics.setups.with_label_values(&[outcome.label()]).inc();
    }
}

/// Counts a setup that ran, and how long it took.
pub fn record_setup(outcome: Outcome, took: Duration) {
    if let Some(metrics) = metrics() {
        metrics.setups.with_label_values(&[outcome.label()]).inc();
        metrics.seconds.observe(took.as_secs_f64());
    }
}

/// Counts a setup that ended after its caller had been answered.
pub fn record_late() {
    if let Some(metrics) = metrics() {
        metrics.late.inc();
    }
}

/// Registers the families now, so `/metrics` lists them before the first request.
pub fn register() {
    let _ = metrics();
}
