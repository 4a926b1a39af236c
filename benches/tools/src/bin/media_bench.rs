//! The media relay bench (`benches/media/run.sh`): what one RTP relay — pointsman's or
//! rtpengine's, userspace — costs per relayed packet, on the same flows.
//!
//! It starts the relay itself (with a generated config), sets up `--flows` calls, each with a
//! "carrier" socket and a "cloud" socket on the loopback, and has both ends of every call send
//! 172-byte PCMA RTP at 50 packets/s to the relay port the relay gave them, so the relay moves
//! 2 × 50 × flows packets/s. Over the measurement window (after a warm-up) it reads the relay
//! process's CPU time (utime + stime, /proc/PID/stat) and counts what was sent; after the run it
//! lets the sinks read everything that came (at high rates they read behind, their backlog
//! waiting in socket buffers) and counts the loss over the whole run. It prints one
//! `RESULT key=value ...` line: offered and relayed packets/s (relayed: sent in the window less
//! the run's loss), loss, and CPU-µs per relayed packet (all of the relay's CPU in the window, its idle cost
//! included; that idle cost, measured for 1 s with the calls set up and nothing flowing, is
//! printed too).
//!
//! rtpengine's calls are set up over its NG control protocol (bencode over UDP: `offer` with the
//! carrier's SDP, `answer` with the cloud's); pointsman's over SIP (an INVITE with the carrier's
//! SDP offer, a built-in cloud UAS answers 200 with the cloud's, an ACK). Either way the relay
//! ports are read from the SDP the relay rewrote.
//!
//! It sends only to the loopback, runs for a bounded time, and kills the relay when it exits
//! (the relay also gets SIGTERM if this process dies: PR_SET_PDEATHSIG).
//!
//! `media_bench --relay rtpengine --flows 250 --duration 10s`

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use pointsman_sim as sim;
use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RelayKind {
    Pointsman,
    Rtpengine,
    /// The floor: `rtp_floor`, recvfrom + sendto per packet and nothing else.
    Floor,
    /// No relay: each end sends straight to the other. What the machine spends then is the
    /// bench's own share; a relay's machine cost less it is what the relay adds.
    Direct,
}

impl RelayKind {
    fn name(self) -> &'static str {
        match self {
            RelayKind::Pointsman => "pointsman",
            RelayKind::Rtpengine => "rtpengine",
            RelayKind::Floor => "floor",
            RelayKind::Direct => "direct",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "RTP relay bench: CPU per relayed packet of pointsman or rtpengine")]
struct Args {
    /// Which relay to start and measure.
    #[arg(long, value_enum)]
    relay: RelayKind,
    /// Calls; each moves 2 × 50 packets/s through the relay.
    #[arg(long, default_value_t = 50)]
    flows: usize,
    /// Measurement window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Streaming before the window opens (the relay learns its peers, caches warm up).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Threads that send (each paces its share of the streams on absolute deadlines).
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Loopback address of the carrier sockets.
    #[arg(long, default_value = "127.0.0.10")]
    carrier_ip: IpAddr,
    /// Loopback address of the cloud sockets.
    #[arg(long, default_value = "127.0.0.30")]
    cloud_ip: IpAddr,
    /// Media port range the relay allocates from (default: from 10000, 8 ports a flow, at
    /// least 400). Below the kernel's ephemeral range (32768-60999 by default), where this
    /// bench's own sockets and anyone else's land, and no wider than needed: pointsman binds
    /// its whole range when it starts.
    #[arg(long)]
    ports: Option<String>,
    /// rtpengine binary.
    #[arg(long, default_value = "rtpengine")]
    rtpengine: PathBuf,
    /// rtpengine's NG control port (127.0.0.1).
    #[arg(long, default_value_t = 22230)]
    ng_port: u16,
    /// pointsman binary.
    #[arg(long, default_value = "target/release/pointsman")]
    pointsman: PathBuf,
    /// pointsman's SIP port (127.0.0.1); its admin API takes the next one.
    #[arg(long, default_value_t = 25560)]
    sip_port: u16,
    /// Where configs and relay logs go (default: a new directory under /tmp).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// pointsman: leave `[media]` and the route's `media = "relay"` out of the config (a
    /// build without the relay then starts, and the bench stops at "did not anchor media").
    #[arg(long)]
    no_media_config: bool,
    /// pointsman: `media.kernel_relay = true` (answered calls' RTP forwarded by the kernel
    /// relay; needs root). Its cost is then in the machine's CPU, not the process's.
    #[arg(long)]
    kernel_relay: bool,
    /// The floor's program: `rtp-floor` (epoll, one recvfrom and one sendto a packet),
    /// `uring-floor` (the same on io_uring, syscalls batched) or `kernel-floor` (rtp_floor
    /// handing each flow to pointsman's kernel relay once both ends were heard).
    #[arg(long, value_enum, default_value = "rtp-floor")]
    floor_bin: FloorBin,
}

/// The floor programs (beside this one).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
#[allow(clippy::enum_variant_names)] // named as the programs and --floor-bin's values
enum FloorBin {
    RtpFloor,
    UringFloor,
    KernelFloor,
}

impl FloorBin {
    fn name(self) -> &'static str {
        match self {
            FloorBin::RtpFloor => "rtp_floor",
            FloorBin::UringFloor => "uring_floor",
            FloorBin::KernelFloor => "kernel_floor",
        }
    }

    /// The program, and its arguments besides the ports and flows.
    fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            FloorBin::RtpFloor => ("rtp_floor", &[]),
            FloorBin::UringFloor => ("uring_floor", &[]),
            FloorBin::KernelFloor => ("rtp_floor", &["--kernel"]),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.flows == 0 || args.senders == 0 {
        bail!("--flows and --senders must be at least 1");
    }
    for ip in [args.carrier_ip, args.cloud_ip] {
        if !ip.is_loopback() {
            bail!("{ip} is not a loopback address: this bench sends only to the loopback");
        }
    }
    let (port_min, port_max) = match &args.ports {
        Some(range) => parse_ports(range)?,
        None => {
            let wanted = (args.flows * 8).max(400);
            let max = u16::try_from(FIRST_MEDIA_PORT as usize + wanted - 1)
                .ok()
                .filter(|&m| m < 32768)
                .ok_or_else(|| {
                    anyhow!(
                        "{} flows need more media ports than fit below 32768",
                        args.flows
                    )
                })?;
            (FIRST_MEDIA_PORT, max)
        }
    };
    let control_ports = [
        ("--ng-port", args.ng_port),
        ("--sip-port", args.sip_port),
        ("--sip-port + 1 (admin)", args.sip_port.wrapping_add(1)),
    ];
    for (what, port) in control_ports {
        if (port_min..=port_max).contains(&port) {
            bail!("{what} {port} is inside the media ports {port_min}-{port_max}");
        }
    }
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("media-bench.{}", std::process::id())),
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let mut flows = Vec::with_capacity(args.flows);
    for i in 0..args.flows {
        flows.push(FlowSockets::bind(i, args.carrier_ip, args.cloud_ip)?);
    }
    let (relay, targets) = match args.relay {
        RelayKind::Rtpengine => {
            let (relay, targets) = rtpengine::start(args, &work, port_min, port_max, &flows)?;
            (Some(relay), targets)
        }
        RelayKind::Pointsman => {
            let (relay, targets) = pointsman::start(args, &work, port_min, port_max, &flows)?;
            (Some(relay), targets)
        }
        RelayKind::Floor => {
            let (relay, targets) = start_floor(args, &work, port_min, &flows)?;
            (Some(relay), targets)
        }
        RelayKind::Direct => (None, direct_targets(&flows)?),
    };
    let result = measure(args, (port_min, port_max), relay.as_ref(), &flows, &targets);
    if let RelayKind::Rtpengine = args.relay {
        rtpengine::delete_all(args.ng_port, flows.len());
    }
    drop(relay);
    let r = result?;
    eprintln!(
        "media_bench: {} {} flows: offered {:.0} pps, relayed {:.0} pps, loss {:.3} %, \
         {:.2} CPU-µs/packet ({:.1} % of a core), machine {:.2} CPU-µs/packet; {} streams got nothing, {} misdelivered; \
         dropped at full buffers: {} by the relay's sockets, {} by the bench's",
        args.relay.name(),
        args.flows,
        r.offered_pps,
        r.relayed_pps,
        r.loss_pct,
        r.cpu_us_per_packet,
        r.relay_cpu_pct,
        r.machine_cpu_us_per_packet,
        r.dead_streams,
        r.misdelivered,
        r.drops.relay,
        r.drops.sinks,
    );
    println!(
        "RESULT relay={} flows={} target_pps={} offered_pps={:.0} relayed_pps={:.0} \
         loss_pct={:.3} cpu_us_per_pkt={:.3} machine_cpu_us_per_pkt={:.3} relay_cpu_pct={:.1} idle_cpu_pct={:.1} \
         bench_cpu_pct={:.1} sinks_read_in_window_pps={:.0} dead_streams={} misdelivered={} \
         send_errors={} \
         relay_socket_drops={} sink_socket_drops={} udp_rcvbuf_errors={} \
         udp_sndbuf_errors={} window_s={:.2}",
        args.relay.name(),
        args.flows,
        args.flows * 100,
        r.offered_pps,
        r.relayed_pps,
        r.loss_pct,
        r.cpu_us_per_packet,
        r.machine_cpu_us_per_packet,
        r.relay_cpu_pct,
        r.idle_cpu_pct,
        r.bench_cpu_pct,
        r.read_in_window_pps,
        r.dead_streams,
        r.misdelivered,
        r.send_errors,
        r.drops.relay,
        r.drops.sinks,
        r.drops.rcvbuf_errors,
        r.drops.sndbuf_errors,
        r.window.as_secs_f64(),
    );
    Ok(())
}

/// Starts the floor (`rtp_floor` or `uring_floor`) (beside this program) on the 127.0.0.1 ports from `port_min`: flow `i`'s
/// carrier sends to `port_min + 4i`, its cloud to `port_min + 4i + 2`.
fn start_floor(
    args: &Args,
    work: &Path,
    port_min: u16,
    flows: &[FlowSockets],
) -> Result<(RelayProcess, Vec<Targets>)> {
    let (program, extra) = args.floor_bin.program();
    let exe = std::env::current_exe()?.with_file_name(program);
    let log = work.join(format!("{}.log", args.floor_bin.name()));
    let mut cmd = Command::new(&exe);
    cmd.args(extra)
        .arg("--port-min")
        .arg(port_min.to_string())
        .arg("--flows")
        .arg(args.flows.to_string());
    let mut relay = RelayProcess::spawn(args.floor_bin.name(), &mut cmd, &log)?;
    std::thread::sleep(Duration::from_millis(300));
    relay.check_alive(&log)?;
    let targets = (0..flows.len())
        .map(|i| {
            let port = |side: usize| {
                u16::try_from(usize::from(port_min) + 4 * i + 2 * side)
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                    .map_err(|_| anyhow!("too many flows for the port range"))
            };
            Ok(Targets {
                carrier_to: port(0)?,
                cloud_to: port(1)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((relay, targets))
}

/// Where the default media port range starts.
const FIRST_MEDIA_PORT: u16 = 10000;

fn parse_ports(range: &str) -> Result<(u16, u16)> {
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| anyhow!("--ports {range}: expected MIN-MAX"))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a >= b {
        bail!("--ports {range}: MIN must be below MAX");
    }
    Ok((a, b))
}

/// The two ends of one call.
struct FlowSockets {
    carrier: UdpSocket,
    cloud: UdpSocket,
}

impl FlowSockets {
    fn bind(i: usize, carrier_ip: IpAddr, cloud_ip: IpAddr) -> Result<FlowSockets> {
        let bind = |ip| {
            UdpSocket::bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding flow {i}'s socket on {ip}"))
        };
        Ok(FlowSockets {
            carrier: bind(carrier_ip)?,
            cloud: bind(cloud_ip)?,
        })
    }

    fn carrier_addr(&self) -> Result<SocketAddr> {
        Ok(self.carrier.local_addr()?)
    }

    fn cloud_addr(&self) -> Result<SocketAddr> {
        Ok(self.cloud.local_addr()?)
    }
}

/// Where each end of a call sends: the relay ports it was given.
#[derive(Clone, Copy, Debug)]
struct Targets {
    /// The relay port the carrier sends to (from the answer the carrier got).
    carrier_to: SocketAddr,
    /// The relay port the cloud sends to (from the offer the cloud got).
    cloud_to: SocketAddr,
}

/// A relay process this bench started: killed (and reaped) when dropped.
struct RelayProcess {
    child: Child,
    name: &'static str,
}

impl RelayProcess {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<RelayProcess> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling (child) process and
        // is async-signal-safe; nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(RelayProcess { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the relay already exited.
    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        // SIGTERM first (rtpengine and pointsman both exit cleanly on it), then SIGKILL.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of a child this process has not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Idle time of every CPU so far, and how many CPUs there are (/proc/stat's idle and iowait:
/// measured, not sampled, on a tickless kernel, unlike its busy fields, which ticks sample and
/// a workload paced by timers hides from). The machine's busy time over a window is then the
/// window times the CPUs less this: whoever it was spent for. What a relay that forwards in the
/// kernel costs shows only there, spent in its senders' system calls and softirqs.
fn machine_idle() -> Result<(Duration, u32)> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut lines = stat.lines();
    let line = lines
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat: no cpu line"))?;
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().context("/proc/stat: a cpu field"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait ...
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Ok((
        Duration::from_micros(idle * 1_000_000 / hz),
        u32::try_from(cpus).unwrap_or(1).max(1),
    ))
}

/// CPU time (user + system, all threads) of process `pid` so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no ')'"))?;
    // Fields 14 and 15 of stat(5); field 3 (state) is the first after ')'.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: short"))?
            .parse::<u64>()
            .context("/proc/PID/stat: utime/stime")
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Ok(Duration::from_micros(total * 1_000_000 / hz))
}

/// Datagrams the kernel dropped at full receive buffers (the `drops` column of /proc/net/udp),
/// summed over the relay's sockets (127.0.0.1, a port in the media range) and over the bench's
/// sinks (the carrier and cloud IPs): where a loss happened.
#[derive(Clone, Copy, Debug, Default)]
struct Drops {
    relay: u64,
    sinks: u64,
    /// Machine-wide (/proc/net/snmp Udp): receive buffer errors, and sends refused for want
    /// of buffer, by anyone (a relay's failed sends show here).
    rcvbuf_errors: u64,
    sndbuf_errors: u64,
}

/// Udp RcvbufErrors and SndbufErrors of /proc/net/snmp.
fn snmp_udp_errors() -> (u64, u64) {
    let Ok(snmp) = fs::read_to_string("/proc/net/snmp") else {
        return (0, 0);
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return (0, 0);
    };
    let value = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(0)
    };
    (value("RcvbufErrors"), value("SndbufErrors"))
}

fn udp_drops(ports: (u16, u16), sink_ips: [IpAddr; 2]) -> Drops {
    let (rcvbuf_errors, sndbuf_errors) = snmp_udp_errors();
    let mut drops = Drops {
        rcvbuf_errors,
        sndbuf_errors,
        ..Drops::default()
    };
    let Ok(table) = fs::read_to_string("/proc/net/udp") else {
        return drops;
    };
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(count)) = (fields.get(1), fields.get(12)) else {
            continue;
        };
        let Some((ip_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let (Ok(ip), Ok(port), Ok(count)) = (
            u32::from_str_radix(ip_hex, 16),
            u16::from_str_radix(port_hex, 16),
            count.parse::<u64>(),
        ) else {
            continue;
        };
        // The address is the kernel's __be32 printed as a host-order number.
        let ip = IpAddr::from(std::net::Ipv4Addr::from(u32::from_be(ip)));
        if sink_ips.contains(&ip) {
            drops.sinks += count;
        } else if ip == IpAddr::from([127, 0, 0, 1]) && (ports.0..=ports.1).contains(&port) {
            drops.relay += count;
        }
    }
    drops
}

/// What one run measured.
struct Measured {
    offered_pps: f64,
    relayed_pps: f64,
    /// What the sinks read within the window (below `relayed_pps` when they read behind).
    read_in_window_pps: f64,
    loss_pct: f64,
    cpu_us_per_packet: f64,
    /// Every CPU's busy time (the relay's, the bench's, softirqs, everything) a relayed packet.
    machine_cpu_us_per_packet: f64,
    relay_cpu_pct: f64,
    /// The relay's CPU with every call set up but no packet flowing (timers, polling).
    idle_cpu_pct: f64,
    bench_cpu_pct: f64,
    dead_streams: usize,
    misdelivered: u64,
    send_errors: u64,
    /// Drops at full receive buffers over the window.
    drops: Drops,
    window: Duration,
}

const PAYLOAD: usize = 160;
const RTP_LEN: usize = 12 + PAYLOAD;
const PTIME: Duration = Duration::from_millis(20);
/// Sender threads wake every SLOT; each stream sends in one of PTIME/SLOT slots.
const SLOT: Duration = Duration::from_millis(1);

/// One direction of one call: a socket, where it sends, and its RTP state. The payload says
/// which stream it is (bytes 0..4: stream index), so a sink can tell misdelivered packets.
struct Stream {
    sock: UdpSocket,
    to: SocketAddr,
    packet: [u8; RTP_LEN],
    seq: u16,
    ts: u32,
}

/// Stream `2i` is flow i's carrier → cloud, `2i + 1` its cloud → carrier; a sink on flow i's
/// cloud socket expects stream `2i`.
fn stream_id(flow: usize, from_cloud: bool) -> u32 {
    (flow * 2 + usize::from(from_cloud)) as u32
}

impl Stream {
    fn new(sock: UdpSocket, to: SocketAddr, id: u32) -> Stream {
        let mut packet = [0xD5u8; RTP_LEN];
        packet[0] = 0x80;
        packet[1] = 8; // PCMA
        packet[8..12].copy_from_slice(&(0x5EED_0000 ^ id).to_be_bytes());
        packet[12..16].copy_from_slice(&id.to_be_bytes());
        Stream {
            sock,
            to,
            packet,
            seq: 0,
            ts: 0,
        }
    }

    fn send(&mut self) -> bool {
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.packet[4..8].copy_from_slice(&self.ts.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(PAYLOAD as u32);
        self.sock.send_to(&self.packet, self.to).is_ok()
    }
}

struct Counters {
    sent: AtomicU64,
    send_errors: AtomicU64,
    received: Vec<AtomicU64>,
    misdelivered: AtomicU64,
}

impl Counters {
    fn received_total(&self) -> u64 {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// No relay: the carrier sends to the cloud's socket and the cloud to the carrier's.
fn direct_targets(flows: &[FlowSockets]) -> Result<Vec<Targets>> {
    flows
        .iter()
        .map(|f| {
            Ok(Targets {
                carrier_to: f.cloud_addr()?,
                cloud_to: f.carrier_addr()?,
            })
        })
        .collect()
}

/// The relay's CPU time so far; none without a relay.
fn relay_cpu(relay: Option<&RelayProcess>) -> Result<Duration> {
    relay.map_or(Ok(Duration::ZERO), |r| cpu_time(r.pid()))
}

fn measure(
    args: &Args,
    ports: (u16, u16),
    relay: Option<&RelayProcess>,
    flows: &[FlowSockets],
    targets: &[Targets],
) -> Result<Measured> {
    let counters = Arc::new(Counters {
        sent: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        received: (0..flows.len() * 2).map(|_| AtomicU64::new(0)).collect(),
        misdelivered: AtomicU64::new(0),
    });
    let stop_sending = Arc::new(AtomicBool::new(false));

    // Sinks: every socket, read by one tokio thread. The senders use clones of the same sockets
    // (the same open files, so they are non-blocking too: a full send buffer counts as an
    // error rather than stalling the pacing).
    let mut sinks = Vec::with_capacity(flows.len() * 2);
    let mut streams = Vec::with_capacity(flows.len() * 2);
    for (i, (f, t)) in flows.iter().zip(targets).enumerate() {
        sinks.push((f.carrier.try_clone()?, stream_id(i, true)));
        sinks.push((f.cloud.try_clone()?, stream_id(i, false)));
        streams.push(Stream::new(
            f.carrier.try_clone()?,
            t.carrier_to,
            stream_id(i, false),
        ));
        streams.push(Stream::new(
            f.cloud.try_clone()?,
            t.cloud_to,
            stream_id(i, true),
        ));
    }
    // The relay's own cost with the calls set up and nothing flowing.
    let idle_window = Duration::from_secs(1);
    let idle0 = relay_cpu(relay)?;
    std::thread::sleep(idle_window);
    let idle_cpu = relay_cpu(relay)?.saturating_sub(idle0);

    let (sink_stop, sink_stopped) = tokio::sync::oneshot::channel::<()>();
    let sink_thread = {
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("sinks".into())
            .spawn(move || run_sinks(sinks, counters, sink_stopped))?
    };

    // Senders: streams dealt round-robin to the threads, each stream in its own slot of the
    // 20 ms period so the load is spread evenly over it.
    let slots = (PTIME.as_nanos() / SLOT.as_nanos()) as usize;
    let total_streams = streams.len();
    let mut per_thread: Vec<Vec<(usize, Stream)>> = (0..args.senders).map(|_| Vec::new()).collect();
    for (k, s) in streams.into_iter().enumerate() {
        let slot = k * slots / total_streams;
        per_thread[k % args.senders].push((slot, s));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let mut senders = Vec::new();
    for (n, mine) in per_thread.into_iter().enumerate() {
        let (counters, stop) = (counters.clone(), stop_sending.clone());
        senders.push(
            std::thread::Builder::new()
                .name(format!("sender-{n}"))
                .spawn(move || send_paced(mine, slots, start, &counters, &stop))?,
        );
    }

    std::thread::sleep(start.saturating_duration_since(Instant::now()) + args.warmup);
    let sink_ips = [args.carrier_ip, args.cloud_ip];
    let drops0 = udp_drops(ports, sink_ips);
    let (cpu0, self0, machine0) = (
        relay_cpu(relay)?,
        cpu_time(std::process::id())?,
        machine_idle()?,
    );
    let (sent0, recv0, t0) = (
        counters.sent.load(Ordering::Relaxed),
        counters.received_total(),
        Instant::now(),
    );
    std::thread::sleep(args.duration);
    let (cpu1, self1, machine1) = (
        relay_cpu(relay)?,
        cpu_time(std::process::id())?,
        machine_idle()?,
    );
    let (sent1, recv1, t1) = (
        counters.sent.load(Ordering::Relaxed),
        counters.received_total(),
        Instant::now(),
    );
    stop_sending.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    // At high rates the sinks read behind (their backlog waits in the sockets' buffers, which
    // the drop counters watch): let them read everything that came, so that loss counts only
    // packets that never came.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut quiet) = (counters.received_total(), 0);
    while quiet < 3 && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = counters.received_total();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let drops1 = udp_drops(ports, sink_ips);
    let _ = sink_stop.send(());
    let _ = sink_thread.join();
    let (sent_total, received_total) = (
        counters.sent.load(Ordering::Relaxed),
        counters.received_total(),
    );

    let window = t1.duration_since(t0);
    let secs = window.as_secs_f64();
    // Loss over the whole run; what the relay moved in the window is what was sent in it less
    // that share (the sinks' own count in the window lags when they read behind).
    let delivered = if sent_total > 0 {
        (received_total as f64 / sent_total as f64).min(1.0)
    } else {
        0.0
    };
    let sent = (sent1 - sent0) as f64;
    let relayed = sent * delivered;
    let relay_cpu = cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6;
    let bench_cpu = self1.saturating_sub(self0).as_secs_f64() * 1e6;
    let machine_cpu = (window * machine1.1).saturating_sub(machine1.0.saturating_sub(machine0.0));
    let machine_cpu = machine_cpu.as_secs_f64() * 1e6;
    let dead_streams = counters
        .received
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) == 0)
        .count();
    Ok(Measured {
        offered_pps: sent / secs,
        relayed_pps: relayed / secs,
        loss_pct: (1.0 - delivered) * 100.0,
        read_in_window_pps: (recv1 - recv0) as f64 / secs,
        cpu_us_per_packet: if relayed > 0.0 {
            relay_cpu / relayed
        } else {
            f64::NAN
        },
        machine_cpu_us_per_packet: if relayed > 0.0 {
            machine_cpu / relayed
        } else {
            f64::NAN
        },
        relay_cpu_pct: relay_cpu / (secs * 1e6) * 100.0,
        idle_cpu_pct: idle_cpu.as_secs_f64() / idle_window.as_secs_f64() * 100.0,
        bench_cpu_pct: bench_cpu / (secs * 1e6) * 100.0,
        dead_streams,
        misdelivered: counters.misdelivered.load(Ordering::Relaxed),
        send_errors: counters.send_errors.load(Ordering::Relaxed),
        drops: Drops {
            relay: drops1.relay.saturating_sub(drops0.relay),
            sinks: drops1.sinks.saturating_sub(drops0.sinks),
            rcvbuf_errors: drops1.rcvbuf_errors.saturating_sub(drops0.rcvbuf_errors),
            sndbuf_errors: drops1.sndbuf_errors.saturating_sub(drops0.sndbuf_errors),
        },
        window,
    })
}

/// Sends each stream once per period in its slot, on absolute deadlines: a late wake-up sends
/// the slots it missed at once, so the rate never drifts below the target.
fn send_paced(
    mut streams: Vec<(usize, Stream)>,
    slots: usize,
    start: Instant,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let mut by_slot: Vec<Vec<usize>> = vec![Vec::new(); slots];
    for (i, (slot, _)) in streams.iter().enumerate() {
        by_slot[*slot].push(i);
    }
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let deadline = start + SLOT * tick;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        let (mut sent, mut errors) = (0, 0);
        for &i in &by_slot[tick as usize % slots] {
            if streams[i].1.send() {
                sent += 1;
            } else {
                errors += 1;
            }
        }
        counters.sent.fetch_add(sent, Ordering::Relaxed);
        counters.send_errors.fetch_add(errors, Ordering::Relaxed);
        tick = tick.wrapping_add(1);
    }
}

/// Counts what every socket receives until `stop` fires: a packet counts for the stream its
/// payload names if that is the stream this socket expects, else as misdelivered.
fn run_sinks(
    sinks: Vec<(UdpSocket, u32)>,
    counters: Arc<Counters>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("media_bench: no runtime for the sinks: {e}");
            return;
        }
    };
    rt.block_on(async move {
        for (sock, expect) in sinks {
            let counters = counters.clone();
            let sock = match sock
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UdpSocket::from_std(sock))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("media_bench: sink socket: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok(n) = sock.recv(&mut buf).await {
                    let id = buf
                        .get(12..16)
                        .filter(|_| n >= RTP_LEN)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    match id {
                        Some(id) if id == expect => {
                            if let Some(c) = counters.received.get(id as usize) {
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            counters.misdelivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let _ = stop.await;
    });
}

/// A minimal bencode (BEP 3) value: what rtpengine's NG protocol speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    /// Keys sorted, as BEP 3 asks.
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    fn str(s: &str) -> Bencode {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    fn dict(pairs: &[(&str, Bencode)]) -> Bencode {
        Bencode::Dict(
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value from the start of `input`; returns it and the bytes after it.
    fn decode(input: &[u8]) -> Result<(Bencode, &[u8])> {
        let short = || anyhow!("bencode: truncated");
        match input.first().ok_or_else(short)? {
            b'i' => {
                let end = input.iter().position(|&b| b == b'e').ok_or_else(short)?;
                let n = std::str::from_utf8(&input[1..end])?.parse()?;
                Ok((Bencode::Int(n), &input[end + 1..]))
            }
            b'l' | b'd' => {
                let is_dict = input[0] == b'd';
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while *rest.first().ok_or_else(short)? != b'e' {
                    let (v, r) = Bencode::decode(rest)?;
                    items.push(v);
                    rest = r;
                }
                rest = &rest[1..];
                if !is_dict {
                    return Ok((Bencode::List(items), rest));
                }
                if items.len() % 2 != 0 {
                    bail!("bencode: a dictionary key without a value");
                }
                let mut map = BTreeMap::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let Bencode::Bytes(k) = k else {
                        bail!("bencode: a dictionary key that is not a string");
                    };
                    map.insert(k, v);
                }
                Ok((Bencode::Dict(map), rest))
            }
            b'0'..=b'9' => {
                let colon = input.iter().position(|&b| b == b':').ok_or_else(short)?;
                let len: usize = std::str::from_utf8(&input[..colon])?.parse()?;
                let body = input.get(colon + 1..colon + 1 + len).ok_or_else(short)?;
                Ok((Bencode::Bytes(body.to_vec()), &input[colon + 1 + len..]))
            }
            other => bail!("bencode: unexpected byte {other:#04x}"),
        }
    }

    /// The string under `key` of a dictionary.
    fn get_str(&self, key: &str) -> Option<String> {
        match self {
            Bencode::Dict(map) => match map.get(key.as_bytes()) {
                Some(Bencode::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        }
    }
}

mod rtpengine {
    //! rtpengine in userspace (`table = -1`), driven over NG.
    use super::*;

    fn config(args: &Args, port_min: u16, port_max: u16) -> String {
        format!(
            "# Written by media_bench.\n[rtpengine]\ntable = -1\ninterface = 127.0.0.1\n\
             listen-ng = 127.0.0.1:{ng}\nport-min = {port_min}\nport-max = {port_max}\n\
             foreground = true\nlog-stderr = true\nlog-level = 3\n",
            ng = args.ng_port
        )
    }

    /// One NG exchange: `cookie bencode` out, the reply with the same cookie back (retried:
    /// NG is UDP).
    pub(super) fn ng(sock: &UdpSocket, port: u16, cookie: &str, msg: &Bencode) -> Result<Bencode> {
        let mut out = format!("{cookie} ").into_bytes();
        msg.encode(&mut out);
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let mut buf = vec![0u8; 65_536];
        for _ in 0..5 {
            sock.send_to(&out, to)?;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                };
                let reply = &buf[..n];
                let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) else {
                    continue; // a late reply to an earlier try
                };
                let (value, _) = Bencode::decode(body)?;
                if value.get_str("result").as_deref() == Some("error") {
                    bail!(
                        "rtpengine: {}",
                        value.get_str("error-reason").unwrap_or_default()
                    );
                }
                return Ok(value);
            }
        }
        bail!("rtpengine did not answer NG on 127.0.0.1:{port}")
    }

    fn ng_socket() -> Result<UdpSocket> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(sock)
    }

    pub(super) fn start(
        args: &Args,
        work: &Path,
        port_min: u16,
        port_max: u16,
        flows: &[FlowSockets],
    ) -> Result<(RelayProcess, Vec<Targets>)> {
        let conf = work.join("rtpengine.conf");
        fs::write(&conf, config(args, port_min, port_max))?;
        let log = work.join("rtpengine.log");
        let mut cmd = Command::new(&args.rtpengine);
        cmd.arg(format!("--config-file={}", conf.display()))
            .arg("--foreground");
        let mut relay = RelayProcess::spawn("rtpengine", &mut cmd, &log)?;
        let sock = ng_socket()?;
        let ping = Bencode::dict(&[("command", Bencode::str("ping"))]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            relay.check_alive(&log)?;
            match ng(&sock, args.ng_port, "ping", &ping) {
                Ok(r) if r.get_str("result").as_deref() == Some("pong") => break,
                Ok(r) => bail!("rtpengine answered ping with {r:?}"),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => return Err(e.context("waiting for rtpengine's pong")),
            }
        }
        let mut targets = Vec::with_capacity(flows.len());
        for (i, f) in flows.iter().enumerate() {
            let (carrier, cloud) = (f.carrier_addr()?, f.cloud_addr()?);
            let call_id = format!("bench-{i}");
            let offer = ng(
                &sock,
                args.ng_port,
                &format!("o{i}"),
                &Bencode::dict(&[
                    ("command", Bencode::str("offer")),
                    ("call-id", Bencode::str(&call_id)),
                    ("from-tag", Bencode::str("carrier")),
                    (
                        "sdp",
                        Bencode::str(&sim::sdp_offer(&carrier.ip().to_string(), carrier.port())),
                    ),
                ]),
            )?;
            let answer = ng(
                &sock,
                args.ng_port,
                &format!("a{i}"),
                &Bencode::dict(&[
                    ("command", Bencode::str("answer")),
                    ("call-id", Bencode::str(&call_id)),
                    ("from-tag", Bencode::str("carrier")),
                    ("to-tag", Bencode::str("cloud")),
                    ("sdp", Bencode::str(&sim::sdp_answer(cloud))),
                ]),
            )?;
            let port_of = |reply: &Bencode, what: &str| {
                reply
                    .get_str("sdp")
                    .and_then(|sdp| sim::sdp_media_addr(sdp.as_bytes()))
                    .ok_or_else(|| anyhow!("rtpengine's {what} for flow {i} has no media address"))
            };
            targets.push(Targets {
                cloud_to: port_of(&offer, "offer")?,
                carrier_to: port_of(&answer, "answer")?,
            });
        }
        Ok((relay, targets))
    }

    /// Deletes the calls (best effort: the daemon is stopped right after).
    pub(super) fn delete_all(ng_port: u16, flows: usize) {
        let Ok(sock) = ng_socket() else { return };
        for i in 0..flows {
            let msg = Bencode::dict(&[
                ("command", Bencode::str("delete")),
                ("call-id", Bencode::str(&format!("bench-{i}"))),
                ("from-tag", Bencode::str("carrier")),
            ]);
            if ng(&sock, ng_port, &format!("d{i}"), &msg).is_err() {
                return;
            }
        }
    }
}

mod pointsman {
    //! pointsman with `media = "relay"` on its route, calls set up over SIP.
    use super::*;

    fn config(
        sip: SocketAddr,
        admin: SocketAddr,
        cloud: SocketAddr,
        ports: &str,
        with_media: bool,
        kernel_relay: bool,
    ) -> String {
        let (media, route_media) = if with_media {
            (
                format!(
                    "[media]\ncarrier_address = \"127.0.0.1\"\ncloud_address = \"127.0.0.1\"\n\
                     ports = \"{ports}\"\nkernel_relay = {kernel_relay}\n\n"
                ),
                "media = \"relay\"\n",
            )
        } else {
            (String::new(), "")
        };
        // The [media] section, the route's `media = "relay"` and the listener, destination and
        // route as the media relay's design has them; the admin port and the guard are moved
        // out of the way of a busy machine, and probes are off (the bench's cloud answers
        // only INVITEs).
        format!(
            "# Written by media_bench.\n\
             [[listen]]\nname = \"carrier\"\ntransport = \"udp\"\naddress = \"{sip}\"\n\n\
             [admin]\nlisten = \"{admin}\"\n\n\
             [guard]\nrate = 1000000.0\nburst = 2000000.0\n\n\
             {media}\
             [[destination]]\nname = \"cloud\"\naddress = \"{cloud}\"\nprobe = false\n\n\
             [[route]]\nname = \"default\"\ndestinations = [\"cloud\"]\n{route_media}"
        )
    }

    pub(super) fn start(
        args: &Args,
        work: &Path,
        port_min: u16,
        port_max: u16,
        flows: &[FlowSockets],
    ) -> Result<(RelayProcess, Vec<Targets>)> {
        let sip = SocketAddr::from(([127, 0, 0, 1], args.sip_port));
        let admin = SocketAddr::from(([127, 0, 0, 1], args.sip_port.wrapping_add(1)));
        let carrier_sip = UdpSocket::bind("127.0.0.1:0")?;
        let cloud_sip = UdpSocket::bind("127.0.0.1:0")?;
        for s in [&carrier_sip, &cloud_sip] {
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
        }
        let conf = work.join("pointsman.toml");
        fs::write(
            &conf,
            config(
                sip,
                admin,
                cloud_sip.local_addr()?,
                &format!("{port_min}-{port_max}"),
                !args.no_media_config,
                args.kernel_relay,
            ),
        )?;
        let log = work.join("pointsman.log");
        let mut cmd = Command::new(&args.pointsman);
        cmd.arg("run")
            .arg("--config")
            .arg(&conf)
            .env("POINTSMAN_LOG", "warn");
        let mut relay = RelayProcess::spawn("pointsman", &mut cmd, &log)?;
        wait_ready(&mut relay, &log, &carrier_sip, sip)?;
        let mut targets = Vec::with_capacity(flows.len());
        for (i, f) in flows.iter().enumerate() {
            relay.check_alive(&log)?;
            targets.push(
                call(i, f, &carrier_sip, &cloud_sip, sip)
                    .with_context(|| format!("setting up flow {i} through pointsman"))?,
            );
        }
        Ok((relay, targets))
    }

    /// Waits until pointsman answers anything on its SIP port (an OPTIONS with Max-Forwards 0:
    /// a proxy answers it itself).
    fn wait_ready(
        relay: &mut RelayProcess,
        log: &Path,
        sock: &UdpSocket,
        sip: SocketAddr,
    ) -> Result<()> {
        let local = sock.local_addr()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            relay.check_alive(log)?;
            let options = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={b};rport\r\n\
                 Max-Forwards: 0\r\nFrom: <sip:bench@{local}>;tag=ready\r\nTo: <sip:{sip}>\r\n\
                 Call-ID: ready-{b}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                b = sim::new_branch()
            );
            sock.send_to(options.as_bytes(), sip)?;
            if sock.recv(&mut buf).is_ok() {
                return Ok(());
            }
        }
        bail!(
            "pointsman did not answer on {sip} within 15 s (see {})",
            log.display()
        )
    }

    /// The next SIP message on `sock` that `want` accepts (others, such as 100 Trying, an ACK
    /// or a retransmission, are skipped), within 3 s.
    fn next_message(
        sock: &UdpSocket,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if want(&buf[..n]) => return Ok((buf[..n].to_vec(), from)),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        bail!("timed out")
    }

    fn call_id_is(msg: &[u8], call_id: &str) -> bool {
        sim::header_value(msg, "Call-ID").as_deref() == Some(call_id)
    }

    /// One call: INVITE from the carrier, 200 from the cloud, ACK; the relay ports come from
    /// the SDP pointsman passed on each way.
    fn call(
        i: usize,
        f: &FlowSockets,
        carrier_sip: &UdpSocket,
        cloud_sip: &UdpSocket,
        sip: SocketAddr,
    ) -> Result<Targets> {
        let (carrier_rtp, cloud_rtp) = (f.carrier_addr()?, f.cloud_addr()?);
        let call_id = format!("media-bench-{i}");
        let mut spec = sim::InviteSpec::new(&call_id, sip, carrier_sip.local_addr()?);
        spec.media = Some(carrier_rtp);
        carrier_sip.send_to(&spec.build(&sim::new_branch()), sip)?;

        let (invite, from) = next_message(cloud_sip, |m| {
            m.starts_with(b"INVITE ") && call_id_is(m, &call_id)
        })
        .context("the INVITE did not reach the cloud")?;
        let cloud_to = sim::sdp_media_addr(sim::body(&invite))
            .ok_or_else(|| anyhow!("the INVITE reached the cloud without an SDP offer"))?;
        if cloud_to == carrier_rtp {
            bail!(
                "pointsman did not anchor media: the INVITE reached the cloud with the \
                 carrier's own SDP (c=/m= {carrier_rtp}); is [media] / media = \"relay\" \
                 implemented in this build?"
            );
        }
        let contact = format!("sip:cloud@{}", cloud_sip.local_addr()?);
        let ok = sim::response_with_sdp(
            &invite,
            200,
            &format!("cloud-{i}"),
            &contact,
            "",
            &sim::sdp_answer(cloud_rtp),
        )
        .ok_or_else(|| anyhow!("could not answer the INVITE pointsman relayed"))?;
        cloud_sip.send_to(&ok, from)?;

        let (ok, _) = next_message(carrier_sip, |m| {
            m.starts_with(b"SIP/2.0 200") && call_id_is(m, &call_id)
        })
        .context("the 200 did not reach the carrier")?;
        let carrier_to = sim::sdp_media_addr(sim::body(&ok))
            .ok_or_else(|| anyhow!("the 200 reached the carrier without an SDP answer"))?;
        if carrier_to == cloud_rtp {
            bail!(
                "pointsman did not anchor media: the 200 reached the carrier with the cloud's \
                 own SDP (c=/m= {cloud_rtp})"
            );
        }
        let dialog = sim::Dialog::uac(&ok, carrier_sip.local_addr()?, sim::SimTransport::Udp)
            .ok_or_else(|| anyhow!("cannot read the 200's dialog"))?;
        let hop = dialog
            .next_hop()
            .ok_or_else(|| anyhow!("no next hop for the ACK"))?;
        if !hop.ip().is_loopback() {
            bail!("the ACK would go to {hop}, off the loopback");
        }
        carrier_sip.send_to(&dialog.ack(1), hop)?;
        Ok(Targets {
            carrier_to,
            cloud_to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trips_an_ng_message() {
        let msg = Bencode::dict(&[
            ("command", Bencode::str("offer")),
            ("sdp", Bencode::str("v=0\r\n")),
            ("flags", Bencode::List(vec![Bencode::str("trust-address")])),
            ("n", Bencode::Int(-3)),
        ]);
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            out,
            b"d7:command5:offer5:flagsl13:trust-addresse1:ni-3e3:sdp5:v=0\r\ne".to_vec()
        );
        let (back, rest) = Bencode::decode(&out).unwrap();
        assert_eq!(back, msg);
        assert!(rest.is_empty());
        assert_eq!(back.get_str("command").as_deref(), Some("offer"));
        assert!(Bencode::decode(b"d3:key").is_err());
    }

    #[test]
    fn ports_and_proc_stat_are_read() {
        assert_eq!(parse_ports("30000-30100").unwrap(), (30000, 30100));
        assert!(parse_ports("3-2").is_err());
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
