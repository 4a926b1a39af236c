//! The fault-injection soak's impairment relay (`benches/soak/run.sh`): what netem would do to
//! a link, in userspace, for kernels without the `netem` qdisc. Each `--link NAME=LISTEN>TARGET`
//! is a UDP port forwarder: a peer that sends to LISTEN gets a session socket of its own that
//! relays to TARGET, and TARGET's answers to that session go back out of LISTEN to the peer, so
//! both ends see a stable address and every datagram crosses the relay in both directions.
//!
//! Every datagram, in both directions, is lost with `--loss`, else delivered once or, with
//! `--dup`, twice; each copy waits a uniform 0..`--jitter`, and with `--reorder` also
//! `--hold-back`, so the datagrams behind it overtake it. `--flap NAME:PERIOD` blackholes one
//! link every other PERIOD (up first). `--answer-options NAME` answers the OPTIONS probes sent
//! to a link 200 OK (the probe and its answer impaired as any datagram), for a target that
//! cannot answer them itself (a SIPp UAS plays one scenario). Each link and direction draws
//! from its own PRNG stream seeded from `--seed`, so a run's decisions per stream repeat with
//! the seed.
//!
//! It counts per link and direction what it received, lost, blackholed, duplicated and held
//! back, prints the counts every 10 s and on SIGTERM/SIGINT (then exits; `--stats FILE` gets
//! them as JSON), and with `--log FILE` writes one line per SIP datagram except OPTIONS and its
//! answers: the kernel's receive time (ns since the epoch, SO_TIMESTAMPNS, so two datagrams a
//! peer sent to two links are in send order), link, direction (`fwd`: LISTEN side to TARGET,
//! `back`), copies delivered, why none (`lost`, `flap`, `-`), method or status, CSeq method,
//! Call-ID and To tag. The soak's report reads it to prove CANCEL before every reroute and to
//! look for ghost calls.
//!
//! `impair --link carrier=127.0.0.1:25100>127.0.0.1:25060 --link primary=... --seed 1`

use clap::Parser;
use pointsman_protocol::wire::{self, Framing, Limits};
use pointsman_sim::{self as sim, StampedUdp};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sessions (distinct senders to one LISTEN address) a link keeps; a proxy and its prober are
/// two. Past this, new senders are dropped and counted as strays.
const MAX_SESSIONS: usize = 64;

/// What happens to the datagrams of a link: the part of the relay that decides, with the PRNG
/// passed in.
#[derive(Clone, Copy, Debug)]
struct Impairment {
    loss: f64,
    dup: f64,
    reorder: f64,
    jitter: Duration,
    hold_back: Duration,
}

/// One datagram's fate: lost, or the delay of each copy to send (one, or two when duplicated).
#[derive(Clone, Debug, PartialEq)]
enum Fate {
    Lost,
    Deliver {
        delays: Vec<Duration>,
        held_back: bool,
    },
}

impl Impairment {
    /// Always draws the same count of numbers per datagram (loss, dup, then per copy jitter
    /// and reorder), so one seed gives one sequence of decisions.
    fn decide(&self, rng: &mut fastrand::Rng) -> Fate {
        let lost = rng.f64() < self.loss;
        let dup = rng.f64() < self.dup;
        let mut delays = Vec::with_capacity(2);
        let mut held_back = false;
        for _ in 0..2 {
            let mut d = self.jitter.mul_f64(rng.f64());
            if rng.f64() < self.reorder {
                d += self.hold_back;
                held_back |= delays.is_empty() || dup;
            }
            delays.push(d);
        }
        if lost {
            return Fate::Lost;
        }
        if !dup {
            delays.truncate(1);
        }
        Fate::Deliver { delays, held_back }
    }
}

/// A link that is blackholed every other `period`, up first.
fn flap_down(period: Option<Duration>, since_start: Duration) -> bool {
    match period {
        Some(p) if !p.is_zero() => (since_start.as_nanos() / p.as_nanos()) % 2 == 1,
        _ => false,
    }
}

/// The PRNG stream of one link and direction: independent of how the streams interleave.
fn stream_rng(seed: u64, link: usize, back: bool) -> fastrand::Rng {
    let stream = (link as u64) * 2 + u64::from(back) + 1;
    fastrand::Rng::with_seed(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[derive(Clone, Copy, Default, serde::Serialize)]
struct Counts {
    received: u64,
    delivered: u64,
    lost: u64,
    blackholed: u64,
    duplicated: u64,
    held_back: u64,
    send_errors: u64,
    strays: u64,
}

/// One link and direction: its PRNG and its counts.
struct Stream {
    rng: fastrand::Rng,
    counts: Counts,
}

struct Link {
    name: String,
    listen: SocketAddr,
    target: SocketAddr,
    flap: Option<Duration>,
    /// OPTIONS sent to LISTEN are answered by the relay, not relayed.
    answers_options: bool,
    /// `[fwd, back]`.
    streams: [Mutex<Stream>; 2],
}

struct Relay {
    impairment: Impairment,
    started: Instant,
    links: Vec<Link>,
    log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

#[derive(Parser)]
#[command(
    about = "UDP impairment relay for benches/soak (loss, duplication, jitter, reordering, flaps)"
)]
struct Args {
    /// NAME=LISTEN>TARGET, e.g. primary=127.0.0.1:25110>127.0.0.1:25070 (repeatable)
    #[arg(long = "link", required = true)]
    links: Vec<String>,
    /// Seed of every link's and direction's PRNG stream
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a datagram is lost
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// Probability that a datagram is delivered twice
    #[arg(long, default_value_t = 0.01)]
    dup: f64,
    /// Probability that a copy is held back by --hold-back (reordered)
    #[arg(long, default_value_t = 0.01)]
    reorder: f64,
    /// Each copy waits a uniform 0..jitter
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Extra wait of a reordered copy
    #[arg(long, default_value = "40ms", value_parser = humantime::parse_duration)]
    hold_back: Duration,
    /// NAME:PERIOD: blackhole that link every other PERIOD, up first (e.g. primary:30s)
    #[arg(long)]
    flap: Option<String>,
    /// NAME: answer the OPTIONS sent to this link 200 OK, as the target would (a SIPp UAS
    /// plays one scenario and cannot answer probes); repeatable
    #[arg(long)]
    answer_options: Vec<String>,
    /// One line per SIP datagram (see the module doc)
    #[arg(long)]
    log: Option<PathBuf>,
    /// The final counts as JSON
    #[arg(long)]
    stats: Option<PathBuf>,
}

fn parse_link(spec: &str) -> Result<(String, SocketAddr, SocketAddr), String> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--link {spec}: expected NAME=LISTEN>TARGET"))?;
    let (listen, target) = rest
        .split_once('>')
        .ok_or_else(|| format!("--link {spec}: expected NAME=LISTEN>TARGET"))?;
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| format!("--link {spec}: {s}: {e}"))
    };
    Ok((name.to_string(), addr(listen)?, addr(target)?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    for (name, p) in [
        ("loss", args.loss),
        ("dup", args.dup),
        ("reorder", args.reorder),
    ] {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("impair: --{name} {p}: expected a probability in 0..1");
            return ExitCode::from(2);
        }
    }
    let flap = match args.flap.as_deref().map(|f| {
        f.split_once(':')
            .and_then(|(n, p)| Some((n.to_string(), humantime::parse_duration(p).ok()?)))
    }) {
        None => None,
        Some(Some(f)) => Some(f),
        Some(None) => {
            eprintln!("impair: --flap: expected NAME:PERIOD, e.g. primary:30s");
            return ExitCode::from(2);
        }
    };
    let mut links = Vec::new();
    for (i, spec) in args.links.iter().enumerate() {
        let (name, listen, target) = match parse_link(spec) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("impair: {e}");
                return ExitCode::from(2);
            }
        };
        let flap = flap.as_ref().filter(|(n, _)| *n == name).map(|(_, p)| *p);
        let stream = |back| {
            Mutex::new(Stream {
                rng: stream_rng(args.seed, i, back),
                counts: Counts::default(),
            })
        };
        links.push(Link {
            name: name.clone(),
            listen,
            target,
            flap,
            answers_options: args.answer_options.contains(&name),
            streams: [stream(false), stream(true)],
        });
    }
    let names = flap.iter().map(|(n, _)| ("flap", n));
    for (option, n) in names.chain(args.answer_options.iter().map(|n| ("answer-options", n))) {
        if !links.iter().any(|l| l.name == *n) {
            eprintln!("impair: --{option} names no link: {n}");
            return ExitCode::from(2);
        }
    }
    let log = match &args.log {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(Mutex::new(std::io::BufWriter::with_capacity(1 << 20, f))),
            Err(e) => {
                eprintln!("impair: cannot create {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let relay = Arc::new(Relay {
        impairment: Impairment {
            loss: args.loss,
            dup: args.dup,
            reorder: args.reorder,
            jitter: args.jitter,
            hold_back: args.hold_back,
        },
        started: Instant::now(),
        links,
        log,
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("impair: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(relay.clone()));
    report(&relay, args.stats.as_deref());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("impair: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every link, relays until SIGTERM or SIGINT, printing the counts every 10 s.
async fn run(relay: Arc<Relay>) -> std::io::Result<()> {
    bind_links(&relay)?;
    println!(
        "impair: {} links, loss {} dup {} reorder {} jitter {:?}",
        relay.links.len(),
        relay.impairment.loss,
        relay.impairment.dup,
        relay.impairment.reorder,
        relay.impairment.jitter
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => print_counts(&relay),
        }
    }
}

/// Binds every link's LISTEN address and relays from it (inside a tokio runtime).
fn bind_links(relay: &Arc<Relay>) -> std::io::Result<()> {
    for i in 0..relay.links.len() {
        let front = Arc::new(StampedUdp::bind(relay.links[i].listen)?);
        tokio::spawn(front_loop(relay.clone(), i, front));
    }
    Ok(())
}

/// Datagrams from the peers on LISTEN: each peer's session relays them to TARGET.
async fn front_loop(relay: Arc<Relay>, link: usize, front: Arc<StampedUdp>) {
    let mut sessions: HashMap<SocketAddr, Arc<StampedUdp>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    let listen = relay.links[link].listen;
    loop {
        let Ok((n, from, at)) = front.recv(&mut buf).await else {
            continue;
        };
        let session = match sessions.get(&from) {
            Some(s) => s.clone(),
            None if sessions.len() < MAX_SESSIONS => {
                let Ok(s) = StampedUdp::bind(SocketAddr::new(listen.ip(), 0)).map(Arc::new) else {
                    relay.count(link, false, |c| c.strays += 1);
                    continue;
                };
                tokio::spawn(session_loop(
                    relay.clone(),
                    link,
                    s.clone(),
                    front.clone(),
                    from,
                ));
                sessions.insert(from, s.clone());
                s
            }
            None => {
                relay.count(link, false, |c| c.strays += 1);
                continue;
            }
        };
        if relay.links[link].answers_options && is_options(&buf[..n]) {
            // The probe crosses the link and its answer crosses back, each impaired.
            let (delays, _) = relay.fate(link, false);
            if let (false, Some(ok)) = (
                delays.is_empty(),
                sim::response(&buf[..n], 200, "impair", ""),
            ) {
                relay.pass(link, true, &ok, at, front.clone(), from);
            }
            continue;
        }
        let target = relay.links[link].target;
        relay.pass(link, false, &buf[..n], at, session, target);
    }
}

/// TARGET's datagrams to one peer's session: back out of LISTEN to that peer.
async fn session_loop(
    relay: Arc<Relay>,
    link: usize,
    session: Arc<StampedUdp>,
    front: Arc<StampedUdp>,
    peer: SocketAddr,
) {
    let mut buf = vec![0u8; 65_535];
    let target = relay.links[link].target;
    loop {
        let Ok((n, from, at)) = session.recv(&mut buf).await else {
            // ICMP errors (TARGET not listening) surface here: nothing to relay.
            continue;
        };
        if from != target {
            relay.count(link, true, |c| c.strays += 1);
            continue;
        }
        relay.pass(link, true, &buf[..n], at, front.clone(), peer);
    }
}

impl Relay {
    fn count(&self, link: usize, back: bool, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut s) = self.links[link].streams[usize::from(back)].lock() {
            f(&mut s.counts);
        }
    }

    /// Decides one datagram's fate and counts it: the delay of each copy to send (none when it
    /// is lost or the link is blackholed), and why there is none.
    fn fate(&self, link: usize, back: bool) -> (Vec<Duration>, &'static str) {
        let l = &self.links[link];
        let down = flap_down(l.flap, self.started.elapsed());
        let Ok(mut s) = l.streams[usize::from(back)].lock() else {
            return (Vec::new(), "lost");
        };
        let fate = self.impairment.decide(&mut s.rng);
        let c = &mut s.counts;
        c.received += 1;
        match fate {
            _ if down => {
                c.blackholed += 1;
                (Vec::new(), "flap")
            }
            Fate::Lost => {
                c.lost += 1;
                (Vec::new(), "lost")
            }
            Fate::Deliver { delays, held_back } => {
                c.delivered += 1;
                c.duplicated += u64::from(delays.len() > 1);
                c.held_back += u64::from(held_back);
                (delays, "-")
            }
        }
    }

    /// One datagram across the link: its fate, a log line, and its copies sent from `via` to
    /// `to`.
    fn pass(
        self: &Arc<Self>,
        link: usize,
        back: bool,
        bytes: &[u8],
        at: SystemTime,
        via: Arc<StampedUdp>,
        to: SocketAddr,
    ) {
        let (delays, why) = self.fate(link, back);
        self.log(link, back, at, delays.len(), why, bytes);
        for d in delays {
            let copy = bytes.to_vec();
            let via = via.clone();
            let relay = self.clone();
            tokio::spawn(async move {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                if via.send_to(&copy, to).await.is_err() {
                    relay.count(link, back, |c| c.send_errors += 1);
                }
            });
        }
    }

    fn log(&self, link: usize, back: bool, at: SystemTime, copies: usize, why: &str, b: &[u8]) {
        let Some(log) = &self.log else { return };
        let Ok(m) = wire::scan(b, Framing::Datagram, &Limits::default()) else {
            return;
        };
        let cseq = String::from_utf8_lossy(m.slice(m.cseq_method_span));
        if cseq == "OPTIONS" {
            return;
        }
        let kind = match (m.method(), m.code()) {
            (Some(method), _) => method.as_str().unwrap_or("OTHER").to_string(),
            (None, Some(code)) => code.to_string(),
            (None, None) => return,
        };
        let tag =
            m.to.tag
                .map_or("-".into(), |t| String::from_utf8_lossy(m.slice(t)));
        let ns = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        if let Ok(mut w) = log.lock() {
            let _ = writeln!(
                w,
                "{ns} {} {} {copies} {why} {kind} {cseq} {} {tag}",
                self.links[link].name,
                if back { "back" } else { "fwd" },
                String::from_utf8_lossy(m.slice(m.call_id)),
            );
        }
    }
}

fn is_options(datagram: &[u8]) -> bool {
    datagram.starts_with(b"OPTIONS ")
}

fn snapshot(relay: &Relay) -> Vec<(String, &'static str, Counts)> {
    let mut out = Vec::new();
    for l in &relay.links {
        for (i, dir) in ["fwd", "back"].into_iter().enumerate() {
            if let Ok(s) = l.streams[i].lock() {
                out.push((l.name.clone(), dir, s.counts));
            }
        }
    }
    out
}

fn print_counts(relay: &Relay) {
    let t = relay.started.elapsed().as_secs();
    for (name, dir, c) in snapshot(relay) {
        println!(
            "{t:>5}s {name:>10} {dir:>4}: received {} delivered {} lost {} blackholed {} duplicated {} held back {}",
            c.received, c.delivered, c.lost, c.blackholed, c.duplicated, c.held_back
        );
    }
}

/// The final counts on stdout and, as JSON, in `stats`; flushes the log.
fn report(relay: &Relay, stats: Option<&std::path::Path>) {
    print_counts(relay);
    if let Some(Ok(mut w)) = relay.log.as_ref().map(|l| l.lock()) {
        let _ = w.flush();
    }
    let Some(path) = stats else { return };
    let json: Vec<_> = snapshot(relay)
        .into_iter()
        .map(|(link, dir, c)| serde_json::json!({ "link": link, "dir": dir, "counts": c }))
        .collect();
    if let Err(e) = std::fs::write(path, serde_json::Value::Array(json).to_string()) {
        eprintln!("impair: cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak() -> Impairment {
        Impairment {
            loss: 0.02,
            dup: 0.01,
            reorder: 0.01,
            jitter: Duration::from_millis(20),
            hold_back: Duration::from_millis(40),
        }
    }

    fn fates(seed: u64, n: usize) -> Vec<Fate> {
        let mut rng = stream_rng(seed, 0, false);
        (0..n).map(|_| soak().decide(&mut rng)).collect()
    }

    #[test]
    fn same_seed_gives_the_same_decisions() {
        assert_eq!(fates(7, 10_000), fates(7, 10_000));
        assert_ne!(fates(7, 10_000), fates(8, 10_000));
    }

    #[test]
    fn each_link_and_direction_has_its_own_stream() {
        let mut a = stream_rng(7, 0, false);
        let mut b = stream_rng(7, 0, true);
        let mut c = stream_rng(7, 1, false);
        let (x, y, z) = (a.u64(..), b.u64(..), c.u64(..));
        assert!(x != y && y != z && x != z);
    }

    #[test]
    fn loss_duplication_and_reordering_happen_at_their_rates() {
        let n = 200_000;
        let all = fates(1, n);
        let lost = all.iter().filter(|f| **f == Fate::Lost).count() as f64 / n as f64;
        let delivered: Vec<_> = all
            .iter()
            .filter_map(|f| match f {
                Fate::Deliver { delays, held_back } => Some((delays, *held_back)),
                Fate::Lost => None,
            })
            .collect();
        let m = delivered.len() as f64;
        let dup = delivered.iter().filter(|(d, _)| d.len() == 2).count() as f64 / m;
        let held = delivered.iter().filter(|(_, h)| *h).count() as f64 / m;
        assert!((0.018..0.022).contains(&lost), "lost {lost}");
        assert!((0.008..0.012).contains(&dup), "duplicated {dup}");
        assert!((0.008..0.012).contains(&held), "held back {held}");
    }

    #[test]
    fn delays_stay_within_jitter_unless_held_back() {
        for f in fates(3, 50_000) {
            if let Fate::Deliver { delays, held_back } = f {
                for d in &delays {
                    assert!(*d < Duration::from_millis(60));
                }
                if !held_back {
                    assert!(delays.iter().all(|d| *d < Duration::from_millis(20)));
                } else {
                    assert!(delays.iter().any(|d| *d >= Duration::from_millis(40)));
                }
            }
        }
    }

    #[test]
    fn no_impairment_delivers_every_datagram_at_once() {
        let clean = Impairment {
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            jitter: Duration::ZERO,
            hold_back: Duration::ZERO,
        };
        let mut rng = stream_rng(1, 0, false);
        for _ in 0..1_000 {
            assert_eq!(
                clean.decide(&mut rng),
                Fate::Deliver {
                    delays: vec![Duration::ZERO],
                    held_back: false
                }
            );
        }
    }

    #[test]
    fn a_flapping_link_is_up_then_down_every_other_period() {
        let p = Some(Duration::from_secs(30));
        let at = |s: f64| flap_down(p, Duration::from_secs_f64(s));
        assert!(!at(0.0) && !at(29.999));
        assert!(at(30.0) && at(59.999));
        assert!(!at(60.0) && at(90.0) && at(599.0) && !at(600.0));
        assert!(!flap_down(None, Duration::from_secs(45)));
    }

    /// A relay with one clean link from a free loopback port to `target`.
    fn clean_link(target: SocketAddr, answers_options: bool) -> (Arc<Relay>, SocketAddr) {
        let listen = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free loopback port");
        let relay = Arc::new(Relay {
            impairment: Impairment {
                loss: 0.0,
                dup: 0.0,
                reorder: 0.0,
                jitter: Duration::ZERO,
                hold_back: Duration::ZERO,
            },
            started: Instant::now(),
            links: vec![Link {
                name: "cloud".into(),
                listen,
                target,
                flap: None,
                answers_options,
                streams: [false, true].map(|back| {
                    Mutex::new(Stream {
                        rng: stream_rng(1, 0, back),
                        counts: Counts::default(),
                    })
                }),
            }],
            log: None,
        });
        (relay, listen)
    }

    async fn recv(sock: &tokio::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 4096];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("a datagram within 2 s")
            .expect("recv");
        buf.truncate(n);
        (buf, from)
    }

    const OPTIONS: &str =
        "OPTIONS sip:cloud SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-p1\r\n\
        From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:cloud>\r\nCall-ID: probe-1\r\n\
        CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn a_peer_gets_a_session_to_the_target_and_the_answer_back_from_listen() {
        let target = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (relay, listen) = clean_link(target.local_addr().unwrap(), false);
        bind_links(&relay).unwrap();

        peer.send_to(b"ping", listen).await.unwrap();
        let (got, session) = recv(&target).await;
        assert_eq!(got, b"ping");
        assert_ne!(
            session,
            peer.local_addr().unwrap(),
            "the target sees the relay"
        );
        target.send_to(b"pong", session).await.unwrap();
        let (got, from) = recv(&peer).await;
        assert_eq!((got.as_slice(), from), (&b"pong"[..], listen));
        let c = snapshot(&relay);
        assert_eq!((c[0].2.received, c[0].2.delivered), (1, 1));
        assert_eq!((c[1].2.received, c[1].2.delivered), (1, 1));
    }

    #[tokio::test]
    async fn options_to_a_link_that_answers_them_get_200_and_never_reach_the_target() {
        let target = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let prober = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (relay, listen) = clean_link(target.local_addr().unwrap(), true);
        bind_links(&relay).unwrap();

        prober.send_to(OPTIONS.as_bytes(), listen).await.unwrap();
        let (got, from) = recv(&prober).await;
        assert_eq!(from, listen);
        assert!(
            got.starts_with(b"SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(String::from_utf8_lossy(&got).contains("Call-ID: probe-1"));
        let mut buf = [0u8; 64];
        let nothing =
            tokio::time::timeout(Duration::from_millis(200), target.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "the probe was relayed to the target");
    }

    #[test]
    fn link_specs_parse_and_bad_ones_say_why() {
        let (n, l, t) = parse_link("primary=127.0.0.1:25110>127.0.0.1:25070").unwrap();
        assert_eq!(n, "primary");
        assert_eq!(l.port(), 25110);
        assert_eq!(t.port(), 25070);
        assert!(parse_link("primary=127.0.0.1:25110").is_err());
        assert!(parse_link("127.0.0.1:1>127.0.0.1:2").is_err());
    }
}
