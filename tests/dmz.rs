//! pointsman in the DMZ, end to end: allow lists drop strangers without a word, rate limits
//! answer 503 past the burst, scanners are ignored, floods do not stop a carrier's calls, and
//! every table drains back to empty after a flood. Each test runs a real `pointsman` process on
//! loopback addresses of its own.

mod support;

use pointsman_sim::{Behaviour, Carrier, Cloud, Journal};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{at, fresh_ip, Node, ADMIN_PORT, CARRIER_PORT, PRIMARY_PORT, PROXY_PORT};

const WAIT: Duration = Duration::from_secs(5);
/// A per-source limit no flood reaches: every datagram gets to the core.
const NO_RATE_LIMIT: &str = "[guard]\nrate = 1000000.0\nburst = 1000000.0";

/// pointsman on `ip` with its allow list, one cloud on `cloud_ip` (not in the allow list: a
/// destination is let in because it is one), and `extra` config.
fn config(ip: IpAddr, cloud_ip: IpAddr, allow: &str, extra: &str) -> String {
    format!(
        r#"
[node]
workers = 2

[[listen]]
name = "carrier"
transport = "udp"
address = "{ip}:{PROXY_PORT}"
{allow}

[[listen]]
name = "carrier-tcp"
transport = "tcp"
address = "{ip}:{PROXY_PORT}"

[timers]
t1 = "50ms"

[admin]
listen = "{ip}:{ADMIN_PORT}"

{extra}

[[destination]]
name = "cloud"
address = "{cloud_ip}:{PRIMARY_PORT}"
provisional_timeout = "300ms"
probe = false

[[route]]
name = "default"
destinations = ["cloud"]
"#
    )
}

struct Dmz {
    ip: IpAddr,
    journal: Arc<Journal>,
    node: Node,
    carrier: Carrier,
    cloud: Cloud,
}

async fn start(allow: &str, extra: &str, cloud: Behaviour) -> Dmz {
    start_with_workers(2, allow, extra, cloud).await
}

async fn start_with_workers(workers: usize, allow: &str, extra: &str, cloud: Behaviour) -> Dmz {
    let (ip, cloud_ip) = (fresh_ip(), fresh_ip());
    let journal = Arc::new(Journal::default());
    let cloud = Cloud::udp("cloud", at(cloud_ip, PRIMARY_PORT), cloud, journal.clone())
        .expect("bind cloud");
    let allow = allow.replace("CARRIER", &format!("{ip}/32"));
    let config =
        config(ip, cloud_ip, &allow, extra).replace("workers = 2", &format!("workers = {workers}"));
    let node = Node::start(&config, at(ip, PROXY_PORT)).await;
    let carrier = Carrier::udp(
        "carrier",
        at(ip, CARRIER_PORT),
        at(ip, PROXY_PORT),
        journal.clone(),
    )
    .expect("bind carrier");
    Dmz {
        ip,
        journal,
        node,
        carrier,
        cloud,
    }
}

impl Dmz {
    fn proxy(&self) -> SocketAddr {
        at(self.ip, PROXY_PORT)
    }

    async fn metrics(&self) -> String {
        support::metric_text(&format!("{}:{ADMIN_PORT}", self.ip)).await
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Places a call and waits for its final response; returns the code.
    async fn call(&self, call_id: &str) -> u16 {
        self.carrier
            .invite(&self.carrier.invite_spec(call_id))
            .await
            .expect("INVITE");
        self.journal
            .wait_for("carrier", WAIT, |s| {
                s.call_id == call_id
                    && s.cseq_method == "INVITE"
                    && s.code.is_some_and(|c| c >= 200)
            })
            .await
            .and_then(|e| e.summary.code)
            .unwrap_or(0)
    }
}

/// A request from `from` to pointsman; the raw socket gets whatever pointsman answers.
fn request(method: &str, from: SocketAddr, to: SocketAddr, call_id: &str, ua: &str) -> Vec<u8> {
    format!(
        "{method} sip:+15551230000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:stranger@{from}>;tag=s\r\nTo: <sip:+15551230000@{to}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Whether anything arrives on `sock` within `within`.
fn hears_anything(sock: &UdpSocket, within: Duration) -> bool {
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf).is_ok()
}

#[tokio::test]
async fn strangers_are_dropped_without_a_reply_and_destinations_still_get_in() {
    let t = start("allow = [\"CARRIER\"]", "", Behaviour::answer()).await;
    let stranger = UdpSocket::bind(at(fresh_ip(), 5099)).expect("stranger");
    let me = stranger.local_addr().expect("addr");
    for (n, method) in ["OPTIONS", "INVITE", "REGISTER"].iter().enumerate() {
        let req = request(method, me, t.proxy(), &format!("stranger-{n}"), "curious");
        stranger.send_to(&req, t.proxy()).expect("send");
    }
    stranger
        .send_to(b"garbage\r\n\r\n", t.proxy())
        .expect("send");
    assert!(
        !hears_anything(&stranger, Duration::from_millis(500)),
        "a stranger got an answer"
    );
    assert!(t.metric("pointsman_dropped_total{reason=\"acl\"}").await >= 4.0);
    // The carrier is listed; the cloud is not, but it is a destination: its answers, and its
    // own BYE later, get in.
    assert_eq!(t.call("listed").await, 200);
    assert!(t.cloud.hang_up("listed").await);
    t.journal
        .wait_for("carrier", WAIT, |s| s.is("BYE") && s.call_id == "listed")
        .await
        .unwrap_or_else(|| panic!("the cloud's BYE was dropped\n{}", t.node.log()));
}

#[tokio::test]
async fn a_listed_source_past_its_burst_gets_503_with_retry_after() {
    let t = start(
        "allow = [\"CARRIER\"]",
        "[guard]\nallowed_rate = 2.0\nallowed_burst = 5.0\nretry_after = \"7s\"",
        Behaviour::answer(),
    )
    .await;
    // The harness's readiness OPTIONS come from the carrier's address and take tokens (one, or
    // more when the node is slow to answer the first); a full bucket again is 5 / 2 per s.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let sending = Instant::now();
    for n in 0..12 {
        t.carrier
            .invite(&t.carrier.invite_spec(&format!("burst-{n}")))
            .await
            .expect("INVITE");
    }
    let refill = (sending.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let busy = t
        .journal
        .wait_for_nth("carrier", 5, WAIT, |s| s.is_response(503, "INVITE"))
        .await
        .unwrap_or_else(|| panic!("fewer than 5 refusals\n{}", t.node.log()));
    assert_eq!(busy.header("Retry-After").as_deref(), Some("7"));
    let is_final =
        |s: &pointsman_sim::Summary| s.is_response(200, "INVITE") || s.is_response(503, "INVITE");
    t.journal
        .wait_for_nth("carrier", 12, WAIT, is_final)
        .await
        .unwrap_or_else(|| panic!("not every INVITE was answered\n{}", t.journal.dump()));
    let answered = t.journal.count("carrier", |s| s.is_response(200, "INVITE"));
    let refused = t.journal.count("carrier", |s| s.is_response(503, "INVITE"));
    // The burst gets through, plus what the bucket refilled while the test was sending; every
    // other INVITE is refused, none is lost.
    assert!(
        (5..=5 + refill).contains(&answered),
        "{answered} answered (refill {refill})"
    );
    assert_eq!(answered + refused, 12);
    assert_eq!(
        t.metric("pointsman_dropped_total{reason=\"rate_limit\"}")
            .await,
        refused as f64
    );
}

#[tokio::test]
async fn an_unlisted_source_past_its_burst_is_dropped_and_scanners_always_are() {
    // An open listener: every source is let in, none is listed.
    let t = start("", "[guard]\nrate = 2.0\nburst = 3.0", Behaviour::answer()).await;
    let src = UdpSocket::bind(at(fresh_ip(), 5098)).expect("source");
    let me = src.local_addr().expect("addr");
    let scan = request("OPTIONS", me, t.proxy(), "scan-1", "friendly-scanner");
    src.send_to(&scan, t.proxy()).expect("send");
    assert!(
        !hears_anything(&src, Duration::from_millis(300)),
        "scanner answered"
    );
    for n in 0..3 {
        let req = request("OPTIONS", me, t.proxy(), &format!("ok-{n}"), "probe");
        src.send_to(&req, t.proxy()).expect("send");
        assert!(
            hears_anything(&src, Duration::from_millis(500)),
            "within the burst"
        );
    }
    let req = request("INVITE", me, t.proxy(), "over", "probe");
    src.send_to(&req, t.proxy()).expect("send");
    assert!(
        !hears_anything(&src, Duration::from_millis(300)),
        "over the rate: dropped"
    );
}

#[tokio::test]
async fn a_carriers_calls_complete_while_a_flood_hits_the_same_listener() {
    // The carrier and the INVITE flooder are listed; the garbage flooder is not.
    let flooder_ip = fresh_ip();
    let mut t = start(
        &format!("allow = [\"CARRIER\", \"{flooder_ip}/32\"]"),
        "[guard]\nallowed_rate = 50.0\nallowed_burst = 100.0",
        Behaviour::answer(),
    )
    .await;
    let proxy = t.proxy();
    // Each flood is paced at about FLOOD_RATE datagrams/s: an attacker on another machine, not
    // a thread that takes one of this machine's two cores from pointsman.
    const FLOOD_RATE: u64 = 10_000;
    let flood_for = Duration::from_secs(4);
    let pace = |sent: u64, start: Instant| {
        let due = Duration::from_micros(sent * 1_000_000 / FLOOD_RATE);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    };
    let invites = std::thread::spawn(move || {
        let sock = UdpSocket::bind(at(flooder_ip, 5097)).expect("flooder");
        let me = sock.local_addr().expect("addr");
        let (start, mut sent) = (Instant::now(), 0u64);
        while start.elapsed() < flood_for {
            let req = request("INVITE", me, proxy, &format!("flood-{sent}"), "flood");
            if sock.send_to(&req, proxy).is_ok() {
                sent += 1;
            }
            if sent.is_multiple_of(100) {
                pace(sent, start);
            }
        }
        (sent, start.elapsed())
    });
    let garbage = std::thread::spawn(move || {
        let sock = UdpSocket::bind(at(fresh_ip(), 5096)).expect("garbage");
        let (start, mut sent) = (Instant::now(), 0u64);
        let junk = [0x55u8; 600];
        while start.elapsed() < flood_for {
            if sock.send_to(&junk, proxy).is_ok() {
                sent += 1;
            }
            if sent.is_multiple_of(100) {
                pace(sent, start);
            }
        }
        (sent, start.elapsed())
    });
    // 40 calls at 20 calls/s during the flood.
    let mut placed = Vec::new();
    for n in 0..40 {
        let id = format!("legit-{n}");
        t.carrier
            .invite(&t.carrier.invite_spec(&id))
            .await
            .expect("INVITE");
        placed.push(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (invites_sent, invites_took) = invites.join().expect("flooder");
    let (junk_sent, junk_took) = garbage.join().expect("garbage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answered = placed
        .iter()
        .filter(|id| {
            t.journal.count("carrier", |s| {
                s.call_id == **id && s.is_response(200, "INVITE")
            }) > 0
        })
        .count();
    let ratio = answered as f64 / placed.len() as f64;
    println!(
        "flood: {:.0} INVITE/s from a listed source and {:.0} garbage datagrams/s from a \
         stranger for {:.1} s; carrier calls answered {answered}/{} ({:.1} %)",
        invites_sent as f64 / invites_took.as_secs_f64(),
        junk_sent as f64 / junk_took.as_secs_f64(),
        flood_for.as_secs_f64(),
        placed.len(),
        ratio * 100.0
    );
    assert!(
        ratio >= 0.95,
        "only {answered}/{} calls completed",
        placed.len()
    );
    assert!(t.node.alive());
}

#[tokio::test]
async fn tables_drain_back_to_empty_after_a_flood_of_unanswered_invites() {
    // A dead-silent cloud (not even its CANCELs are answered, so every branch ends on Timer
    // B/F, 64·T1 = 3.2 s here): every INVITE times out, has nowhere else to go, and is answered
    // 503; the flooder never ACKs (Timer H).
    let dead = Behaviour {
        deaf_to_cancel: true,
        ..Behaviour::silent()
    };
    let t = start(
        "",
        "[guard]\nrate = 100000.0\nburst = 100000.0\nmax_transactions = 100",
        dead,
    )
    .await;
    let sock = UdpSocket::bind(at(fresh_ip(), 5095)).expect("flooder");
    let me = sock.local_addr().expect("addr");
    for n in 0..2000 {
        let req = request("INVITE", me, t.proxy(), &format!("unique-{n}"), "flood");
        sock.send_to(&req, t.proxy()).expect("send");
        if n % 50 == 49 {
            // Paced, so that the kernel's receive buffer does not drop them before pointsman
            // sees them.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The table cap held (503s beyond it) ...
    let held = t.metric("pointsman_transactions").await;
    assert!(held <= 400.0, "{held} transactions held");
    assert!(
        t.metric("pointsman_dropped_total{reason=\"overload\"}")
            .await
            > 0.0
    );
    // ... and once the timers ran (no ACK ever comes: Timer H), everything is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tx = t.metric("pointsman_transactions").await;
        let calls = t.metric("pointsman_calls_in_progress").await;
        if tx == 0.0 && calls == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tables did not drain: {tx} transactions, {calls} calls"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Half-open TCP connections: they hold a slot until the idle timeout, then the carrier
    // connects again.
    let mut idle = Vec::new();
    for _ in 0..20 {
        if let Ok(c) = std::net::TcpStream::connect(t.proxy()) {
            idle.push(c);
        }
    }
    assert!(!idle.is_empty());
    drop(idle);
    let tcp = Carrier::tcp("tcp-carrier", t.proxy(), t.journal.clone())
        .await
        .expect("TCP carrier connects");
    drop(tcp);
}

#[tokio::test]
async fn a_flood_that_never_lets_the_socket_drain_does_not_hold_back_a_calls_timers() {
    // One worker, so the flood and the call share its socket and its timers. The cloud never
    // answers: the call ends only when its 300 ms provisional timer fires.
    let mut t = start_with_workers(1, "", NO_RATE_LIMIT, Behaviour::silent()).await;
    t.carrier
        .invite(&t.carrier.invite_spec("under-flood"))
        .await
        .expect("INVITE");
    t.journal
        .wait_for("cloud", WAIT, |s| {
            s.is("INVITE") && s.call_id == "under-flood"
        })
        .await
        .unwrap_or_else(|| panic!("the INVITE was not relayed\n{}", t.node.log()));
    // The call is waiting on its timer; now keep the worker's socket from ever draining.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = {
        let (stop, proxy) = (stop.clone(), t.proxy());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind(at(fresh_ip(), 5094)).expect("flooder");
            let me = sock.local_addr().expect("addr");
            let options = request("OPTIONS", me, proxy, "flood", "flood");
            let batch: Vec<(SocketAddr, &[u8])> = (0..64).map(|_| (proxy, &options[..])).collect();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                sent += pointsman::transport::udp::send_batch(fd, &batch).unwrap_or(0);
            }
            sent
        })
    };
    let fin = t
        .journal
        .wait_for("carrier", WAIT, |s| {
            s.call_id == "under-flood"
                && s.cseq_method == "INVITE"
                && s.code.is_some_and(|c| c >= 200)
        })
        .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flooder");
    let fin = fin.unwrap_or_else(|| panic!("no final response\n{}", t.node.log()));
    assert!(sent > 10_000, "the flood sent only {sent} datagrams");
    // The 300 ms provisional timer, late by what the worker has in hand when it fires: well
    // under the flood's 4 s, which is when a starved timer would fire.
    assert!(
        took < Duration::from_millis(2500),
        "the call ended {took:?} into the flood (code {:?})",
        fin.summary.code
    );
    assert!(t.node.alive());
}

/// Resident memory of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_tcp_client_sending_faster_than_the_node_reads_is_slowed_down_not_buffered() {
    let mut t = start("", NO_RATE_LIMIT, Behaviour::answer()).await;
    let pid = t.node.pid();
    let before = rss_kb(pid);
    let proxy = t.proxy();
    let flood = std::thread::spawn(move || {
        let mut conn = std::net::TcpStream::connect(proxy).expect("connect");
        let me = conn.local_addr().expect("addr");
        // Read and discard the answers, so only the node's own queues can fill.
        let mut reader = conn.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(std::io::Read::read(&mut reader, &mut buf), Ok(n) if n > 0) {}
        });
        let blob: Vec<u8> = (0..500)
            .flat_map(|n| request("OPTIONS", me, proxy, &format!("tcp-flood-{n}"), "flood"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut sent = 0usize;
        while Instant::now() < deadline {
            if std::io::Write::write_all(&mut conn, &blob).is_err() {
                break;
            }
            sent += blob.len();
        }
        sent
    });
    let mut peak = before;
    while !flood.is_finished() {
        peak = peak.max(rss_kb(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = flood.join().expect("flooder");
    peak = peak.max(rss_kb(pid));
    assert!(sent > 10 << 20, "the flood wrote only {sent} bytes");
    // Unbounded, the node held what it had read and not yet handled: hundreds of MB here.
    assert!(
        peak < before + 40_000,
        "RSS {before} kB before, {peak} kB during a {} MB TCP flood",
        sent >> 20
    );
    assert!(t.node.alive());
    assert_eq!(t.call("after-tcp-flood").await, 200);
}
