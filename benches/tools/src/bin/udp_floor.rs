//! The load bench's floor (`benches/load/run.sh --floor`): the least any proxy can add on this
//! machine. One thread, one blocking socket: a datagram from the trunk goes to the carrier that
//! sent the last one, anything else goes to the trunk, unread and unchanged. What it adds to a
//! message is one wake-up, one `recvfrom` and one `sendto`: the scheduler's and the kernel's
//! share of the time inside a proxy, which no SIP code can remove.
//!
//! It asks the scheduler for what a pointsman worker asks for: SCHED_FIFO at REALTIME_PRIORITY
//! when that is above 0, otherwise a slice of SLICE_US microseconds (default: the slice a
//! lightly loaded pointsman worker asks for under `node.scheduler_slice = "auto"`, since the
//! floor serves the low-rate latency bench; 0 leaves the kernel's).
//!
//! `udp_floor LISTEN TRUNK [REALTIME_PRIORITY [SLICE_US]]`, e.g.
//! `udp_floor 127.0.0.1:25060 127.0.0.1:25070`.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_slice = pointsman::sched::AUTO_SLICE.as_micros() as u64;
    let parsed = match args.as_slice() {
        [listen, trunk, rest @ ..] if rest.len() <= 2 => listen
            .parse::<SocketAddr>()
            .ok()
            .zip(trunk.parse::<SocketAddr>().ok())
            .zip(rest.first().map_or(Some(0), |p| p.parse::<u8>().ok()))
            .zip(
                rest.get(1)
                    .map_or(Some(default_slice), |s| s.parse::<u64>().ok()),
            ),
        _ => None,
    };
    let Some((((listen, trunk), priority), slice_us)) = parsed else {
        eprintln!("usage: udp_floor LISTEN TRUNK [REALTIME_PRIORITY [SLICE_US]]");
        return ExitCode::from(2);
    };
    if priority > 0 {
        if let Err(e) = pointsman::sched::set_realtime(priority) {
            eprintln!("udp_floor: cannot use SCHED_FIFO {priority}: {e}");
        }
    } else if slice_us > 0 {
        if let Err(e) = pointsman::sched::set_slice(Duration::from_micros(slice_us)) {
            eprintln!("udp_floor: cannot ask for a {slice_us} us slice: {e}");
        }
    }
    let socket = match UdpSocket::bind(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_floor: cannot bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; 65_535];
    let mut carrier: Option<SocketAddr> = None;
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let to = if from == trunk {
            match carrier {
                Some(c) => c,
                None => continue,
            }
        } else {
            carrier = Some(from);
            trunk
        };
        let _ = socket.send_to(&buf[..n], to);
    }
}
