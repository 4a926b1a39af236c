//! The load bench's stall probe (`benches/load/run.sh --latency` runs it first): how often, and
//! for how long, this machine takes the CPU away from a thread that never sleeps. One thread
//! reads the monotonic clock in a loop for SECONDS and counts the gaps between two reads by
//! length. On an idle machine the gaps are interrupts and, on a VM, the hypervisor running
//! something else on the vCPU: time no program on the machine can avoid, and which lands on a
//! message whenever it falls inside the microseconds that message is being handled.
//!
//! `cpu_stalls [SECONDS]` (default 5) prints one line, e.g.
//! `stalls per second: 10-25us 76.2  25-50us 245.2  50-100us 31.0  100-250us 23.8  ...`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Upper bounds (µs) of the gap classes; the last class is everything longer.
const BOUNDS_US: [u64; 7] = [25, 50, 100, 250, 500, 1_000, 5_000];
/// Shorter gaps are the loop itself and the clock read.
const FLOOR_US: u64 = 10;

fn main() -> ExitCode {
    let seconds = match std::env::args().nth(1).map(|s| s.parse::<f64>()) {
        None => 5.0,
        Some(Ok(s)) if s > 0.0 && s <= 600.0 => s,
        Some(_) => {
            eprintln!("usage: cpu_stalls [SECONDS] (0 < SECONDS <= 600)");
            return ExitCode::from(2);
        }
    };
    let run = Duration::from_secs_f64(seconds);
    let mut counts = [0u64; BOUNDS_US.len() + 1];
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now.duration_since(last).as_micros() as u64;
        if gap >= FLOOR_US {
            let class = BOUNDS_US
                .iter()
                .position(|&b| gap < b)
                .unwrap_or(BOUNDS_US.len());
            counts[class] += 1;
        }
        last = now;
        if now.duration_since(start) >= run {
            break;
        }
    }
    let mut line = String::from("stalls per second:");
    let mut lower = FLOOR_US;
    for (i, n) in counts.iter().enumerate() {
        let label = match BOUNDS_US.get(i) {
            Some(upper) => format!("{lower}-{upper}us"),
            None => format!(">={lower}us"),
        };
        line.push_str(&format!("  {label} {:.1}", *n as f64 / seconds));
        lower = BOUNDS_US.get(i).copied().unwrap_or(lower);
    }
    println!("{line}");
    ExitCode::SUCCESS
}
