//! Full-jitter exponential backoff: the n-th wait is uniform in `[0, min(cap, base·2ⁿ)]`, so
//! a fleet restarting together spreads its retries instead of dialing in lockstep.

use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A full-jitter exponential backoff. Owns its (seedable) random source.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Waits starting at `base`, doubling up to `cap`, from OS randomness.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::seeded(base, cap, rand::random())
    }

    /// The same with a fixed seed (deterministic tests and simulations).
    pub fn seeded(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Continues a streak of `failures` made elsewhere (the next wait grows from there).
    pub fn continue_after(&mut self, failures: u32) {
        self.attempt = failures;
    }

    /// A random delay in `[0, max]` (e.g. the first attempt after start).
    pub fn jitter(&mut self, max: Duration) -> Duration {
        jitter(&mut self.rng, max)
    }
}

/// A random delay in `[0, max]`, from `rng`.
pub fn jitter(rng: &mut impl Rng, max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_ceiling_capped_and_spread_out() {
        let mut backoff = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 7);
        for attempt in 0..10u32 {
            let ceiling = Duration::from_secs(1 << attempt.min(5)).min(Duration::from_secs(30));
            assert!(backoff.next_delay() <= ceiling);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
        let mut spread = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 1);
        let waits: Vec<_> = (0..20)
            .map(|_| {
                spread.reset();
                spread.next_delay()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 15,
            "full jitter spreads first waits: {waits:?}"
        );
    }
}
