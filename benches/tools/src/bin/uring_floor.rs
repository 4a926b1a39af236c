//! The floor on io_uring: what `rtp_floor` does (receive, send to the other side's last source,
//! nothing else), with the syscalls batched: one `io_uring_enter` a wake-up submits every send
//! and re-arms every receive (a `RecvMsg` per socket, each send linked before its socket's next
//! receive, registered files, a single-issuer ring with deferred task work). It answers whether
//! batching the syscalls lowers the per-packet cost under the epoll floor on this machine
//! (`benches/media/run.sh --floor --floor-bin uring_floor`; BENCHMARKS.md has the answer).
//!
//! Loopback only; runs until killed (the media bench kills it).
use anyhow::{bail, Context, Result};
use clap::Parser;
use io_uring::{opcode, squeue, types, IoUring};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

#[derive(Parser, Debug)]
#[command(about = "The least an RTP relay costs here, on io_uring")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    #[arg(long, default_value_t = 10000)]
    port_min: u16,
    #[arg(long)]
    flows: usize,
}

struct Slot {
    buf: [u8; 2048],
    from: libc::sockaddr_storage,
    iov: libc::iovec,
    msg: libc::msghdr,
    peer: Option<libc::sockaddr_in>,
    peer_to: libc::sockaddr_in,
    out_iov: libc::iovec,
    out_msg: libc::msghdr,
}

const RECV: u64 = 1 << 32;
const SEND: u64 = 2 << 32;

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.ip.is_loopback() {
        bail!("not loopback");
    }
    let mut sockets = Vec::new();
    for i in 0..args.flows {
        for side in 0..2 {
            let port = u16::try_from(usize::from(args.port_min) + 4 * i + 2 * side)?;
            let s = UdpSocket::bind(SocketAddr::new(args.ip, port)).context("bind")?;
            s.set_nonblocking(true)?;
            sockets.push(s);
        }
    }
    let n = sockets.len();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        // The completion queue may not be smaller than the submission queue (4096).
        .setup_cqsize((n * 4).max(8192) as u32)
        .build(4096)?;
    let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    ring.submitter().register_files(&fds)?;
    let mut slots: Vec<Box<Slot>> = (0..n)
        .map(|_| {
            // SAFETY: plain C structs, zeroed is valid.
            Box::new(unsafe { std::mem::zeroed::<Slot>() })
        })
        .collect();
    // Queues slot `i`'s next receive (linked after a send pushed just before it, if any).
    let arm = |ring: &mut IoUring, slots: &mut [Box<Slot>], i: usize| {
        let s = &mut slots[i];
        s.iov = libc::iovec {
            iov_base: s.buf.as_mut_ptr().cast(),
            iov_len: s.buf.len(),
        };
        s.msg.msg_name = (&mut s.from as *mut libc::sockaddr_storage).cast();
        s.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        s.msg.msg_iov = &mut s.iov;
        s.msg.msg_iovlen = 1;
        let e = opcode::RecvMsg::new(types::Fixed(i as u32), &mut s.msg)
            .build()
            .user_data(RECV | i as u64);
        // SAFETY: the slot outlives the op (boxed, never freed).
        unsafe { ring.submission().push(&e).ok() };
    };
    for i in 0..n {
        arm(&mut ring, &mut slots, i);
    }
    let mut done = Vec::with_capacity(4096);
    loop {
        ring.submit_and_wait(1)?;
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &done {
            let i = (ud & 0xffff_ffff) as usize;
            if ud & RECV != 0 {
                if res < 0 {
                    arm(&mut ring, &mut slots, i);
                    continue;
                }
                let len = res as usize;
                // SAFETY: the sockets are IPv4, so the kernel wrote a sockaddr_in at the start of
                // the storage, which is larger and suitably aligned.
                let from: libc::sockaddr_in = unsafe {
                    std::ptr::read((&slots[i].from as *const libc::sockaddr_storage).cast())
                };
                slots[i].peer.get_or_insert(from);
                let other = i ^ 1;
                let Some(to) = slots[other].peer else {
                    arm(&mut ring, &mut slots, i);
                    continue;
                };
                let s = &mut slots[i];
                s.out_iov = libc::iovec {
                    iov_base: s.buf.as_mut_ptr().cast(),
                    iov_len: len,
                };
                s.peer_to = to;
                s.out_msg.msg_name = (&mut s.peer_to as *mut libc::sockaddr_in).cast();
                s.out_msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                s.out_msg.msg_iov = &mut s.out_iov;
                s.out_msg.msg_iovlen = 1;
                let e = opcode::SendMsg::new(types::Fixed(other as u32), &s.out_msg)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(SEND | i as u64);
                // SAFETY: the message, its iovec, address and buffer live in the boxed slot,
                // which is never freed or reused before the send completes (the slot's next
                // receive is linked after it).
                unsafe { ring.submission().push(&e).ok() };
                arm(&mut ring, &mut slots, i);
            }
            // A failed send cancels its linked receive, which completes with -ECANCELED and is
            // re-armed above; a send's own completion needs nothing.
        }
    }
}
