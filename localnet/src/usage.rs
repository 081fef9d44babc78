//! CPU time and peak memory of processes, read from `/proc/<pid>` (Linux), once ([`of`]) or
//! sampled over a period for the peak CPU share ([`Sampler`]).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a process used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident memory (VmHWM), in KiB.
    pub peak_rss_kib: u64,
}

/// The usage of process `pid`, if it is readable.
pub fn of(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux configuration this runs on.
    Some(Usage {
        cpu: Duration::from_millis(ticks * 10),
        peak_rss_kib,
    })
}

/// What one process used at its busiest.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    /// The name it was sampled under.
    pub name: String,
    /// The highest CPU share of one sampling interval (100 = one core busy).
    pub cpu_percent: f64,
    /// Its totals at the last sample.
    pub usage: Usage,
}

/// Samples processes every interval in a background task, until [`Sampler::stop`].
#[derive(Debug)]
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Vec<Peak>>,
}

impl Sampler {
    /// Starts sampling `processes` (name, pid) every `every`.
    pub fn start(processes: Vec<(String, u32)>, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample(processes, every, stop.clone()));
        Self { stop, task }
    }

    /// Takes a last sample, stops and returns each process's peak.
    pub async fn stop(mut self) -> Vec<Peak> {
        self.stop.cancel();
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Sampler {
    /// A sampler dropped without [`Sampler::stop`] stops sampling (its task ends at once).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One sampled process: its pid, its peak so far, and the previous sample (when, CPU total).
struct Sampled {
    pid: u32,
    peak: Peak,
    last: Option<(Instant, Duration)>,
}

async fn sample(
    processes: Vec<(String, u32)>,
    every: Duration,
    stop: CancellationToken,
) -> Vec<Peak> {
    let mut sampled: Vec<Sampled> = processes
        .into_iter()
        .map(|(name, pid)| Sampled {
            pid,
            peak: Peak {
                name,
                cpu_percent: 0.0,
                usage: Usage::default(),
            },
            last: None,
        })
        .collect();
    loop {
        let now = Instant::now();
        for process in &mut sampled {
            let Some(usage) = of(process.pid) else {
                continue;
            };
            if let Some((at, cpu)) = process.last {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    let busy = usage.cpu.saturating_sub(cpu).as_secs_f64();
                    process.peak.cpu_percent = process.peak.cpu_percent.max(100.0 * busy / wall);
                }
            }
            process.last = Some((now, usage.cpu));
            process.peak.usage = usage;
        }
        if stop.is_cancelled() {
            return sampled.into_iter().map(|process| process.peak).collect();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let usage = super::of(std::process::id()).expect("/proc is readable");
        assert!(usage.peak_rss_kib > 0);
    }
}
