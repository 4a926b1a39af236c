//! The media relay bench's floor (`benches/media/run.sh --floor`): the least any userspace RTP
//! relay can cost per packet on this machine. One thread, one level-triggered epoll over every
//! socket, and per datagram one `recvfrom` and one `sendto`: no RTP parsing, no normalisation,
//! no source check, no metrics, no runtime. What pointsman and rtpengine spend above it is their
//! own; what both spend up to it is the kernel's.
//!
//! Flow `i` has two relay sockets, `port_min + 4i` (the carrier sends there) and
//! `port_min + 4i + 2` (the cloud sends there). Each latches the first source it hears and sends
//! what the other one receives to it.
//!
//! With `--kernel` it is the floor of forwarding in the kernel instead: once both ends of a
//! flow have been heard, it hands the flow's two directions to pointsman's kernel relay
//! (`pointsman::transport::kernel_relay`, the eBPF program at the loopback's ingress), the
//! cloud → carrier direction with an RTP rewrite as pointsman's normalisation makes, and
//! their packets never reach it again. Its own CPU is then ~0: what forwarding costs is
//! spent in the senders' system calls, so compare the machine's CPU (media_bench reports it).
//!
//! `rtp_floor --ip 127.0.0.1 --port-min 10000 --flows 500 [--kernel]` (runs until killed)

use anyhow::{bail, Context, Result};
use clap::Parser;
use pointsman::transport::kernel_relay::KernelRelay;
use pointsman_protocol::media::offload::{HandedStream, RtpRewrite};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

#[derive(Parser, Debug)]
#[command(about = "The least an RTP relay costs here: recvfrom + sendto per packet")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    #[arg(long, default_value_t = 10000)]
    port_min: u16,
    #[arg(long)]
    flows: usize,
    /// Hand each flow to the kernel relay once both its ends were heard (needs root).
    #[arg(long)]
    kernel: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.ip.is_loopback() {
        bail!("{} is not a loopback address", args.ip);
    }
    let mut sockets = Vec::with_capacity(args.flows * 2);
    for i in 0..args.flows {
        for side in 0..2 {
            let port = usize::from(args.port_min) + 4 * i + 2 * side;
            let port = u16::try_from(port).context("too many flows for the port range")?;
            let s = UdpSocket::bind(SocketAddr::new(args.ip, port))
                .with_context(|| format!("binding port {port}"))?;
            s.set_nonblocking(true)?;
            sockets.push(s);
        }
    }
    let mut peers: Vec<Option<SocketAddr>> = vec![None; sockets.len()];
    let kernel = if args.kernel {
        Some(KernelRelay::attach(&["lo"]).context("attaching the kernel relay to lo")?)
    } else {
        None
    };
    let mut handed_over = vec![false; args.flows];
    // SAFETY: epoll_create1 takes no pointers; the result is checked.
    let epoll = unsafe { libc::epoll_create1(0) };
    if epoll < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    for (i, s) in sockets.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `event` is a valid epoll_event we own; the fd is open for as long as
        // `sockets` lives (the whole run).
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut event) } != 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: `events` has room for its length of events, which is what we pass.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("epoll_wait: {e}");
        }
        for event in events.iter().take(n as usize) {
            let i = event.u64 as usize;
            let Some(socket) = sockets.get(i) else {
                continue;
            };
            // Level-triggered: read one datagram; a socket with more is reported again.
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(peer) = peers.get_mut(i) {
                peer.get_or_insert(from);
            }
            if let Some(relay) = &kernel {
                let flow = i / 2;
                if !handed_over[flow] {
                    handed_over[flow] = hand_over(relay, &sockets, &peers, flow)?;
                }
            }
            let other = i ^ 1;
            if let (Some(out), Some(Some(to))) = (sockets.get(other), peers.get(other)) {
                if let Some(packet) = buf.get(..len) {
                    let _ = out.send_to(packet, to);
                }
            }
        }
    }
}

/// Hands both directions of `flow` to the kernel once both its ends are known; true if done.
fn hand_over(
    relay: &KernelRelay,
    sockets: &[UdpSocket],
    peers: &[Option<SocketAddr>],
    flow: usize,
) -> Result<bool> {
    let local = |i: usize| -> Result<Option<SocketAddr>> {
        Ok(sockets.get(i).map(|s| s.local_addr()).transpose()?)
    };
    let (carrier_side, cloud_side) = (2 * flow, 2 * flow + 1);
    let (Some(Some(carrier)), Some(Some(cloud))) = (peers.get(carrier_side), peers.get(cloud_side))
    else {
        return Ok(false);
    };
    let (carrier, cloud) = (*carrier, *cloud);
    let (Some(carrier_port), Some(cloud_port)) = (local(carrier_side)?, local(cloud_side)?) else {
        return Ok(false);
    };
    relay.install(
        carrier_port,
        &HandedStream {
            peer: carrier,
            out_from: cloud_port,
            out_to: cloud,
            rewrite: None,
            rtcp_to_plane: true,
        },
    )?;
    relay.install(
        cloud_port,
        &HandedStream {
            peer: cloud,
            out_from: carrier_port,
            out_to: carrier,
            rewrite: Some(RtpRewrite {
                ssrc: 0x5017_5A1E ^ flow as u32,
                seq_offset: 1000,
                ts_offset: 160_000,
                payload_types: RtpRewrite::identity_payload_types(),
            }),
            rtcp_to_plane: true,
        },
    )?;
    Ok(true)
}
