//! The wire layer on realistic messages: scanning a 1,024-byte carrier INVITE and a 447-byte 180,
//! and scan + forward of each through the core's own forwarding functions
//! (`pointsman_protocol::forwarded`: the INVITE gets a Record-Route, our Via and Max-Forwards
//! decremented; `strip_top_via`: the 180 loses its top Via). Output buffers are allocated per
//! message, as in the proxy.
//!
//! Run: `cargo bench -p pointsman --bench wire` (add `-- --save-baseline main` once, then
//! `-- --baseline main` after a change; see benches/README.md).

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{forward_invite, INVITE_1K, RINGING};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pointsman_protocol::strip_top_via;
use pointsman_protocol::wire::{scan, Framing, Limits};

/// A response relayed upstream: the production code.
fn relay_response(bytes: &[u8], limits: &Limits) -> Vec<u8> {
    strip_top_via(&scan(bytes, Framing::Datagram, limits).expect("scans"))
}

fn wire(c: &mut Criterion) {
    let limits = Limits::default();
    // The messages must be what they claim, or the figures mean nothing.
    assert_eq!(INVITE_1K.len(), 1024);
    let fwd = forward_invite(&scan(INVITE_1K, Framing::Datagram, &limits).expect("INVITE"));
    assert!(fwd.len() > INVITE_1K.len());
    let stripped = relay_response(RINGING, &limits);
    assert!(stripped.len() < RINGING.len() && stripped.starts_with(b"SIP/2.0 180"));

    let mut g = c.benchmark_group("wire");
    for (name, msg) in [("invite_1k", INVITE_1K), ("ringing_180", RINGING)] {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(format!("scan/{name}"), |b| {
            b.iter(|| {
                scan(black_box(msg), Framing::Datagram, &limits)
                    .map(|m| m.headers.len())
                    .ok()
            })
        });
    }
    g.throughput(Throughput::Bytes(INVITE_1K.len() as u64));
    g.bench_function("forward/invite_1k", |b| {
        b.iter(|| {
            let m = scan(black_box(INVITE_1K), Framing::Datagram, &limits).expect("scans");
            forward_invite(&m)
        })
    });
    g.throughput(Throughput::Bytes(RINGING.len() as u64));
    g.bench_function("forward/ringing_180", |b| {
        b.iter(|| relay_response(black_box(RINGING), &limits))
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
