#![allow(missing_docs, dead_code, unused_variables)]
use super::sdp::SdpSummary;
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    pub carrier_ip: IpAddr,
    pub cloud_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub silence: Option<Duration>,
    pub silence_comfort_noise: Duration,
    pub strict_source: bool,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub u32);
pub struct MediaMetrics;
impl MediaMetrics {
    pub fn register(_r: &dyn metrics::Recorder) -> MediaMetrics {
        MediaMetrics
    }
    pub fn inactivity(&self, side: MediaSide) {}
}
pub struct MediaPlane;
pub type Forwards = SmallVec<[(SocketId, SocketAddr); 4]>;
#[derive(Clone, Copy, Debug)]
pub struct SessionTimeouts {
    pub media_timeout: Option<Duration>,
}
#[derive(Clone, Debug)]
pub struct MediaSession;
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub address: IpAddr,
    pub ports: SmallVec<[Option<u16>; 4]>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    ErrorResponse,
    EarlyDialogTerminated,
    Cancelled,
    TransportError,
    RtcpBye,
    Silence,
    Answer,
    Preferred,
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerUse {
    HotStandby,
    ColdCodecMismatch { heard: String, offered: String },
    Passthrough,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    Inactive { token: u64, side: MediaSide },
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaSide {
    Carrier,
    Cloud,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("no relay ports left")]
    NoPorts,
    #[error("no media")]
    NoMedia,
    #[error("closed")]
    Closed,
}
impl MediaPlane {
    pub fn new(cfg: MediaConfig, metrics: MediaMetrics) -> MediaPlane {
        MediaPlane
    }
    pub fn sockets(&self) -> Vec<(SocketId, SocketAddr)> {
        Vec::new()
    }
    pub fn on_packet(&self, at: SocketId, from: SocketAddr, packet: &mut [u8], now: Instant, out: &mut Forwards) {}
    pub fn poll(&self, now: Instant, events: &mut Vec<MediaEvent>) {}
    pub fn ports_in_use(&self) -> usize {
        0
    }
    pub fn sessions(&self) -> usize {
        0
    }
    pub fn metrics(&self) -> &MediaMetrics {
        &MediaMetrics
    }
    pub fn open(&self, token: u64, offer: &SdpSummary, carrier_signalling: IpAddr, timeouts: SessionTimeouts, now: Instant) -> Result<MediaSession, MediaError> {
        Err(MediaError::NoPorts)
    }
}
impl MediaSession {
    pub fn carrier_endpoints(&self) -> Endpoints {
        Endpoints { address: IpAddr::from([0, 0, 0, 0]), ports: SmallVec::new() }
    }
    pub fn add_branch(&self, branch: usize, cloud_signalling: IpAddr, now: Instant) -> Result<Endpoints, MediaError> {
        Err(MediaError::NoPorts)
    }
    pub fn on_answer(&self, branch: usize, answer: &SdpSummary, now: Instant) -> AnswerUse {
        AnswerUse::HotStandby
    }
    pub fn on_carrier_sdp(&self, sdp: &SdpSummary, now: Instant) {}
    pub fn branch_failed(&self, branch: usize, reason: SwitchReason, now: Instant) -> bool {
        false
    }
    pub fn answered(&self, branch: usize, now: Instant) {}
    pub fn close(&self) {}
    pub fn selected(&self) -> Option<usize> {
        None
    }
}
