//! HEP v3 capture, end to end: a node with `[hep]` sends a copy of every SIP message of a call to
//! a collector on loopback. The test is the collector: it decodes each packet itself (addresses,
//! ports, agent id, the SIP message) and hands a copy to sngrep (Debian `sngrep`, an independent
//! HEP decoder listening for HEP), which must count the calls as dialogs. Capture switched off
//! at runtime (`pointsman hep off`) sends nothing; switched on again, it resumes.

mod support;

use pointsman_sim::Behaviour;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{at, Setup, TwoClouds, ADMIN_PORT, CARRIER_PORT, PRIMARY_PORT, PROXY_PORT};

const COLLECTOR_PORT: u16 = 9071;
const SNGREP_PORT: u16 = 9072;
const WAIT: Duration = Duration::from_secs(5);

/// One HEP packet as the test read it.
#[derive(Clone, Debug)]
struct Hep {
    proto: u8,
    src: SocketAddr,
    dst: SocketAddr,
    agent: u32,
    sip: String,
}

/// Reads a HEP v3 packet: the chunks this test needs, or why it is not one.
fn decode(packet: &[u8]) -> Result<Hep, String> {
    if packet.len() < 6 || &packet[..4] != b"HEP3" {
        return Err("no HEP3 header".into());
    }
    let total = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if total != packet.len() {
        return Err(format!("length {total} but {} bytes", packet.len()));
    }
    let (mut at, mut chunks) = (6, std::collections::HashMap::new());
    while at < packet.len() {
        let head = packet.get(at..at + 6).ok_or("a chunk header is cut")?;
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let body = packet.get(at + 6..at + len).ok_or("a chunk is cut")?;
        chunks.insert(kind, body.to_vec());
        at += len;
    }
    let get = |k: u16| chunks.get(&k).cloned().ok_or(format!("no chunk {k}"));
    let ip = |v4: u16, v6: u16| -> Result<IpAddr, String> {
        match (chunks.get(&v4), chunks.get(&v6)) {
            (Some(b), _) if b.len() == 4 => Ok(IpAddr::from([b[0], b[1], b[2], b[3]])),
            (_, Some(b)) if b.len() == 16 => {
                let a: [u8; 16] = b.as_slice().try_into().map_err(|_| "bad IPv6")?;
                Ok(IpAddr::from(a))
            }
            _ => Err("no address".into()),
        }
    };
    let port = |k: u16| -> Result<u16, String> {
        let b = get(k)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let agent = get(12)?;
    Ok(Hep {
        proto: get(2)?.first().copied().unwrap_or(0),
        src: SocketAddr::new(ip(3, 5)?, port(7)?),
        dst: SocketAddr::new(ip(4, 6)?, port(8)?),
        agent: u32::from_be_bytes([agent[0], agent[1], agent[2], agent[3]]),
        sip: String::from_utf8_lossy(&get(15)?).into_owned(),
    })
}

/// sngrep listening for HEP, reading no interface (an empty capture file), printing its dialog
/// count; stopped on drop.
struct Sngrep {
    child: Child,
    out: PathBuf,
}

impl Sngrep {
    fn start(listen: SocketAddr, dir: &Path) -> Sngrep {
        let program = ["/usr/bin/sngrep", "/usr/local/bin/sngrep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("the HEP test needs sngrep: apt-get install sngrep (.ci/run does)")
            });
        // A capture file with no packets: sngrep reads it instead of a network interface, so
        // every dialog it counts came through HEP.
        let empty = dir.join("empty.pcap");
        let mut header = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        for word in [0u32, 0, 65_535, 1] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        std::fs::write(&empty, header).expect("write empty.pcap");
        let out = dir.join("sngrep.out");
        let child = Command::new(program)
            .args(["-N", "-c", "-F", "-I"])
            .arg(&empty)
            .arg("-L")
            .arg(format!("udp:{listen}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("sngrep.out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start sngrep");
        Sngrep { child, out }
    }

    /// The last "Dialog count: N" sngrep printed.
    fn dialogs(&self) -> Option<usize> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.rsplit("Dialog count:")
            .next()
            .filter(|_| text.contains("Dialog count:"))
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
    }
}

/// Whether a UDP socket is bound to `addr` (an IPv4 address), from /proc/net/udp: asked
/// without binding, which could take the address from the program about to.
fn udp_bound(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        return false;
    };
    // The kernel writes the address as the hex of its bytes read little-endian.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

impl Drop for Sngrep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's collector: decodes every packet, keeps it, and passes it on to sngrep.
async fn collector(
    listen: SocketAddr,
    tee: SocketAddr,
    seen: Arc<Mutex<Vec<Result<Hep, String>>>>,
) {
    let sock = tokio::net::UdpSocket::bind(listen)
        .await
        .expect("bind collector");
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        seen.lock().expect("seen").push(decode(&buf[..n]));
        let _ = sock.send_to(&buf[..n], tee).await;
    }
}

/// Runs `pointsman hep ARGS` against the node's admin API; its printed line.
fn hep_cli(admin: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .arg("hep")
        .args(args)
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .expect("run pointsman hep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One call from the carrier, answered by the primary and hung up by the carrier.
async fn call(t: &TwoClouds, id: &str) {
    t.carrier
        .invite(&t.carrier.invite_spec(id))
        .await
        .expect("INVITE");
    t.journal
        .wait_for("carrier", WAIT, |s| {
            s.is_response(200, "INVITE") && s.call_id == id
        })
        .await
        .unwrap_or_else(|| panic!("{id} not answered\n{}", t.journal.dump()));
    // The carrier takes the dialog from the 2xx a moment after the journal has it.
    let deadline = Instant::now() + WAIT;
    while t.carrier.hang_up(id).await.is_err() {
        assert!(Instant::now() < deadline, "{id}: no dialog to hang up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.journal
        .wait_for("carrier", WAIT, |s| {
            s.is_response(200, "BYE") && s.call_id == id
        })
        .await
        .unwrap_or_else(|| panic!("{id}: BYE not answered\n{}", t.journal.dump()));
}

/// Waits until the collector has seen `n` packets (or the time is up); returns them.
async fn packets(seen: &Mutex<Vec<Result<Hep, String>>>, n: usize) -> Vec<Hep> {
    let deadline = Instant::now() + WAIT;
    while seen.lock().expect("seen").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().expect("seen").clone();
    seen.into_iter()
        .map(|p| p.unwrap_or_else(|e| panic!("not a HEP v3 packet: {e}")))
        .collect()
}

#[tokio::test]
async fn every_message_of_a_call_reaches_the_collector_and_sngrep_reads_it_and_off_means_off() {
    let collector_ip = support::fresh_ip();
    let (collect_at, sngrep_at) = (
        at(collector_ip, COLLECTOR_PORT),
        at(collector_ip, SNGREP_PORT),
    );
    let dir = std::env::temp_dir().join(format!(
        "pointsman-hep-{}-{collector_ip}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("work dir");
    let sngrep = Sngrep::start(sngrep_at, &dir);
    // What the tee sends before sngrep listens is lost: wait until its socket is bound.
    let deadline = Instant::now() + WAIT;
    while !udp_bound(sngrep_at) {
        assert!(
            Instant::now() < deadline,
            "sngrep never listened on {sngrep_at}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(collector(collect_at, sngrep_at, seen.clone()));
    let extra: &'static str =
        Box::leak(format!("\n[hep]\naddress = \"{collect_at}\"\nagent_id = 42\n").into_boxed_str());
    let t = TwoClouds::start(Setup {
        probe: false,
        secondary: Behaviour::answer(),
        route_extra: extra,
        ..Setup::default()
    })
    .await;
    let ip = t.ip;
    let (node, carrier, primary) = (
        at(ip, PROXY_PORT),
        at(ip, CARRIER_PORT),
        at(ip, PRIMARY_PORT),
    );

    call(&t, "hep-1").await;
    call(&t, "hep-2").await;
    // Per call: INVITE, 100, 180, 200, ACK, BYE, 200 on the carrier's leg and INVITE, 100,
    // 180, 200, ACK, BYE, 200 on the cloud's: 14 messages, each captured once.
    let got = packets(&seen, 28).await;
    let of_call = |id: &str| -> Vec<&Hep> {
        got.iter()
            .filter(|p| p.sip.contains(&format!("Call-ID: {id}\r\n")))
            .collect()
    };
    for id in ["hep-1", "hep-2"] {
        let msgs = of_call(id);
        let line = |p: &Hep| p.sip.lines().next().unwrap_or_default().to_string();
        let has = |src: SocketAddr, dst: SocketAddr, starts: &str| {
            msgs.iter()
                .any(|p| p.src == src && p.dst == dst && line(p).starts_with(starts))
        };
        assert!(has(carrier, node, "INVITE "), "{id}: {msgs:#?}");
        assert!(has(node, primary, "INVITE "), "{id}: {msgs:#?}");
        assert!(has(primary, node, "SIP/2.0 200"), "{id}: {msgs:#?}");
        assert!(has(node, carrier, "SIP/2.0 200"), "{id}: {msgs:#?}");
        assert!(has(carrier, node, "BYE "), "{id}: {msgs:#?}");
        assert!(has(node, primary, "BYE "), "{id}: {msgs:#?}");
        assert!(
            msgs.iter().all(|p| p.proto == 17 && p.agent == 42),
            "{msgs:#?}"
        );
    }
    // sngrep, reading only what came through HEP, sees the two calls.
    let deadline = Instant::now() + WAIT;
    while sngrep.dialogs() != Some(2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sngrep.dialogs(), Some(2), "sngrep's dialog count");

    // Off: a call sends nothing to the collector.
    let admin = at(ip, ADMIN_PORT);
    assert_eq!(hep_cli(admin, &["off"]), "hep capture off");
    assert_eq!(hep_cli(admin, &[]), "hep capture off");
    let before = seen.lock().expect("seen").len();
    call(&t, "hep-3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.lock().expect("seen").len(),
        before,
        "captured while off"
    );
    // On again: the next call is captured.
    assert_eq!(hep_cli(admin, &["on"]), "hep capture on");
    call(&t, "hep-4").await;
    let got = packets(&seen, before + 14).await;
    assert!(got.iter().any(|p| p.sip.contains("Call-ID: hep-4\r\n")));
    assert!(!got.iter().any(|p| p.sip.contains("Call-ID: hep-3\r\n")));
    let metrics = support::metric_text(&admin.to_string()).await;
    assert!(
        metrics.contains("pointsman_hep_dropped_total{reason=\"queue_full\"} 0"),
        "{metrics}"
    );
    drop(sngrep);
    let _ = std::fs::remove_dir_all(&dir);
}
