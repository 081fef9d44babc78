//! The live uptime probe (seed 3160): every `every` (default 10 s) it samples two tiers *now*
//! — "connected to at least one dmsg server" and "the route tier works" (a route group of
//! this visor is up) — and keeps the samples of the last 24 hours in a bounded ring, so the
//! ratios over the last hour and day of the two tiers are directly comparable. Never a
//! one-shot latch: a tier that goes down shows in the next sample. A sample of the route
//! tier with no route group at all is no evidence either way and is not counted (there is
//! no probe dial yet).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Visor;

/// The default sampling period.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// One sample: each tier up now, or (routes) no evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// At least one dmsg server session.
    pub dmsg: bool,
    /// A route group is up; `None`: there is none.
    pub routes: Option<bool>,
}

/// A tier's ratio over a window: up samples over counted samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ratio {
    /// Samples with the tier up.
    pub up: u32,
    /// Samples counted.
    pub counted: u32,
}

impl Ratio {
    /// `up / counted`; `None` with no sample.
    pub fn value(self) -> Option<f64> {
        (self.counted > 0).then(|| f64::from(self.up) / f64::from(self.counted))
    }
}

/// What the probe reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UptimeReport {
    /// The last sample, if there was one.
    pub last: Option<Sample>,
    /// dmsg tier over the last hour, and day.
    pub dmsg_hour: Ratio,
    /// See `dmsg_hour`.
    pub dmsg_day: Ratio,
    /// Route tier over the last hour, and day.
    pub routes_hour: Ratio,
    /// See `routes_hour`.
    pub routes_day: Ratio,
    /// The sampling period.
    pub every: Duration,
}

/// The samples of the last day, newest last (pure: the caller samples and passes them in).
#[derive(Debug)]
pub struct SampleRing {
    samples: VecDeque<Sample>,
    every: Duration,
}

impl SampleRing {
    /// A ring for samples taken every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            every: every.max(Duration::from_millis(1)),
        }
    }

    fn capacity(&self, window: Duration) -> usize {
        let n = window.as_nanos() / self.every.as_nanos();
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }

    /// Adds a sample; the oldest beyond a day goes.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() >= self.capacity(DAY) {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The ratios now.
    pub fn report(&self) -> UptimeReport {
        let window = |span: Duration| {
            let n = self.capacity(span).min(self.samples.len());
            let mut dmsg = Ratio::default();
            let mut routes = Ratio::default();
            for sample in self.samples.iter().rev().take(n) {
                dmsg.counted += 1;
                dmsg.up += u32::from(sample.dmsg);
                if let Some(up) = sample.routes {
                    routes.counted += 1;
                    routes.up += u32::from(up);
                }
            }
            (dmsg, routes)
        };
        let (dmsg_hour, routes_hour) = window(HOUR);
        let (dmsg_day, routes_day) = window(DAY);
        UptimeReport {
            last: self.samples.back().copied(),
            dmsg_hour,
            dmsg_day,
            routes_hour,
            routes_day,
            every: self.every,
        }
    }
}

/// The probe's shared state: the ring its task fills, read by the control API and metrics.
#[derive(Clone, Debug)]
pub struct Uptime {
    ring: Arc<Mutex<SampleRing>>,
}

impl Uptime {
    /// An empty probe for samples every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            ring: Arc::new(Mutex::new(SampleRing::new(every))),
        }
    }

    /// The ratios now.
    pub fn report(&self) -> UptimeReport {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report()
    }

    /// Samples `visor` now.
    pub fn sample(&self, visor: &Visor) -> Sample {
        let groups = visor.route_groups();
        let sample = Sample {
            dmsg: !visor.dmsg().connected_servers().is_empty(),
            routes: (!groups.is_empty()).then(|| groups.iter().any(|g| !g.is_failed())),
        };
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
        sample
    }

    /// Samples `visor` every period until `stop`; the first sample at once.
    pub async fn run(self, visor: Visor, stop: CancellationToken) {
        let every = self.report().every;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.sample(&visor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dmsg: bool, routes: Option<bool>) -> Sample {
        Sample { dmsg, routes }
    }

    #[test]
    fn ratios_cover_the_last_hour_and_day_and_the_ring_is_bounded() {
        // A sample every 10 minutes: 6 an hour, 144 a day.
        let mut ring = SampleRing::new(Duration::from_secs(600));
        for _ in 0..200 {
            ring.push(sample(true, None));
        }
        assert_eq!(ring.samples.len(), 144, "a day of samples at most");
        for _ in 0..3 {
            ring.push(sample(false, Some(true)));
        }
        let report = ring.report();
        assert_eq!(report.dmsg_hour, Ratio { up: 3, counted: 6 });
        assert_eq!(
            report.dmsg_day,
            Ratio {
                up: 141,
                counted: 144
            }
        );
        assert_eq!(report.routes_hour, Ratio { up: 3, counted: 3 });
        assert_eq!(report.routes_day.value(), Some(1.0));
        assert_eq!(report.last, Some(sample(false, Some(true))));
        // A tier that comes back shows at once: no latch.
        ring.push(sample(true, Some(false)));
        let report = ring.report();
        assert_eq!(report.last, Some(sample(true, Some(false))));
        assert_eq!(report.routes_hour, Ratio { up: 3, counted: 4 });
        assert_eq!(Ratio::default().value(), None);
    }
}
