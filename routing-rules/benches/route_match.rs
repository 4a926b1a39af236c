//! Route matching speed with 10, 10,000 and 1,000,000 configured DIDs (exact `to` numbers,
//! 1,000 per route, then a default route): time per `Router::route_for` call for a DID that is
//! configured (hit) and for one that is not (miss: falls through to the default route).
//!
//! Run: `cargo bench -p routing-rules --bench route_match -- --warm-up-time 1 --measurement-time 3`

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use routing_rules::spec::{DestinationSpec, MatchSpec, RouteSpec};
use routing_rules::{Call, Router};

const PER_ROUTE: usize = 1_000;

/// The `i`th configured DID: `+1` and ten scattered digits, written with separators as
/// operators do.
fn did(i: u64) -> String {
    let n = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) % 9_000_000_000 + 1_000_000_000;
    let s = n.to_string();
    format!("+1 {}-{}-{}", &s[..3], &s[3..6], &s[6..])
}

fn router(dids: usize) -> Router {
    let destinations = vec![DestinationSpec {
        name: "cloud".into(),
        address: "127.0.0.1:5070".into(),
        transport: Default::default(),
        provisional_timeout: None,
        cancel_mode: Default::default(),
        trusted: None,
        weight: None,
        priority: None,
        tags: Vec::new(),
        ..DestinationSpec::default()
    }];
    let mut routes: Vec<RouteSpec> = (0..dids.div_ceil(PER_ROUTE))
        .map(|r| RouteSpec {
            name: format!("block-{r}"),
            conditions: Some(MatchSpec {
                to: (r * PER_ROUTE..((r + 1) * PER_ROUTE).min(dids))
                    .map(|i| did(i as u64))
                    .collect(),
                ..MatchSpec::default()
            }),
            destinations: Some(vec!["cloud".into()]),
            ..RouteSpec::default()
        })
        .collect();
    routes.push(RouteSpec {
        name: "default".into(),
        destinations: Some(vec!["cloud".into()]),
        ..RouteSpec::default()
    });
    Router::compile(&destinations, &[], &routes).expect("bench rules compile")
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for dids in [10usize, 10_000, 1_000_000] {
        let router = router(dids);
        // Called numbers as a carrier sends them: digits only, with '+'.
        let hits: Vec<String> = (0..1024u64)
            .map(|k| did(k * 7919 % dids as u64).replace([' ', '-'], ""))
            .collect();
        let misses: Vec<String> = (0..1024u64)
            .map(|k| did(dids as u64 + k).replace([' ', '-'], ""))
            .collect();
        assert!(hits.iter().all(|n| {
            let call = Call {
                to_user: Some(n),
                ..Call::default()
            };
            router.route(router.route_for(&call).unwrap()).name != "default"
        }));
        for (kind, numbers) in [("hit", &hits), ("miss", &misses)] {
            group.bench_with_input(BenchmarkId::new(kind, dids), numbers, |b, numbers| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    let call = Call {
                        to_user: Some(&numbers[i]),
                        listener: Some("carrier"),
                        ..Call::default()
                    };
                    black_box(router.route_for(black_box(&call)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
