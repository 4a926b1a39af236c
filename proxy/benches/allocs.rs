//! Allocations per message in the proxy core and the wire layer, counted by a global allocator
//! (not timed: counting slows allocation down). Prints one table; deterministic, so any change
//! in the counts is a change in the code.
//!
//! Run: `cargo bench -p pointsman --bench allocs`.

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/media.rs"]
mod media;

use common::{forward_invite, Sim, INVITE_1K, RINGING, STEPS, WARM_CALLS};
use pointsman_protocol::wire::{scan, Framing, Limits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counters() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

/// Allocations (count, bytes) made by `f`.
fn count<T>(f: impl FnOnce() -> T) -> (u64, u64) {
    let (a0, b0) = counters();
    let r = f();
    let (a1, b1) = counters();
    drop(r);
    (a1 - a0, b1 - b0)
}

const MEASURED: u64 = 10_000;

fn main() {
    // `cargo test --benches` / `cargo bench -- --list` pass flags; a plain run has none we need.
    if std::env::args().any(|a| a == "--list") {
        println!("allocs: bench");
        return;
    }
    let limits = Limits::default();
    println!(
        "{:<34} {:>12} {:>14}",
        "wire (one message)", "allocations", "bytes"
    );
    let rows = [
        (
            "scan INVITE 1 KB",
            count(|| scan(INVITE_1K, Framing::Datagram, &limits).map(|m| m.headers.len())),
        ),
        (
            "scan 180",
            count(|| scan(RINGING, Framing::Datagram, &limits).map(|m| m.headers.len())),
        ),
        (
            "scan + forward INVITE 1 KB",
            count(|| forward_invite(&scan(INVITE_1K, Framing::Datagram, &limits).expect("scans"))),
        ),
    ];
    for (name, (a, b)) in rows {
        println!("{name:<34} {a:>12} {b:>14}");
    }

    // The media relay: every packet after the first of each leg (which latches).
    let mut rig = media::MediaRig::new();
    let mut packets: Vec<(usize, Vec<u8>)> = (0..3).map(|leg| (leg, media::rtp(2, 0x77))).collect();
    let carrier: std::net::SocketAddr = media::CARRIER_MEDIA.parse().unwrap();
    let clouds: Vec<std::net::SocketAddr> = media::CLOUD_MEDIA
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    println!();
    println!(
        "{:<34} {:>12} {:>14}   (mean of {MEASURED})",
        "media relay (one packet)", "allocations", "bytes"
    );
    for (leg, packet) in packets.iter_mut() {
        let (name, socket, from) = match leg {
            0 => ("carrier packet to two clouds", rig.carrier_socket, carrier),
            1 => (
                "heard cloud's packet to carrier",
                rig.cloud_sockets[0],
                clouds[0],
            ),
            _ => ("standby cloud's packet", rig.cloud_sockets[1], clouds[1]),
        };
        let (a, b) = count(|| {
            for seq in 0..MEASURED {
                packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
                rig.relay(socket, from, packet);
            }
        });
        let per = |v: u64| v as f64 / MEASURED as f64;
        println!("{name:<34} {:>12.2} {:>14.1}", per(a), per(b));
    }

    let live_before = LIVE.load(Relaxed);
    let mut sim = Sim::warm();
    let held = LIVE.load(Relaxed) - live_before - sim.driver_bytes() as i64;
    let timers = sim.pending_timers();
    let timer_kinds = sim.pending_timer_kinds();
    sim.probe = counters;
    let mut sums = [(0u64, 0u64); 8];
    for _ in 0..MEASURED {
        for (s, t) in sums.iter_mut().zip(sim.call()) {
            s.0 += t.1;
            s.1 += t.2;
        }
    }
    println!();
    println!(
        "{:<34} {:>12} {:>14}   (mean of {MEASURED} calls after {WARM_CALLS})",
        "core (per message)", "allocations", "bytes"
    );
    let per = |v: u64| v as f64 / MEASURED as f64;
    for (step, (a, b)) in STEPS.iter().zip(sums) {
        let name = format!("core {step}");
        println!("{name:<34} {:>12.1} {:>14.0}", per(a), per(b));
    }
    let (a, b) = sums
        .iter()
        .fold((0, 0), |acc, s| (acc.0 + s.0, acc.1 + s.1));
    println!(
        "{:<34} {:>12.1} {:>14.0}",
        "core whole call",
        per(a),
        per(b)
    );
    // At 1 ms of fake time a call the core runs at 1,000 calls/s: what it holds in steady state
    // is its memory per 1,000 calls/s (the load bench's RSS figure, without allocator overhead).
    println!();
    println!(
        "held in steady state at 1,000 calls/s (after {WARM_CALLS} calls): {:.1} MB in the \
         core's tables, {} timers pending in the driver ({:.1} per call/s)",
        held as f64 / 1e6,
        timers,
        timers as f64 / 1000.0
    );
    // Nothing is left once the calls stop and every window has passed.
    sim.advance(std::time::Duration::from_secs(200));
    let left = LIVE.load(Relaxed) - live_before - sim.driver_bytes() as i64;
    println!(
        "held 200 s after the last call: {:.2} MB in the core ({} timers pending)",
        left as f64 / 1e6,
        sim.pending_timers()
    );
    let kinds: Vec<String> = timer_kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!("timers pending by kind: {}", kinds.join(", "));
}
