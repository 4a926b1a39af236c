//! The proxy core end to end, sans-IO: whole calls (INVITE/100/180/200/ACK/BYE/200, SDP offer
//! and answer, hold time 0) through a `Core` built from a config as `pointsman run` builds it,
//! with a fake clock advanced 1 ms per call so that timers fire and transactions are reaped as in
//! a node at 1,000 calls/s (some 32,000 calls' transactions are held at any time). Only the time
//! spent inside `Core::on_message` / `Core::on_timer` is measured; building the peers' messages
//! is not.
//!
//! - `core/call`: one whole call, every message and the timers that fell due after it.
//! - `core/msg/<step>`: the same calls, timing only one step (`timers`: every timer fired in the
//!   1 ms after the call — on average one call's worth).
//! - `core/msg/INVITE-cold`: the INVITE after 64 MB were written over (untimed), so that it
//!   meets empty caches as at a low call rate, where other processes run between two messages:
//!   the figure that sets the time inside the proxy there, several times the warm one.
//! - `tx/*`: what the transaction layer exposes publicly: keying a request and a response (the
//!   hashes the core's tables are indexed by), one call's four state machines (server and client
//!   INVITE through 100/180/200), and a replica of the core's table type (`DashMap<u64, Arc<..>>`
//!   holding 32,768 entries: insert, match, remove). The core's own tables are private; their
//!   real cost is inside `core/call`.
//!
//! Run: `cargo bench -p pointsman --bench calls`.

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{Sim, INVITE_1K, RINGING, STEPS};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dashmap::DashMap;
use pointsman_protocol::transaction::{ClientInvite, Keys, ServerInvite, TimerConfig};
use pointsman_protocol::wire::{scan, Framing, Limits};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn core(c: &mut Criterion) {
    let mut sim = Sim::warm();
    let (servers, clients, _) = sim.h.core.table_sizes();
    assert!(
        servers > 1_000 && clients > 1_000,
        "timers should keep ~32 s of calls: {servers} server, {clients} client transactions"
    );

    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += sim.call().iter().map(|s| s.0).sum::<Duration>();
            }
            total
        })
    });
    for (i, step) in STEPS.iter().enumerate() {
        g.bench_function(format!("msg/{step}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += sim.call()[i].0;
                }
                total
            })
        });
    }
    sim.evict_before_invite = Some(vec![0u8; common::EVICT_BYTES]);
    g.bench_function("msg/INVITE-cold", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += sim.call()[0].0;
            }
            total
        })
    });
    sim.evict_before_invite = None;
    g.finish();
}

fn transactions(c: &mut Criterion) {
    let limits = Limits::default();
    let keys = Keys::new();
    let invite = scan(INVITE_1K, Framing::Datagram, &limits).expect("INVITE");
    let ringing = scan(RINGING, Framing::Datagram, &limits).expect("180");
    let mut g = c.benchmark_group("tx");
    g.bench_function("key/server_of_invite", |b| {
        b.iter(|| keys.server(black_box(&invite)))
    });
    g.bench_function("key/client_of_180", |b| {
        b.iter(|| keys.client_of_response(black_box(&ringing)))
    });

    let timers = TimerConfig::default();
    let request = Bytes::from_static(INVITE_1K);
    let response = Bytes::from_static(RINGING);
    let now = Instant::now();
    g.bench_function("machines/invite_call", |b| {
        let mut acts = Vec::with_capacity(16);
        b.iter(|| {
            acts.clear();
            let mut server = ServerInvite::new(false, timers);
            let mut client = ClientInvite::start(request.clone(), false, timers, now, &mut acts);
            for code in [100, 180, 200] {
                let d = client.on_response(code, now, &mut acts);
                if code > 100 {
                    server.respond(code, response.clone(), now, &mut acts);
                }
                black_box(d);
            }
            black_box((server.state(), client.state(), acts.len()))
        })
    });

    // A replica of the core's transaction table type, at its steady-state size for 1,000 calls/s.
    let table: DashMap<u64, Arc<Mutex<u64>>> = DashMap::new();
    let live = 32_768u64;
    let key = |n: u64| keys.of(&[&n.to_le_bytes()]);
    for n in 0..live {
        table.insert(key(n), Arc::new(Mutex::new(n)));
    }
    let mut n = live;
    g.bench_function("table_replica/insert_match_remove", |b| {
        b.iter(|| {
            let k = key(n);
            table.insert(k, Arc::new(Mutex::new(n)));
            let hit = table.get(&k).map(|e| e.value().clone());
            table.remove(&key(n - live));
            n += 1;
            hit
        })
    });
    g.finish();
}

criterion_group!(benches, core, transactions);
criterion_main!(benches);
