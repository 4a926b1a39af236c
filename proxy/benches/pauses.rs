//! How long the core stops a worker at once while its tables grow: the load bench's call
//! (`common::Sim`) at 1,000 and 7,700 calls/s of fake time for 60 s, from an empty core, so
//! every table grows from nothing as it does when load arrives (a failover moving a site's calls
//! here). Prints, per rate, the longest timer step (the sweep's steps fall here) and the
//! longest message, and how many of each took over 300 µs. Timings are the machine's, so read
//! them as orders of magnitude: before the sweep went shard by shard, its one step was 27 ms at
//! 1,000 calls/s and 62 ms at 7,700 on the project's VM.
//!
//! `cargo bench -p pointsman --bench pauses` (about two minutes).

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sim;
use std::time::Duration;

const SLOW: Duration = Duration::from_micros(300);
const FAKE_SECONDS: u64 = 60;

fn main() {
    // `cargo test --benches` / `cargo bench -- --list` pass flags; a plain run has none we need.
    if std::env::args().any(|a| a == "--list") {
        println!("pauses: bench");
        return;
    }
    println!(
        "{:>8} {:>9} {:>22} {:>24}",
        "calls/s", "calls", "longest timer step", "longest message"
    );
    for rate in [1_000u64, 7_700] {
        let mut sim = Sim::new();
        sim.gap = Duration::from_nanos(1_000_000_000 / rate);
        let calls = rate * FAKE_SECONDS;
        let (mut timer_max, mut timer_slow) = (Duration::ZERO, 0);
        let (mut msg_max, mut msg_slow) = (Duration::ZERO, 0);
        for _ in 0..calls {
            let steps = sim.call();
            let (messages, timers) = steps.split_at(steps.len() - 1);
            for (took, ..) in messages {
                msg_max = msg_max.max(*took);
                msg_slow += usize::from(*took > SLOW);
            }
            timer_max = timer_max.max(timers[0].0);
            timer_slow += usize::from(timers[0].0 > SLOW);
        }
        println!(
            "{rate:>8} {calls:>9} {:>10.2} ms ({timer_slow:>4} > 300 µs) {:>10.2} ms ({msg_slow:>5} > 300 µs)",
            timer_max.as_secs_f64() * 1e3,
            msg_max.as_secs_f64() * 1e3,
        );
    }
}
