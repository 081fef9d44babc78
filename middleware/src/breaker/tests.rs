//! Breaker state machine tests on a paused tokio clock, including a proptest against a model.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::advance;

use super::*;

fn config(threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open: None,
    }
}

fn trip(breaker: &Breaker) {
    while breaker.state() == BreakerState::Closed {
        breaker.try_acquire().unwrap().failure();
    }
}

/// A hair-trigger breaker, tripped and then left until it is half-open.
async fn half_open() -> Breaker {
    let breaker = Breaker::new("t", config(1));
    trip(&breaker);
    advance(Duration::from_secs(5)).await;
    breaker
}

#[tokio::test(start_paused = true)]
async fn opens_after_threshold_failures_within_the_window() {
    let breaker = Breaker::new("t", config(3));
    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().failure();
    advance(Duration::from_secs(11)).await; // both age out of the window
    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    let refused = breaker.try_acquire().unwrap_err();
    assert_eq!(refused.state, BreakerState::Open);
    assert!(refused.to_string().contains("\"t\""), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_one_probe() {
    let breaker = half_open().await;
    let probe = breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    for _ in 0..100 {
        assert_eq!(
            breaker.try_acquire().unwrap_err().state,
            BreakerState::HalfOpen
        );
    }
    probe.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_and_restarts_the_timer() {
    let breaker = half_open().await;
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    advance(Duration::from_secs(4)).await;
    assert!(
        breaker.try_acquire().is_err(),
        "timer restarted at the failed probe"
    );
    advance(Duration::from_secs(1)).await;
    assert!(breaker.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_releases_the_slot_before_its_deadline() {
    let breaker = half_open().await;
    let probe = breaker
        .try_acquire()
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    drop(probe);
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "a cancellation is not a failure"
    );
    assert!(
        breaker.try_acquire().unwrap().is_probe(),
        "the slot is free again"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_dropped_after_its_deadline_counts_as_a_failure() {
    let breaker = half_open().await;
    let probe = breaker
        .try_acquire()
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    advance(Duration::from_secs(2)).await;
    drop(probe);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn probe_slot_is_released_when_a_panic_unwinds_through_it() {
    let breaker = half_open().await;
    let inner = breaker.clone();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _probe = inner.try_acquire().unwrap();
        panic!("probe handler blew up");
    }));
    assert!(panicked.is_err());
    assert!(breaker.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn max_open_force_closes_a_breaker_that_keeps_failing() {
    let breaker = Breaker::new(
        "t",
        BreakerConfig {
            max_open: Some(Duration::from_secs(30)),
            ..config(1)
        },
    );
    let mut events = breaker.subscribe();
    trip(&breaker);
    for _ in 0..5 {
        advance(Duration::from_secs(5)).await;
        if let Ok(probe) = breaker.try_acquire() {
            probe.failure();
        }
    }
    advance(Duration::from_secs(5)).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.try_acquire().is_ok());
    let mut reasons = Vec::new();
    while let Ok(event) = events.try_recv() {
        reasons.push(event.transition.reason);
    }
    assert_eq!(reasons.first(), Some(&"failures"));
    assert_eq!(reasons.last(), Some(&"max_open"));
}

#[tokio::test(start_paused = true)]
async fn default_policy_ignores_caller_errors() {
    use tonic::Code;
    let breaker = Breaker::new("t", config(1));
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::FailedPrecondition,
        Code::Unauthenticated,
        Code::Ok,
    ] {
        breaker
            .try_acquire()
            .unwrap()
            .record(RpcOutcome::Status(code));
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "{code:?} must not count"
        );
    }
    for outcome in [
        RpcOutcome::Status(Code::Unavailable),
        RpcOutcome::Status(Code::DeadlineExceeded),
        RpcOutcome::Status(Code::ResourceExhausted),
        RpcOutcome::Transport,
    ] {
        let breaker = Breaker::new("t", config(1));
        breaker.try_acquire().unwrap().record(outcome);
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "{outcome:?} must count"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn state_changes_are_broadcast() {
    let breaker = Breaker::new("t", config(1));
    let mut events = breaker.subscribe();
    trip(&breaker);
    advance(Duration::from_secs(5)).await;
    breaker.try_acquire().unwrap().success();
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| (e.transition.from, e.transition.to))
        .collect();
    assert_eq!(
        seen,
        vec![
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
}

// === model ===

/// How a test ends a permit.
#[derive(Clone, Copy, Debug)]
enum End {
    Success,
    Failure,
    Drop,
}

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    End { which: usize, how: End },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), prop_oneof![Just(End::Success), Just(End::Failure), Just(End::Drop)])
            .prop_map(|(which, how)| Op::End { which, how }),
        2 => (0u64..8_000).prop_map(Op::Advance),
    ]
}

/// The specification, written plainly over integer milliseconds.
#[derive(Debug)]
struct Model {
    threshold: usize,
    window: u64,
    open_for: u64,
    max_open: Option<u64>,
    state: BreakerState,
    failures: Vec<u64>,
    opened_at: u64,
    first_trip: u64,
    probe: Option<u64>,
    next_probe: u64,
    /// Counts entries into half-open; a probe belongs to the episode it was admitted in.
    episode: u64,
}

/// What the model says about an admitted call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ticket {
    Normal,
    Probe(u64),
}

impl Model {
    fn tick(&mut self, now: u64) {
        if self.state != BreakerState::Closed
            && self
                .max_open
                .is_some_and(|max| now - self.first_trip >= max)
        {
            self.close();
        }
        if self.state == BreakerState::Open && now - self.opened_at >= self.open_for {
            self.state = BreakerState::HalfOpen;
            self.probe = None;
            self.episode += 1;
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.failures.clear();
        self.probe = None;
    }

    fn open(&mut self, now: u64) {
        self.state = BreakerState::Open;
        self.opened_at = now;
    }

    fn acquire(&mut self, now: u64) -> Option<Ticket> {
        self.tick(now);
        match self.state {
            BreakerState::Closed => Some(Ticket::Normal),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.probe.is_some() => None,
            BreakerState::HalfOpen => {
                self.next_probe += 1;
                self.probe = Some(self.next_probe);
                Some(Ticket::Probe(self.next_probe))
            }
        }
    }

    fn end(&mut self, now: u64, ticket: Ticket, how: End) {
        self.tick(now);
        match (ticket, self.state) {
            (Ticket::Normal, BreakerState::Closed) => {
                if let End::Failure = how {
                    self.failures.push(now);
                    self.failures.retain(|t| now - t < self.window);
                    if self.failures.len() >= self.threshold {
                        self.first_trip = now;
                        self.open(now);
                    }
                }
            }
            (Ticket::Probe(id), BreakerState::HalfOpen) if self.probe == Some(id) => match how {
                End::Success => self.close(),
                End::Failure => self.open(now),
                End::Drop => self.probe = None,
            },
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The breaker agrees with the model on every admission and every state, and never has
    /// two probes out in one half-open episode.
    #[test]
    fn breaker_matches_the_model(
        threshold in 1u32..4,
        max_open in prop::option::of(5_000u64..40_000),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let cfg = BreakerConfig {
                failure_threshold: threshold,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
                max_open: max_open.map(Duration::from_millis),
            };
            let breaker = Breaker::new("model", cfg);
            let mut model = Model {
                threshold: threshold as usize,
                window: 10_000,
                open_for: 5_000,
                max_open,
                state: BreakerState::Closed,
                failures: Vec::new(),
                opened_at: 0,
                first_trip: 0,
                probe: None,
                next_probe: 0,
                episode: 0,
            };
            let start = tokio::time::Instant::now();
            let now = || u64::try_from(start.elapsed().as_millis()).unwrap();
            // Each held permit with the half-open episode it was admitted in.
            let mut held: Vec<(Permit, Ticket, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => {
                        let real = breaker.try_acquire();
                        let expected = model.acquire(now());
                        prop_assert_eq!(real.is_ok(), expected.is_some(), "admission differs: {:?}", model);
                        if let (Ok(permit), Some(ticket)) = (real, expected) {
                            prop_assert_eq!(permit.is_probe(), matches!(ticket, Ticket::Probe(_)));
                            held.push((permit, ticket, model.episode));
                        }
                    }
                    Op::End { which, how } if !held.is_empty() => {
                        let (permit, ticket, _) = held.swap_remove(which % held.len());
                        match how {
                            End::Success => permit.success(),
                            End::Failure => permit.failure(),
                            End::Drop => drop(permit),
                        }
                        model.end(now(), ticket, how);
                    }
                    Op::End { .. } => {}
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                }
                model.tick(now());
                prop_assert_eq!(breaker.state(), model.state, "state differs: {:?}", model);
                // A probe outlived by a forced close is stale (its result is ignored); within
                // one half-open episode there is never more than one.
                let probes = held
                    .iter()
                    .filter(|(p, _, episode)| p.is_probe() && *episode == model.episode)
                    .count();
                prop_assert!(probes <= 1, "{} probes out in one half-open episode", probes);
            }
            Ok(())
        })?;
    }
}
