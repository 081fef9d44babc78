//! What every setup-svc bench does around its measurements: `--quick` picks the smaller
//! sizes, a 2-thread runtime runs the bench, and the summary ends the output as
//! `key=value` lines (`quick=` first).

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

/// Runs `bench` with `quick` or `full` sizes (by `--quick`) and prints its summary.
pub fn main<S, F, Fut>(quick: S, full: S, bench: F)
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Vec<(&'static str, String)>>,
{
    let is_quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = runtime.block_on(bench(if is_quick { quick } else { full }));
    println!();
    println!("quick={}", u8::from(is_quick));
    for (key, value) in summary {
        println!("{key}={value}");
    }
}
