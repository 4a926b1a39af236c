//! The media relay's packet path, per packet: a carrier packet copied to two clouds, the heard
//! cloud's packet normalised to the carrier, and the standby's packet suppressed. What a relayed
//! packet costs in the relay's own logic, without the system calls (the media load bench,
//! `benches/media/run.sh`, measures the whole relay against rtpengine).
//!
//! Run: `cargo bench -p pointsman --bench media`.

// Benchmark setup: a failed assumption stops the benchmark, as a failed test would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/media.rs"]
mod media;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media::{rtp, MediaRig, CARRIER_MEDIA, CLOUD_MEDIA};
use std::net::SocketAddr;

fn packet_path(c: &mut Criterion) {
    let mut rig = MediaRig::new();
    let carrier: SocketAddr = CARRIER_MEDIA.parse().unwrap();
    let clouds: [SocketAddr; 2] = [
        CLOUD_MEDIA[0].parse().unwrap(),
        CLOUD_MEDIA[1].parse().unwrap(),
    ];
    let mut g = c.benchmark_group("media");
    g.throughput(Throughput::Elements(1));
    let mut packet = rtp(2, 0xcafe);
    let mut seq = 2u16;
    g.bench_function("carrier_to_two_clouds", |b| {
        b.iter(|| {
            let socket = rig.carrier_socket;
            assert_eq!(rig.relay(socket, carrier, &mut packet), 2);
        })
    });
    g.bench_function("heard_cloud_to_carrier", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            let socket = rig.cloud_sockets[0];
            assert_eq!(rig.relay(socket, clouds[0], &mut packet), 1);
        })
    });
    g.bench_function("standby_suppressed", |b| {
        b.iter(|| {
            let socket = rig.cloud_sockets[1];
            assert_eq!(rig.relay(socket, clouds[1], &mut packet), 0);
        })
    });
    g.finish();
}

criterion_group!(benches, packet_path);
criterion_main!(benches);
