//! The media relay's metrics: names, labels and handles, registered once on a [`Recorder`], so the
//! packet path does one atomic add per update (the pattern of [`crate::metrics`]). Labels come
//! only from the fixed enums [`Direction`], [`SwitchReason`], [`DropReason`] and [`MediaSide`].
//!
//! It must not: take label values from packets or SDP, allocate on the update path, or render or
//! serve the metrics.

use ::metrics::{Counter, Gauge, Histogram, Recorder};
use std::time::Duration;

use super::{MediaSide, SwitchReason};
use crate::metrics::{describe, Kind, Registrar};

/// Bucket bounds (seconds) of `pointsman_media_switch_gap_seconds`: the last packet forwarded
/// to the carrier from the old branch → the first from the new one. Dense from one packet time
/// (20 ms) to the silence thresholds (60 ms default, 1 s with comfort noise).
pub const SWITCH_GAP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The media relay's series names (see [`DESCRIPTIONS`] for what each counts).
pub mod name {
    pub const SESSIONS: &str = "pointsman_media_sessions";
    pub const PACKETS: &str = "pointsman_media_packets_total";
    pub const BYTES: &str = "pointsman_media_bytes_total";
    pub const SWITCHES: &str = "pointsman_media_switches_total";
    pub const SWITCH_GAP: &str = "pointsman_media_switch_gap_seconds";
    pub const INACTIVITY: &str = "pointsman_media_inactivity_total";
    pub const DROPPED: &str = "pointsman_media_dropped_total";
    pub const PORTS_IN_USE: &str = "pointsman_media_ports_in_use";
    pub const NO_PORTS: &str = "pointsman_media_no_ports_total";
    pub const HANDED_OVER: &str = "pointsman_media_handed_over_streams";
    pub const KERNEL_PACKETS: &str = "pointsman_media_kernel_packets_total";
}

/// Every media metric: its type, name and help text.
pub const DESCRIPTIONS: [(Kind, &str, &str); 11] = [
    (Kind::Gauge, name::SESSIONS, "Media sessions open"),
    (
        Kind::Counter,
        name::PACKETS,
        "RTP and RTCP packets the relay sent, by direction",
    ),
    (
        Kind::Counter,
        name::BYTES,
        "RTP and RTCP bytes (UDP payload) the relay sent, by direction",
    ),
    (
        Kind::Counter,
        name::SWITCHES,
        "Switches of the carrier-bound stream to another branch, by reason",
    ),
    (
        Kind::Histogram,
        name::SWITCH_GAP,
        "Last packet forwarded from the old branch to the first from the new one, in seconds",
    ),
    (
        Kind::Counter,
        name::INACTIVITY,
        "Answered calls torn down for media inactivity, by the silent side",
    ),
    (
        Kind::Counter,
        name::DROPPED,
        "Received media packets not forwarded, by reason (standby: a non-selected branch's, by design)",
    ),
    (Kind::Gauge, name::PORTS_IN_USE, "Relay ports allocated, RTP and RTCP, both sides"),
    (
        Kind::Counter,
        name::NO_PORTS,
        "Sessions or branches refused because the port pool was exhausted",
    ),
    (
        Kind::Gauge,
        name::HANDED_OVER,
        "RTP streams of answered calls forwarded by the kernel relay now (media.kernel_relay)",
    ),
    (
        Kind::Counter,
        name::KERNEL_PACKETS,
        "Of pointsman_media_packets_total, those the kernel relay forwarded, by direction",
    ),
];

/// Which way a relayed packet went: the `direction` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A branch's packet, forwarded to the carrier.
    ToCarrier,
    /// A copy of the carrier's packet, to a branch's cloud.
    ToCloud,
}

impl Direction {
    /// Every direction, in label order.
    pub const ALL: [Direction; 2] = [Direction::ToCarrier, Direction::ToCloud];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToCarrier => "to_carrier",
            Direction::ToCloud => "to_cloud",
        }
    }
}

/// Why a received media packet was not forwarded: the `reason` label of
/// `pointsman_media_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short for its headers, or not version 2.
    Malformed,
    /// Arrived on a port no open session (or branch) owns.
    NoSession,
    /// From a source the leg's source policy does not accept.
    Stranger,
    /// From a branch that is not selected (or not eligible): suppressed by design, not a fault.
    Standby,
    /// Nowhere to send it yet: the receiving side's address is not known (no answer yet).
    NoDestination,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Malformed,
        DropReason::NoSession,
        DropReason::Stranger,
        DropReason::Standby,
        DropReason::NoDestination,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoSession => "no_session",
            DropReason::Stranger => "stranger",
            DropReason::Standby => "standby",
            DropReason::NoDestination => "no_destination",
        }
    }
}

/// The media relay's metric handles. Cloning shares the series.
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    sessions: Gauge,
    packets: [Counter; 2],
    bytes: [Counter; 2],
    switches: [Counter; SwitchReason::ALL.len()],
    switch_gap: Histogram,
    inactivity: [Counter; 2],
    dropped: [Counter; DropReason::ALL.len()],
    ports_in_use: Gauge,
    no_ports: Counter,
    handed_over: Gauge,
    kernel_packets: [Counter; 2],
}

impl MediaMetrics {
    /// Describes every media metric on `recorder` and registers every series.
    pub fn register(recorder: &dyn Recorder) -> MediaMetrics {
        describe(recorder, &DESCRIPTIONS);
        let r = Registrar(recorder);
        let counter = |name, label: Option<(&'static str, &'static str)>| match label {
            Some(label) => r.counter(name, &[label]),
            None => r.counter(name, &[]),
        };
        let gauge = |name| r.gauge(name, &[]);
        MediaMetrics {
            sessions: gauge(name::SESSIONS),
            packets: Direction::ALL
                .map(|d| counter(name::PACKETS, Some(("direction", d.as_str())))),
            bytes: Direction::ALL.map(|d| counter(name::BYTES, Some(("direction", d.as_str())))),
            switches: SwitchReason::ALL
                .map(|r| counter(name::SWITCHES, Some(("reason", r.as_str())))),
            switch_gap: r.histogram(name::SWITCH_GAP),
            inactivity: MediaSide::ALL
                .map(|s| counter(name::INACTIVITY, Some(("side", s.as_str())))),
            dropped: DropReason::ALL.map(|r| counter(name::DROPPED, Some(("reason", r.as_str())))),
            ports_in_use: gauge(name::PORTS_IN_USE),
            no_ports: counter(name::NO_PORTS, None),
            handed_over: gauge(name::HANDED_OVER),
            kernel_packets: Direction::ALL
                .map(|d| counter(name::KERNEL_PACKETS, Some(("direction", d.as_str())))),
        }
    }

    /// Handles that record nothing (tests, tools).
    pub fn noop() -> MediaMetrics {
        MediaMetrics {
            sessions: Gauge::noop(),
            packets: [Counter::noop(), Counter::noop()],
            bytes: [Counter::noop(), Counter::noop()],
            switches: SwitchReason::ALL.map(|_| Counter::noop()),
            switch_gap: Histogram::noop(),
            inactivity: [Counter::noop(), Counter::noop()],
            dropped: DropReason::ALL.map(|_| Counter::noop()),
            ports_in_use: Gauge::noop(),
            no_ports: Counter::noop(),
            handed_over: Gauge::noop(),
            kernel_packets: [Counter::noop(), Counter::noop()],
        }
    }

    /// The core tore a call down (BYE both sides) because `side` was silent.
    pub fn inactivity(&self, side: MediaSide) {
        self.inactivity[side as usize].increment(1);
    }

    pub(crate) fn relayed(&self, direction: Direction, bytes: usize) {
        self.packets[direction as usize].increment(1);
        self.bytes[direction as usize].increment(bytes as u64);
    }
    /// What the offload (the kernel relay) relayed since it was last counted.
    pub(crate) fn relayed_many(&self, direction: Direction, packets: u64, bytes: u64) {
        self.packets[direction as usize].increment(packets);
        self.bytes[direction as usize].increment(bytes);
        self.kernel_packets[direction as usize].increment(packets);
    }
    pub(crate) fn handed_over(&self, delta: i64) {
        add(&self.handed_over, delta);
    }
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].increment(1);
    }
    pub(crate) fn switched(&self, reason: SwitchReason) {
        self.switches[reason as usize].increment(1);
    }
    pub(crate) fn switch_gap(&self, gap: Duration) {
        self.switch_gap.record(gap.as_secs_f64());
    }
    pub(crate) fn no_ports(&self) {
        self.no_ports.increment(1);
    }
    pub(crate) fn sessions(&self, delta: i64) {
        add(&self.sessions, delta);
    }
    pub(crate) fn ports_in_use(&self, delta: i64) {
        add(&self.ports_in_use, delta);
    }
}

fn add(gauge: &Gauge, delta: i64) {
    if delta >= 0 {
        gauge.increment(delta as f64);
    } else {
        gauge.decrement(delta.unsigned_abs() as f64);
    }
}
