//! The breaker's state machine, with time passed in: no clock, no IO, no locks.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How a breaker trips and recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within [`BreakerConfig::window`] that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// The sliding window failures are counted in.
    pub window: Duration,
    /// How long the breaker stays open before it admits one half-open probe.
    pub open_for: Duration,
    /// If set, the breaker is force-closed this long after it first tripped, even if probes
    /// keep failing (so stale state cannot block a destination forever).
    pub max_open: Option<Duration>,
}

impl Default for BreakerConfig {
    /// 5 failures in 10 s open the breaker for 5 s; no forced close.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            max_open: None,
        }
    }
}

/// The externally visible state of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// One probe call may pass (or is in flight); everything else is rejected.
    HalfOpen,
}

impl BreakerState {
    /// A short lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What an admitted call is: an ordinary call or the single half-open probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted while closed.
    Normal,
    /// The half-open probe with this id.
    Probe(u64),
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Open; the next probe may go at this instant.
    Open { probe_at: Instant },
    /// Half-open and the probe is still in flight.
    ProbeInFlight,
}

/// How an admitted call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The destination worked.
    Success,
    /// The destination failed (by the failure policy).
    Failure,
    /// The result is unknown (the caller gave up): a probe slot is just released.
    Cancelled,
}

/// A change of state, reported to observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why: a short lowercase reason (`failures`, `open_elapsed`, `probe_ok`, `probe_failed`, `max_open`).
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Inner {
    Closed {
        /// Instants of recent failures, oldest first; never longer than the threshold.
        failures: VecDeque<Instant>,
    },
    Open {
        probe_at: Instant,
        first_trip: Instant,
    },
    HalfOpen {
        probe: Option<u64>,
        first_trip: Instant,
    },
}

/// The breaker state machine. Every input takes `now`.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    config: BreakerConfig,
    inner: Inner,
    next_probe_id: u64,
}

impl Core {
    /// A closed breaker.
    pub(crate) fn new(mut config: BreakerConfig) -> Self {
        config.failure_threshold = config.failure_threshold.max(1);
        Self {
            config,
            inner: Inner::Closed {
                failures: VecDeque::new(),
            },
            next_probe_id: 0,
        }
    }

    /// The state as of `now` (an elapsed open period reads as half-open).
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match &self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { first_trip, .. } | Inner::HalfOpen { first_trip, .. }
                if self.force_close_due(*first_trip, now) =>
            {
                BreakerState::Closed
            }
            Inner::Open { probe_at, .. } if now < *probe_at => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to admit one call at `now`.
    pub(crate) fn try_admit(
        &mut self,
        now: Instant,
        transitions: &mut Vec<Transition>,
    ) -> Result<Admission, Refusal> {
        self.apply_time(now, transitions);
        match &mut self.inner {
            Inner::Closed { .. } => Ok(Admission::Normal),
            Inner::Open { probe_at, .. } => Err(Refusal::Open {
                probe_at: *probe_at,
            }),
            Inner::HalfOpen { probe: Some(_), .. } => Err(Refusal::ProbeInFlight),
            Inner::HalfOpen { probe, .. } => {
                let id = self.next_probe_id;
                self.next_probe_id += 1;
                *probe = Some(id);
                Ok(Admission::Probe(id))
            }
        }
    }

    /// Records how an admitted call ended.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        admission: Admission,
        outcome: Outcome,
        transitions: &mut Vec<Transition>,
    ) {
        self.apply_time(now, transitions);
        match (admission, &mut self.inner) {
            (Admission::Normal, Inner::Closed { failures }) if outcome == Outcome::Failure => {
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= self.config.window)
                {
                    failures.pop_front();
                }
                if failures.len() >= self.config.failure_threshold as usize {
                    self.open(now, now, BreakerState::Closed, "failures", transitions);
                }
            }
            (Admission::Probe(id), Inner::HalfOpen { probe, first_trip }) if *probe == Some(id) => {
                let first_trip = *first_trip;
                match outcome {
                    Outcome::Success => self.close(BreakerState::HalfOpen, "probe_ok", transitions),
                    Outcome::Failure => self.open(
                        now,
                        first_trip,
                        BreakerState::HalfOpen,
                        "probe_failed",
                        transitions,
                    ),
                    Outcome::Cancelled => *probe = None,
                }
            }
            // A result from before the last state change (a call admitted while closed that
            // ends after the breaker opened, a probe outlived by a forced close): ignored.
            _ => {}
        }
    }

    /// Moves along the time-driven edges: open → half-open, and the forced close.
    fn apply_time(&mut self, now: Instant, transitions: &mut Vec<Transition>) {
        match self.inner {
            Inner::Open { first_trip, .. } | Inner::HalfOpen { first_trip, .. }
                if self.force_close_due(first_trip, now) =>
            {
                let from = self.state_kind();
                self.close(from, "max_open", transitions);
            }
            Inner::Open {
                probe_at,
                first_trip,
            } if now >= probe_at => {
                self.inner = Inner::HalfOpen {
                    probe: None,
                    first_trip,
                };
                transitions.push(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                    reason: "open_elapsed",
                });
            }
            _ => {}
        }
    }

    fn force_close_due(&self, first_trip: Instant, now: Instant) -> bool {
        self.config
            .max_open
            .is_some_and(|max| now.saturating_duration_since(first_trip) >= max)
    }

    fn state_kind(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn open(
        &mut self,
        now: Instant,
        first_trip: Instant,
        from: BreakerState,
        reason: &'static str,
        transitions: &mut Vec<Transition>,
    ) {
        self.inner = Inner::Open {
            probe_at: now + self.config.open_for,
            first_trip,
        };
        transitions.push(Transition {
            from,
            to: BreakerState::Open,
            reason,
        });
    }

    fn close(
        &mut self,
        from: BreakerState,
        reason: &'static str,
        transitions: &mut Vec<Transition>,
    ) {
        self.inner = Inner::Closed {
            failures: VecDeque::new(),
        };
        transitions.push(Transition {
            from,
            to: BreakerState::Closed,
            reason,
        });
    }
}
