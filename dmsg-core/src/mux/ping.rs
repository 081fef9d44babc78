//! Session liveness as timers (PROTOCOL.md §8): a ping every interval, a deadline for its
//! pong, and a count of consecutive failures. Nothing here waits: the driver sleeps until
//! [`PingState::next_timeout`] and calls back.

use std::time::Duration;

use tokio::time::Instant;

/// Liveness settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between pings; `None` disables pinging from this end.
    pub interval: Option<Duration>,
    /// How long a ping may go unanswered.
    pub deadline: Duration,
    /// Consecutive unanswered pings that close the session.
    pub max_failures: u32,
}

impl PingConfig {
    /// Pings every `interval`, each allowed 30 % of it (the defaults' 18 s of 60 s), two
    /// failures close the session: for tests and fleets that must notice silence sooner.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval: Some(interval),
            deadline: interval.mul_f64(0.3),
            max_failures: crate::wire::PING_FAILURES,
        }
    }
}

impl Default for PingConfig {
    /// 60 s interval, 18 s deadline, 2 failures.
    fn default() -> Self {
        Self {
            interval: Some(crate::wire::PING_INTERVAL),
            deadline: crate::wire::PING_DEADLINE,
            max_failures: crate::wire::PING_FAILURES,
        }
    }
}

/// What a timeout asks the mux to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PingAction {
    /// Nothing.
    None,
    /// Send a PING with this value.
    Send(u64),
    /// Too many failures: close the session.
    Dead,
}

#[derive(Debug)]
pub(crate) struct PingState {
    config: PingConfig,
    next_ping: Option<Instant>,
    outstanding: Option<(u64, Instant)>,
    failures: u32,
    counter: u64,
    last_rtt: Option<Duration>,
}

impl PingState {
    /// The first ping goes out at once (`now`).
    pub(crate) fn new(config: PingConfig, now: Instant) -> Self {
        Self {
            config,
            next_ping: config.interval.map(|_| now),
            outstanding: None,
            failures: 0,
            counter: 0,
            last_rtt: None,
        }
    }

    /// The next instant [`PingState::on_timeout`] must run.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let deadline = self
            .outstanding
            .map(|(_, sent)| sent + self.config.deadline);
        match (self.next_ping, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances the timers to `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> PingAction {
        if let Some((_, sent)) = self.outstanding
            && now >= sent + self.config.deadline
        {
            self.outstanding = None;
            self.failures += 1;
            if self.failures >= self.config.max_failures {
                self.next_ping = None;
                return PingAction::Dead;
            }
        }
        match (self.next_ping, self.config.interval) {
            (Some(due), Some(interval)) if now >= due && self.outstanding.is_none() => {
                self.counter += 1;
                self.outstanding = Some((self.counter, now));
                self.next_ping = Some(now + interval);
                PingAction::Send(self.counter)
            }
            _ => PingAction::None,
        }
    }

    /// A PONG arrived; returns the round-trip time if it answers the outstanding ping.
    pub(crate) fn on_pong(&mut self, value: u64, now: Instant) -> Option<Duration> {
        match self.outstanding {
            Some((expected, sent)) if expected == value => {
                self.outstanding = None;
                self.failures = 0;
                let rtt = now.saturating_duration_since(sent);
                self.last_rtt = Some(rtt);
                Some(rtt)
            }
            _ => None,
        }
    }

    /// The last measured round trip.
    pub(crate) fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }
}
