//! Interop with SIPp, an independent SIP implementation: SIPp carrier UAC → pointsman → SIPp
//! cloud UAS, with the scenarios in tests/sipp/. SIPp is required (Debian package
//! `sip-tester`); a machine without it fails these tests rather than skipping them.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};
use support::sipp::{scenario, tail, Sipp, WorkDir};
use support::{fresh_ip, Node, Setup, CARRIER_PORT, PRIMARY_PORT, PROXY_PORT, SECONDARY_PORT};

const CALLS: u32 = 200;
const RATE: u32 = 100;

/// Starts SIPp on `ip:port` with a scenario of tests/sipp/, writing its statistics to a CSV file
/// in `dir`, for `CALLS` calls. `extra` holds the role's own arguments.
fn start_sipp(
    name: &'static str,
    xml: &str,
    ip: IpAddr,
    port: u16,
    media_port: u16,
    dir: &Path,
    extra: &[String],
) -> Sipp {
    let scenario = ["-sf".to_string(), scenario(xml).display().to_string()];
    Sipp::run_in(
        None,
        name,
        &scenario,
        CALLS,
        (ip, port, media_port),
        dir,
        extra,
    )
}

/// Runs `CALLS` calls from a SIPp carrier through pointsman whose primary and secondary are
/// SIPp clouds playing `primary_xml` and `secondary_xml`; returns the three SIPp processes
/// after they exited, and the node.
async fn run_calls(primary_xml: &str, secondary_xml: &str) -> (Sipp, Sipp, Sipp, Node, WorkDir) {
    let ip = fresh_ip();
    let work = WorkDir::new(ip);
    let dir = work.0.clone();
    // A SIPp UAS takes one scenario: these clouds do calls, not health probes (SIPp answering
    // probes has a test of its own below).
    let setup = Setup {
        provisional: "3s",
        probe: false,
        ..Setup::default()
    };
    let mut primary = start_sipp("primary", primary_xml, ip, PRIMARY_PORT, 17000, &dir, &[]);
    let mut secondary = start_sipp(
        "secondary",
        secondary_xml,
        ip,
        SECONDARY_PORT,
        18000,
        &dir,
        &[],
    );
    let node = Node::start(
        &support::two_clouds_config(ip, &setup),
        support::at(ip, PROXY_PORT),
    )
    .await;
    let mut carrier = start_sipp(
        "carrier",
        "carrier_uac.xml",
        ip,
        CARRIER_PORT,
        16000,
        &dir,
        &[
            format!("{ip}:{PROXY_PORT}"),
            "-r".into(),
            RATE.to_string(),
            "-l".into(),
            "100".into(),
        ],
    );
    let limit = Duration::from_secs(60);
    let code = carrier.finish(limit).await;
    assert_eq!(
        code,
        Some(0),
        "SIPp carrier: not every call succeeded ({:?})\n{}\n--- pointsman log (tail) ---\n{}",
        carrier.stats(),
        carrier.errors(),
        tail(&node.log(), 40)
    );
    for uas in [&mut primary, &mut secondary] {
        let code = uas.finish(Duration::from_secs(10)).await;
        // A UAS that took no call never reaches -m and is still waiting: that is for the
        // caller to judge from its statistics.
        if code.is_some() {
            assert_eq!(code, Some(0), "SIPp {}: {}", uas.name, uas.errors());
        }
    }
    (carrier, primary, secondary, node, work)
}

#[tokio::test]
async fn sipp_carrier_through_pointsman_to_sipp_cloud_all_calls_succeed() {
    let (carrier, primary, secondary, _node, _work) =
        run_calls("cloud_uas.xml", "cloud_uas.xml").await;
    assert_eq!(
        carrier.count("SuccessfulCall(C)"),
        CALLS,
        "{:?}",
        carrier.stats()
    );
    assert_eq!(carrier.count("FailedCall(C)"), 0);
    assert_eq!(
        primary.count("SuccessfulCall(C)"),
        CALLS,
        "{:?}",
        primary.stats()
    );
    assert_eq!(
        secondary.count("IncomingCall(C)"),
        0,
        "the secondary never needed"
    );
}

#[tokio::test]
async fn sipp_503_primary_every_call_completes_on_the_secondary() {
    let (carrier, primary, secondary, _node, _work) =
        run_calls("cloud_503.xml", "cloud_uas.xml").await;
    assert_eq!(
        carrier.count("SuccessfulCall(C)"),
        CALLS,
        "{:?}",
        carrier.stats()
    );
    assert_eq!(carrier.count("FailedCall(C)"), 0);
    // Every call was answered by the secondary. The primary got calls until its 503s took it out
    // of routing (passive health: 3 failures), and pointsman ACKed each 503 (the scenario waits
    // for the ACK; a missing one would be a failed call there).
    assert_eq!(
        secondary.count("SuccessfulCall(C)"),
        CALLS,
        "{:?}",
        secondary.stats()
    );
    let tried_primary = primary.count("IncomingCall(C)");
    assert!((1..CALLS).contains(&tried_primary), "{:?}", primary.stats());
    assert_eq!(
        primary.count("SuccessfulCall(C)"),
        tried_primary,
        "{}",
        primary.errors()
    );
    assert_eq!(primary.count("FailedCall(C)"), 0, "{}", primary.errors());
}

#[tokio::test]
async fn sipp_cloud_answering_options_is_probed_up_by_pointsman() {
    let ip = fresh_ip();
    let work = WorkDir::new(ip);
    let mut cloud = start_sipp(
        "prober-peer",
        "answer_options.xml",
        ip,
        PRIMARY_PORT,
        19000,
        &work.0,
        &[],
    );
    let config = support::two_clouds_config(ip, &Setup::default()).replace(
        "probe = true\n",
        "probe = true\nprobe_interval = \"100ms\"\nprobe_timeout = \"80ms\"\n",
    );
    let node = Node::start(&config, support::at(ip, PROXY_PORT)).await;
    let admin = format!("{ip}:{}", support::ADMIN_PORT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addr = admin.clone();
        let dests = tokio::task::spawn_blocking(move || {
            pointsman::admin::fetch_destinations(&addr, None, Duration::from_secs(2))
        })
        .await
        .expect("join")
        .expect("GET /destinations");
        let primary = dests.iter().find(|d| d.name == "primary").expect("primary");
        if primary.state.as_str() == "up" && primary.probes_ok >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIPp never probed up: {primary:?}\n{}\n{}",
            cloud.errors(),
            tail(&node.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node);
    let _ = cloud.finish(Duration::from_millis(10)).await;
}

/// `examples/two-clouds.toml` as shipped, moved onto this test's addresses: pointsman on
/// `ip`, the clouds on `clouds`. Its destinations are not probed (a SIPp UAS plays one
/// scenario: calls), and the admin API listens on `ip`; nothing else changes, `[guard]`
/// included.
fn shipped_example_on(ip: IpAddr, clouds: IpAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-clouds.toml");
    let text = std::fs::read_to_string(path).expect("examples/two-clouds.toml");
    assert!(
        !text.contains("[guard]"),
        "the example is tested with the default guard"
    );
    let text = text
        .replace("127.0.0.1:5060", &format!("{ip}:{PROXY_PORT}"))
        .replace("127.0.0.1:5070", &format!("{clouds}:{PRIMARY_PORT}"))
        .replace("127.0.0.1:5080", &format!("{clouds}:{SECONDARY_PORT}"))
        .replace(
            "provisional_timeout = \"3s\"",
            "provisional_timeout = \"3s\"\nprobe = false",
        );
    format!(
        "{text}\n[admin]\nlisten = \"{ip}:{}\"\n",
        support::ADMIN_PORT
    )
}

#[tokio::test]
async fn a_sipp_carrier_at_1000_calls_per_second_from_one_address_completes_every_call_through_the_shipped_example(
) {
    // One trunk, one source address, on an open listener (the example lists nobody): the
    // default per-source limit must be above anything a trunk sends.
    const CALLS: u32 = 5_000;
    const RATE: u32 = 1_000;
    let (ip, clouds, carrier_ip) = (fresh_ip(), fresh_ip(), fresh_ip());
    let work = WorkDir::new(ip);
    let dir = work.0.clone();
    let sf = |xml: &str| vec!["-sf".to_string(), scenario(xml).display().to_string()];
    let mut primary = Sipp::run_in(
        None,
        "primary",
        &sf("cloud_uas.xml"),
        CALLS,
        (clouds, PRIMARY_PORT, 17000),
        &dir,
        &[],
    );
    let node = Node::start(&shipped_example_on(ip, clouds), support::at(ip, PROXY_PORT)).await;
    let mut carrier = Sipp::run_in(
        None,
        "carrier",
        &sf("carrier_uac.xml"),
        CALLS,
        (carrier_ip, CARRIER_PORT, 16000),
        &dir,
        &[
            format!("{ip}:{PROXY_PORT}"),
            "-r".into(),
            RATE.to_string(),
            "-l".into(),
            "2000".into(),
        ],
    );
    let code = carrier.finish(Duration::from_secs(90)).await;
    assert_eq!(
        (
            code,
            carrier.count("SuccessfulCall(C)"),
            carrier.count("FailedCall(C)")
        ),
        (Some(0), CALLS, 0),
        "SIPp carrier: not every call succeeded ({:?})\n{}\n--- pointsman log (tail) ---\n{}",
        carrier.stats(),
        carrier.errors(),
        tail(&node.log(), 40)
    );
    assert_eq!(primary.finish(Duration::from_secs(10)).await, Some(0));
    let metrics = support::metric_text(&format!("{ip}:{}", support::ADMIN_PORT)).await;
    let limited = metrics
        .lines()
        .find(|l| l.starts_with("pointsman_dropped_total{reason=\"rate_limit\"}"));
    assert_eq!(
        limited,
        Some("pointsman_dropped_total{reason=\"rate_limit\"} 0")
    );
}

#[tokio::test]
async fn stock_sipp_peers_that_drop_the_record_route_set_complete_their_calls_and_leave_none_open()
{
    // SIPp's built-in uac and uas send ACK and BYE straight to their peer's address with no
    // Route: pointsman must follow the dialog it answered, not 404 the BYE and hold the call.
    let ip = fresh_ip();
    let work = WorkDir::new(ip);
    let dir = work.0.clone();
    let sn = |name: &str| vec!["-sn".to_string(), name.to_string()];
    let setup = Setup {
        provisional: "3s",
        probe: false,
        ..Setup::default()
    };
    let mut primary = Sipp::run_in(
        None,
        "primary",
        &sn("uas"),
        50,
        (ip, PRIMARY_PORT, 17000),
        &dir,
        &[],
    );
    let node = Node::start(
        &support::two_clouds_config(ip, &setup),
        support::at(ip, PROXY_PORT),
    )
    .await;
    let mut carrier = Sipp::run_in(
        None,
        "carrier",
        &sn("uac"),
        50,
        (ip, CARRIER_PORT, 16000),
        &dir,
        &[format!("{ip}:{PROXY_PORT}"), "-r".into(), "50".into()],
    );
    let code = carrier.finish(Duration::from_secs(60)).await;
    assert_eq!(
        (code, carrier.count("SuccessfulCall(C)")),
        (Some(0), 50),
        "{:?}\n{}\n--- pointsman log (tail) ---\n{}",
        carrier.stats(),
        carrier.errors(),
        tail(&node.log(), 40)
    );
    assert_eq!(
        primary.finish(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        primary.errors()
    );
    let metrics = support::metric_text(&format!("{ip}:{}", support::ADMIN_PORT)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "pointsman_calls_in_progress 0"),
        "every call ended: {}",
        metrics
            .lines()
            .filter(|l| l.contains("in_progress"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Hot-hot early media through SIPp clouds: calls placed in parallel by the SIPp carrier.
const MEDIA_CALLS: u32 = 5;
const CLOUD_A_MEDIA_PORT: u16 = 17000;
const CLOUD_B_MEDIA_PORT: u16 = 18000;

/// pointsman with a hot-hot route over cloud-a (preferred) and cloud-b, media relayed. The
/// clouds are not probed (a SIPp UAS plays one scenario: calls).
fn hot_hot_media_config(ip: IpAddr) -> String {
    let cloud = |name: &str, port: u16| {
        format!(
            "\n[[destination]]\nname = \"{name}\"\naddress = \"{ip}:{port}\"\n\
             provisional_timeout = \"3s\"\nprobe = false\n"
        )
    };
    format!(
        r#"{node}
[media]
carrier_address = "{ip}"
cloud_address = "{ip}"
ports = "30000-30199"
{a}{b}
[[group]]
name = "clouds"
strategy = "parallel"
members = ["cloud-a", "cloud-b"]

[[route]]
name = "hot-hot"
tiers = ["clouds"]
media = "relay"
"#,
        node = support::node_section(ip),
        a = cloud("cloud-a", PRIMARY_PORT),
        b = cloud("cloud-b", SECONDARY_PORT),
    )
}

/// A SIPp cloud's working directory, holding the payload its `rtp_stream` plays: raw PCMA
/// frames whose every byte is `mark`, so the carrier's sink reads `mark` as the branch id.
fn cloud_dir(work: &Path, name: &str, mark: u8) -> PathBuf {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).expect("cloud dir");
    // 50 frames of 160 bytes: 1 s of 8 kHz G.711, looped.
    std::fs::write(dir.join("cloud.pcma"), vec![mark; 50 * 160]).expect("payload file");
    dir
}

/// The relay addresses the SIPp carrier wrote for its calls (`relay-N`: "ip:port sinkport"
/// lines, one per 18x/2xx with SDP), as (sink port, relay address).
fn relays_written(dir: &Path) -> Vec<(u16, SocketAddr)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("relay-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    let (relay, sink) = line.trim().split_once(' ')?;
                    Some((sink.parse().ok()?, relay.parse().ok()?))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Bytes waiting in, and datagrams dropped by, the receive buffer of the UDP socket bound to
/// `addr` (IPv4), from /proc/net/udp. SIPp 3.6 never reads its media socket, so what the relay
/// sent it piles up there: the proof that a SIPp cloud received the carrier's RTP.
fn udp_backlog(addr: SocketAddr) -> Option<(u64, u64)> {
    let IpAddr::V4(v4) = addr.ip() else {
        return None;
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(1) != Some(&local.as_str()) {
            return None;
        }
        let rx_queue = u64::from_str_radix(cols.get(4)?.split_once(':')?.1, 16).ok()?;
        let drops = cols.last()?.parse().ok()?;
        Some((rx_queue, drops))
    })
}

/// `MEDIA_CALLS` calls from a SIPp carrier through pointsman's hot-hot route to two SIPp clouds
/// playing early media: cloud-a (`cloud_a_xml`, marked 1) fails after 1 s, cloud-b
/// (cloud_early_media_answer.xml, marked 2) answers after 2 s. Each call's offer names a media
/// sink of ours, which streams to the relay once the carrier learnt its address. Per call,
/// asserts what the sink heard: cloud-a first, one switch to cloud-b with the marker bit and at
/// most `max_lost` frames lost, one SSRC, continuous sequence numbers, nothing of cloud-a after
/// the switch. Returns the node's metrics text.
async fn hot_hot_early_media_through_sipp(cloud_a_xml: &str, max_lost: u32) -> String {
    use pointsman_sim::{analyse, MediaPeer};
    let ip = fresh_ip();
    let work = WorkDir::new(ip);
    let dir = work.0.clone();
    let sf = |xml: &str| vec!["-sf".to_string(), scenario(xml).display().to_string()];
    let mut cloud_a = Sipp::run_in(
        None,
        "cloud-a",
        &sf(cloud_a_xml),
        MEDIA_CALLS,
        (ip, PRIMARY_PORT, CLOUD_A_MEDIA_PORT),
        &cloud_dir(&dir, "cloud-a", 1),
        &[],
    );
    let mut cloud_b = Sipp::run_in(
        None,
        "cloud-b",
        &sf("cloud_early_media_answer.xml"),
        MEDIA_CALLS,
        (ip, SECONDARY_PORT, CLOUD_B_MEDIA_PORT),
        &cloud_dir(&dir, "cloud-b", 2),
        &[],
    );
    let node = Node::start(&hot_hot_media_config(ip), support::at(ip, PROXY_PORT)).await;
    // One media sink per call, named by the carrier's offer (field 0 of its injection file).
    let sinks: Vec<_> = (0..MEDIA_CALLS)
        .map(|_| MediaPeer::bind(ip, 9).expect("carrier media sink"))
        .collect();
    let csv = sinks.iter().fold("SEQUENTIAL\n".to_string(), |csv, s| {
        format!("{csv}{}\n", s.local_addr().port())
    });
    let inf = dir.join("sinks.csv");
    std::fs::write(&inf, csv).expect("injection file");
    let started = Instant::now();
    let mut carrier = Sipp::run_in(
        None,
        "carrier",
        &sf("carrier_media_uac.xml"),
        MEDIA_CALLS,
        (ip, CARRIER_PORT, 16000),
        &dir,
        &[
            format!("{ip}:{PROXY_PORT}"),
            "-inf".into(),
            inf.display().to_string(),
            "-key".into(),
            "sink_ip".into(),
            ip.to_string(),
            // Every call is placed before cloud-a's first 503 (passive health would take it
            // out of routing after a few).
            "-r".into(),
            "20".into(),
            "-l".into(),
            MEDIA_CALLS.to_string(),
        ],
    );
    // While the calls run: each sink streams to its relay address once the carrier wrote it,
    // and the clouds' media sockets are watched for the carrier's RTP.
    let cloud_media = [
        support::at(ip, CLOUD_A_MEDIA_PORT),
        support::at(ip, CLOUD_B_MEDIA_PORT),
    ];
    let mut cloud_got = [false; 2];
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        for (sink_port, relay) in relays_written(&dir) {
            if let Some(sink) = sinks.iter().find(|s| s.local_addr().port() == sink_port) {
                if !sink.started() {
                    sink.start(relay);
                }
            }
        }
        for (got, addr) in cloud_got.iter_mut().zip(cloud_media) {
            *got |= udp_backlog(addr).is_some_and(|(queued, dropped)| queued + dropped > 0);
        }
        if let Ok(Some(status)) = carrier.child.try_wait() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the SIPp carrier did not finish: {:?}\n{}\n--- pointsman log (tail) ---\n{}",
            carrier.stats(),
            carrier.errors(),
            tail(&node.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed();
    let mut gaps = Vec::new();
    assert_eq!(
        (
            code,
            carrier.count("SuccessfulCall(C)"),
            carrier.count("FailedCall(C)")
        ),
        (Some(0), MEDIA_CALLS, 0),
        "SIPp carrier: not every call succeeded ({:?})\n{}\ncloud-a: {}\ncloud-b: {}\n\
         --- pointsman log (tail) ---\n{}",
        carrier.stats(),
        carrier.errors(),
        cloud_a.errors(),
        cloud_b.errors(),
        tail(&node.log(), 60)
    );
    for (i, sink) in sinks.iter().enumerate() {
        assert!(
            sink.started(),
            "call {i}: no relay address reached the sink"
        );
        let heard = sink.heard();
        let a = analyse(&heard, pointsman_sim::PTIME);
        let why = format!("call {i}: {a:?}\nheard: {}", runs(&heard));
        let first = heard.iter().find_map(|h| h.branch);
        assert_eq!(first, Some(1), "cloud-a heard first; {why}");
        assert!(a.packets >= 50, "{why}");
        assert!(a.ssrc_constant, "one SSRC at the carrier; {why}");
        assert!(a.seq_continuous, "sequence numbers go on; {why}");
        assert_eq!(a.switches.len(), 1, "one switch; {why}");
        let switch = &a.switches[0];
        assert_eq!((switch.from, switch.to), (1, 2), "{why}");
        assert!(switch.marker, "marker bit on the switch packet; {why}");
        assert_eq!(
            a.wrong_branch_after_last_switch, 0,
            "cloud-a after the switch; {why}"
        );
        // SIPp's sender leaves ~40 ms holes, and a loaded machine schedules late: the bound is
        // frames, not a timer's precision.
        assert!(
            switch.lost_frames <= max_lost,
            "{} frames lost in the switch; {why}",
            switch.lost_frames
        );
        gaps.push(switch.gap);
    }
    assert_eq!(
        cloud_got,
        [true, true],
        "both SIPp clouds received the carrier's RTP ({cloud_media:?})"
    );
    for cloud in [&mut cloud_a, &mut cloud_b] {
        let code = cloud.finish(Duration::from_secs(10)).await;
        assert_eq!(
            (code, cloud.count("SuccessfulCall(C)")),
            (Some(0), MEDIA_CALLS),
            "SIPp {}: {:?}\n{}",
            cloud.name,
            cloud.stats(),
            cloud.errors()
        );
    }
    eprintln!(
        "{cloud_a_xml}: {MEDIA_CALLS} calls in {elapsed:?}; switch gaps beyond one ptime: {gaps:?}"
    );
    support::metric_text(&format!("{ip}:{}", support::ADMIN_PORT)).await
}

/// What a sink heard, for a failure message: each run of one cloud's packets as
/// `branch×count`, and the silences longer than two frames as `(+N ms)`.
fn runs(heard: &[pointsman_sim::Heard]) -> String {
    let mut out = String::new();
    let mut count = 0;
    for (i, h) in heard.iter().enumerate() {
        count += 1;
        let next = heard.get(i + 1);
        let gap = next.map(|n| n.at.saturating_duration_since(h.at));
        let long = gap.is_some_and(|g| g > Duration::from_millis(40));
        if long || next.is_none_or(|n| n.branch != h.branch) {
            out += &format!("{}×{count} ", h.branch.unwrap_or(0));
            count = 0;
        }
        if let (true, Some(g)) = (long, gap) {
            out += &format!("(+{} ms) ", g.as_millis());
        }
    }
    out
}

/// The value of the series `line` (name and labels) in a metrics text.
fn metric_value(text: &str, line: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn sipp_clouds_playing_early_media_the_carrier_hears_one_stream_across_a_503() {
    // A signalled failure switches on the other cloud's next packet.
    let metrics = hot_hot_early_media_through_sipp("cloud_early_media_503.xml", 3).await;
    assert!(
        metric_value(
            &metrics,
            "pointsman_media_packets_total{direction=\"to_cloud\"}"
        ) > 0.0
    );
    // Each call switched once (asserted from its sink): on the 503, or, if SIPp's sender left
    // a hole longer than the silence threshold (60 ms) on a loaded machine, on that silence
    // just before it.
    let switched = |reason: &str| {
        metric_value(
            &metrics,
            &format!("pointsman_media_switches_total{{reason=\"{reason}\"}}"),
        )
    };
    let on_503 = switched("error_response");
    assert_eq!(
        on_503 + switched("silence"),
        f64::from(MEDIA_CALLS),
        "{metrics}"
    );
    assert!(on_503 >= 1.0, "{metrics}");
}

#[tokio::test]
async fn sipp_clouds_playing_early_media_the_carrier_hears_one_stream_across_silence() {
    // Silence switches once the heard cloud is quiet for max(3 × ptime, 60 ms): 3 frames, plus
    // SIPp's holes and the machine's scheduling.
    let metrics = hot_hot_early_media_through_sipp("cloud_early_media_silence.xml", 6).await;
    assert!(
        metric_value(
            &metrics,
            "pointsman_media_packets_total{direction=\"to_cloud\"}"
        ) > 0.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pointsman_media_switches_total{reason=\"silence\"}"
        ),
        f64::from(MEDIA_CALLS),
        "{metrics}"
    );
}
