//! The kernel relay: established RTP streams forwarded by an eBPF program (`bpf/relay.bpf.c`)
//! at the traffic-control ingress (tcx) of the interfaces media arrives on, so such a packet
//! costs no system call, no wake-up and no copy to user space. This module owns the program's
//! lifetime and its map of streams: [`KernelRelay::attach`] loads and attaches it,
//! [`KernelRelay::install`] hands it a stream, [`KernelRelay::remove`] takes it back,
//! [`KernelRelay::counters`] reads what it forwarded; as the media plane's [`StreamOffload`].
//!
//! It must not decide anything about media: which stream is handed over, with which rewrite,
//! and when it is taken back are the media plane's. A packet the program does not forward
//! (another source, RTCP, anything unexpected) goes on to the relay's socket as before, so a
//! stream is always also served by user space.
//!
//! The program is attached with tcx links (Linux 6.6+), which the kernel detaches when the
//! process's last reference goes, however it ends: a crashed pointsman leaves no program behind
//! forwarding to ports nobody owns. Older kernels are refused rather than served with the
//! legacy netlink attachment, which outlives the process.

use pointsman_protocol::media::offload::{HandedCounters, HandedStream, RtpRewrite, StreamOffload};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::Duration;

/// Why the kernel relay could not start or take a stream.
#[derive(Debug, thiserror::Error)]
pub enum KernelRelayError {
    #[error("this pointsman was built without the kernel relay (clang was missing at build time)")]
    NotBuilt,
    #[error("the kernel relay needs Linux 6.6 or later (tcx), this kernel is {0}")]
    OldKernel(String),
    #[error(
        "the kernel relay's eBPF program: {0} (loading needs root, or CAP_BPF and CAP_NET_ADMIN)"
    )]
    Program(String),
    #[error("cannot attach the kernel relay to interface {interface:?}: {reason} (needs root, or CAP_BPF and CAP_NET_ADMIN)")]
    Attach { interface: String, reason: String },
    #[error("the kernel relay's stream map: {0}")]
    Map(String),
    #[error("the kernel relay forwards IPv4 only, not {0}")]
    NotIpv4(SocketAddr),
    #[error("no interface of this host holds the media address {0}")]
    NoInterface(std::net::IpAddr),
    #[error("interface {0:?} carries no Ethernet frames (a tunnel or an L3 device): the kernel relay parses Ethernet")]
    NotEthernet(String),
}

/// Whether interface `name` hands the program Ethernet frames: an Ethernet device or the
/// loopback (its hardware type, ARPHRD_ETHER or ARPHRD_LOOPBACK, asked of a socket in this
/// thread's network namespace). A tunnel or an L3 device hands it bare IP, which the program
/// would misread.
fn carries_ethernet(name: &str) -> bool {
    let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) else {
        return false;
    };
    // SAFETY: an all-zero ifreq is a valid value of the C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() {
        return false;
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into the ifreq we own.
    let asked = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let family = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family };
    asked == 0 && matches!(family, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK)
}

/// The interfaces media for `addresses` arrives on: the loopback for a loopback address, else
/// the interface that holds the address. Each once, in the order of `addresses`.
pub fn interfaces_holding(addresses: &[std::net::IpAddr]) -> Result<Vec<String>, KernelRelayError> {
    let held = interface_addresses();
    let mut names: Vec<String> = Vec::new();
    for &ip in addresses {
        let name = if ip.is_loopback() {
            "lo".to_string()
        } else {
            held.iter()
                .find(|(_, a)| std::net::IpAddr::V4(*a) == ip)
                .map(|(n, _)| n.clone())
                .ok_or(KernelRelayError::NoInterface(ip))?
        };
        if !carries_ethernet(&name) {
            return Err(KernelRelayError::NotEthernet(name));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The loopback's interface index, in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Every IPv4 address of this host's network namespace with its interface's index.
fn interface_indices() -> Vec<(std::net::Ipv4Addr, u32)> {
    interface_addresses()
        .into_iter()
        .filter_map(|(name, ip)| {
            let name = std::ffi::CString::new(name).ok()?;
            // SAFETY: if_nametoindex reads the NUL-terminated name we own.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            (index != 0).then_some((ip, index))
        })
        .collect()
}

/// Every (interface, IPv4 address) of this host's network namespace.
fn interface_addresses() -> Vec<(String, std::net::Ipv4Addr)> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated into `list`; freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        out.push((name.to_string_lossy().into_owned(), ip));
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// The key of the program's map: a relay port (network byte order), as `struct stream_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct StreamKey {
    addr: u32,
    port: u16,
    pad: u16,
}

/// The program's map value, as `struct stream` (addresses and ports in network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct StreamValue {
    peer_addr: u32,
    peer_port: u16,
    flags: u16,
    out_src_addr: u32,
    out_src_port: u16,
    pad0: u16,
    out_dst_addr: u32,
    out_dst_port: u16,
    seq_offset: u16,
    ssrc: u32,
    ts_offset: u32,
    pt_map: [u8; 128],
    out_ifindex: u32,
    pad1: u32,
    packets: u64,
    bytes: u64,
    last_seen_ns: u64,
}

/// `STREAM_NORMALISE` in the program.
const FLAG_NORMALISE: u16 = 1;
/// `STREAM_RTCP_TO_USER` in the program.
const FLAG_RTCP_TO_USER: u16 = 2;

// SAFETY: both are plain `repr(C)` data with no padding the kernel reads uninitialised (every
// gap is an explicit field) and every bit pattern valid, as aya's `Pod` requires.
unsafe impl aya::Pod for StreamKey {}
// SAFETY: as above.
unsafe impl aya::Pod for StreamValue {}

fn key_of(local: SocketAddrV4) -> StreamKey {
    StreamKey {
        addr: u32::from(*local.ip()).to_be(),
        port: local.port().to_be(),
        pad: 0,
    }
}

fn v4(addr: SocketAddr) -> Result<SocketAddrV4, KernelRelayError> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(KernelRelayError::NotIpv4(addr)),
    }
}

fn value_of(stream: &HandedStream, out_ifindex: u32) -> Result<StreamValue, KernelRelayError> {
    let (peer, from, to) = (v4(stream.peer)?, v4(stream.out_from)?, v4(stream.out_to)?);
    let (flags, ssrc, seq_offset, ts_offset, pt_map) = match stream.rewrite {
        Some(r) => (
            FLAG_NORMALISE,
            r.ssrc.to_be(),
            r.seq_offset,
            r.ts_offset,
            r.payload_types.map(|pt| pt & 0x7f),
        ),
        None => (0, 0, 0, 0, RtpRewrite::identity_payload_types()),
    };
    let flags = flags
        | if stream.rtcp_to_plane {
            FLAG_RTCP_TO_USER
        } else {
            0
        };
    Ok(StreamValue {
        peer_addr: u32::from(*peer.ip()).to_be(),
        peer_port: peer.port().to_be(),
        flags,
        out_src_addr: u32::from(*from.ip()).to_be(),
        out_src_port: from.port().to_be(),
        pad0: 0,
        out_dst_addr: u32::from(*to.ip()).to_be(),
        out_dst_port: to.port().to_be(),
        seq_offset,
        ssrc,
        ts_offset,
        pt_map,
        out_ifindex,
        pad1: 0,
        packets: 0,
        bytes: 0,
        last_seen_ns: 0,
    })
}

/// The loaded, attached program and its stream map. Dropping it detaches the program.
pub struct KernelRelay {
    streams: Mutex<aya::maps::HashMap<aya::maps::MapData, StreamKey, StreamValue>>,
    /// This host's IPv4 addresses and the interface index of each, read at attach: a stream
    /// leaves by the interface of the relay address it leaves from.
    interfaces: Vec<(std::net::Ipv4Addr, u32)>,
    // Holds the program and its tcx links; declared last so the map goes first.
    _ebpf: aya::Ebpf,
}

impl std::fmt::Debug for KernelRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelRelay").finish_non_exhaustive()
    }
}

#[cfg(pointsman_kernel_relay)]
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

impl KernelRelay {
    /// Whether this build carries the program.
    pub fn built() -> bool {
        cfg!(pointsman_kernel_relay)
    }

    /// Loads the program and attaches it to the ingress of each of `interfaces` (names, in the
    /// calling thread's network namespace). Needs CAP_BPF and CAP_NET_ADMIN (root).
    pub fn attach(interfaces: &[&str]) -> Result<KernelRelay, KernelRelayError> {
        #[cfg(not(pointsman_kernel_relay))]
        {
            let _ = interfaces;
            Err(KernelRelayError::NotBuilt)
        }
        #[cfg(pointsman_kernel_relay)]
        {
            use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
            use aya::programs::LinkOrder;
            use aya::util::KernelVersion;

            let version = KernelVersion::current()
                .map_err(|e| KernelRelayError::OldKernel(format!("unknown ({e})")))?;
            if version < KernelVersion::new(6, 6, 0) {
                return Err(KernelRelayError::OldKernel(format!("{version:?}")));
            }
            let mut ebpf = aya::Ebpf::load(PROGRAM)
                .map_err(|e| KernelRelayError::Program(format!("loading: {e}")))?;
            let program: &mut SchedClassifier = ebpf
                .program_mut("pointsman_relay")
                .ok_or_else(|| {
                    KernelRelayError::Program("no pointsman_relay in the object".into())
                })?
                .try_into()
                .map_err(|e| KernelRelayError::Program(format!("{e}")))?;
            program
                .load()
                .map_err(|e| KernelRelayError::Program(format!("verifying: {e}")))?;
            for interface in interfaces {
                program
                    .attach_with_options(
                        interface,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| KernelRelayError::Attach {
                        interface: (*interface).to_string(),
                        reason: e.to_string(),
                    })?;
            }
            let map = ebpf
                .take_map("STREAMS")
                .ok_or_else(|| KernelRelayError::Map("no STREAMS map in the object".into()))?;
            let streams = aya::maps::HashMap::try_from(map)
                .map_err(|e| KernelRelayError::Map(e.to_string()))?;
            Ok(KernelRelay {
                streams: Mutex::new(streams),
                interfaces: interface_indices(),
                _ebpf: ebpf,
            })
        }
    }

    /// Hands the stream arriving at relay port `at` to the program, replacing what it had
    /// for that port (its counters start again).
    pub fn install(&self, at: SocketAddr, stream: &HandedStream) -> Result<(), KernelRelayError> {
        let from = v4(stream.out_from)?;
        let out_ifindex = if from.ip().is_loopback() {
            LOOPBACK_IFINDEX
        } else {
            self.interfaces
                .iter()
                .find(|(ip, _)| ip == from.ip())
                .map(|&(_, index)| index)
                .ok_or(KernelRelayError::NoInterface(std::net::IpAddr::V4(
                    *from.ip(),
                )))?
        };
        let (key, value) = (key_of(v4(at)?), value_of(stream, out_ifindex)?);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .insert(key, value, 0)
            .map_err(|e| KernelRelayError::Map(format!("installing {at}: {e}")))
    }

    /// Takes the stream of relay port `at` back: its next datagram reaches user space.
    /// Returns its last counters, or none if the program had no stream there.
    pub fn remove(&self, at: SocketAddr) -> Option<HandedCounters> {
        let key = key_of(v4(at).ok()?);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let last = streams.get(&key, 0).ok();
        let _ = streams.remove(&key);
        last.map(|v| counters_of(&v))
    }

    /// What the program forwarded of the stream at `at` so far.
    pub fn counters(&self, at: SocketAddr) -> Option<HandedCounters> {
        let key = key_of(v4(at).ok()?);
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.get(&key, 0).ok().map(|v| counters_of(&v))
    }
}

impl StreamOffload for KernelRelay {
    fn install(&self, at: SocketAddr, stream: &HandedStream) -> bool {
        match KernelRelay::install(self, at, stream) {
            Ok(()) => true,
            Err(e) => {
                // The plane goes on relaying the stream itself.
                tracing::debug!("media: the kernel relay did not take {at}: {e}");
                false
            }
        }
    }
    fn remove(&self, at: SocketAddr) -> Option<HandedCounters> {
        KernelRelay::remove(self, at)
    }
    fn counters(&self, at: SocketAddr) -> Option<HandedCounters> {
        KernelRelay::counters(self, at)
    }
}

/// The monotonic clock now, as the program's `bpf_ktime_get_ns` reads it.
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn counters_of(v: &StreamValue) -> HandedCounters {
    HandedCounters {
        packets: v.packets,
        bytes: v.bytes,
        idle: (v.last_seen_ns > 0)
            .then(|| monotonic_now().saturating_sub(Duration::from_nanos(v.last_seen_ns))),
    }
}

#[cfg(test)]
mod tests;
