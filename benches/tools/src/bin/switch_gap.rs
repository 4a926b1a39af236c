//! The switch-gap bench (`benches/media/gap.sh`): what a caller hears when the cloud playing
//! its early media dies and pointsman switches to the other, over many calls.
//!
//! It starts a pointsman node (the binary given) on a hot-hot route with media relayed, two
//! simulated clouds that answer 183 with SDP and stream marked RTP (each payload names its
//! cloud and frame), and a simulated carrier whose media peer records every packet it hears.
//! For each call the preferred cloud fails by the chosen trigger after a random 300–700 ms of
//! early media, the other would answer 200 after 3 s (the carrier cancels before); the carrier's recording is judged as one stream
//! (`pointsman_sim::analyse`): the gap (last packet of the failed cloud → first of the other,
//! less one packet time), the frames lost, the marker bit on the switch packet, one SSRC,
//! continuous sequence numbers, and packets of the failed cloud after the switch. It prints one
//! `RESULT` line per trigger with p50/p95/max of the gap.
//!
//! Loopback only, bounded (`--calls` per trigger, a few at a time), and it kills the node when
//! it exits.
//!
//! `switch_gap --pointsman target/release/pointsman --calls 100`

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use pointsman_sim::{
    analyse, sdp_media_addr, Behaviour, Carrier, Cloud, Journal, MediaAnalysis, MediaPeer, Step,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PTIME: Duration = Duration::from_millis(20);
const PROXY_PORT: u16 = 5060;
const CARRIER_PORT: u16 = 5090;
const CLOUD_PORTS: [u16; 2] = [5074, 5075];

#[derive(Parser, Debug)]
#[command(about = "Switch gap at the carrier when the heard cloud fails, over many calls")]
struct Args {
    /// The pointsman binary.
    #[arg(long, default_value = "target/release/pointsman")]
    pointsman: PathBuf,
    /// Calls per trigger.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Triggers to run, in order: error (503), silence (RTP stops), bye (RTCP BYE).
    #[arg(long, value_delimiter = ',', default_value = "error,silence,bye")]
    triggers: Vec<String>,
    /// Loopback address of the run.
    #[arg(long, default_value = "127.0.77.1")]
    ip: IpAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switch_gap: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switch_gap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The node; killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(ip: IpAddr) -> String {
    let [c1, c2] = CLOUD_PORTS;
    format!(
        r#"[node]
id = 1
[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"
[admin]
enabled = false
# Every call fails its preferred cloud on purpose: calls must not take it out of routing.
[health]
passive = false
[media]
carrier_address = "{ip}"
ports = "30000-31999"
[[destination]]
name = "cloud-1"
address = "{ip}:{c1}"
probe = false
[[destination]]
name = "cloud-2"
address = "{ip}:{c2}"
probe = false
[[group]]
name = "clouds"
strategy = "parallel"
members = ["cloud-1", "cloud-2"]
[[route]]
name = "hot-hot"
tiers = ["clouds"]
media = "relay"
"#
    )
}

fn script(trigger: &str, fail_after: Duration) -> Result<Behaviour> {
    use Step::*;
    let end = match trigger {
        "error" => vec![Wait(fail_after), Respond(503)],
        "silence" => vec![Wait(fail_after), MediaPause, Wait(Duration::from_secs(3))],
        "bye" => vec![Wait(fail_after), RtcpBye, Wait(Duration::from_secs(3))],
        other => bail!("unknown trigger {other:?}: use error, silence or bye"),
    };
    Ok(Behaviour::early_media_then(end))
}

async fn run(args: Args) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pointsman-switch-gap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("pointsman.toml");
    std::fs::write(&path, config(args.ip))?;
    let ip = args.ip;
    let journal = Arc::new(Journal::default());
    let clouds: Vec<Cloud> = CLOUD_PORTS
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Cloud::udp(
                &format!("cloud-{}", i + 1),
                SocketAddr::new(ip, *port),
                Behaviour::silent(),
                journal.clone(),
            )
            .map(|c| c.with_media(ip, i as u8 + 1))
        })
        .collect::<std::io::Result<_>>()
        .context("cannot bind the clouds")?;
    let child = Command::new(&args.pointsman)
        .args(["run", "--config"])
        .arg(&path)
        .env("POINTSMAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", args.pointsman.display()))?;
    let _node = Node(child);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let carrier = Arc::new(
        Carrier::udp(
            "carrier",
            SocketAddr::new(ip, CARRIER_PORT),
            SocketAddr::new(ip, PROXY_PORT),
            journal.clone(),
        )
        .context("cannot bind the carrier")?,
    );
    for trigger in &args.triggers {
        let mut results = Vec::with_capacity(args.calls);
        let mut next = 0;
        while next < args.calls {
            let batch = args.concurrency.min(args.calls - next);
            // One script for the batch: the heard cloud fails 300-700 ms into its early media.
            let fail_after = Duration::from_millis(300 + (next as u64 * 37) % 400);
            clouds[0].set_behaviour(script(trigger, fail_after)?);
            clouds[1].set_behaviour(Behaviour::early_media_then(vec![
                Step::Wait(Duration::from_secs(3)),
                Step::Respond(200),
            ]));
            let calls: Vec<_> = (next..next + batch)
                .map(|n| {
                    let carrier = carrier.clone();
                    let journal = journal.clone();
                    let call_id = format!("gap-{trigger}-{n}");
                    tokio::spawn(async move { one_call(&carrier, &journal, ip, &call_id).await })
                })
                .collect();
            for c in calls {
                results.push(c.await.map_err(|e| anyhow!("call task: {e}"))??);
            }
            next += batch;
            for n in next - batch..next {
                let _ = carrier.cancel(&format!("gap-{trigger}-{n}")).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        report(trigger, &results);
    }
    Ok(())
}

/// One call: the carrier streams to the relay once an answer names it; returns what it heard.
async fn one_call(
    carrier: &Carrier,
    journal: &Journal,
    ip: IpAddr,
    call_id: &str,
) -> Result<MediaAnalysis> {
    let peer = MediaPeer::bind(ip, 9)?;
    let mut spec = carrier.invite_spec(call_id);
    spec.media = Some(peer.local_addr());
    carrier.invite(&spec).await?;
    let started = Instant::now();
    loop {
        let relay = journal.received("carrier").iter().find_map(|e| {
            let text = e.text();
            if !text.starts_with("SIP/2.0 1") || !text.contains(&format!("Call-ID: {call_id}\r\n"))
            {
                return None;
            }
            sdp_media_addr(text.split_once("\r\n\r\n")?.1.as_bytes())
        });
        if let Some(relay) = relay {
            peer.start(relay);
            break;
        }
        if started.elapsed() > Duration::from_secs(3) {
            bail!("{call_id}: no early media offered to the carrier");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    peer.stop();
    Ok(analyse(&peer.heard(), PTIME))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(trigger: &str, results: &[MediaAnalysis]) {
    // The failure's switch is the last one, from the preferred cloud (1) to the other (2). A
    // switch before it can only be the preferred cloud taking over when its media started more
    // than the relay's grace after the other's: counted apart.
    fn failover(a: &MediaAnalysis) -> Option<&pointsman_sim::Switch> {
        a.switches.last().filter(|s| s.from == 1 && s.to == 2)
    }
    let clean: Vec<&MediaAnalysis> = results
        .iter()
        .filter(|a| {
            failover(a).is_some_and(|s| s.marker)
                && a.switches.len() <= 2
                && a.ssrc_constant
                && a.seq_continuous
                && a.wrong_branch_after_last_switch == 0
        })
        .collect();
    let takeovers = results.iter().filter(|a| a.switches.len() == 2).count();
    let mut gaps: Vec<f64> = clean
        .iter()
        .filter_map(|a| failover(a))
        .map(|s| s.gap.as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let lost = clean
        .iter()
        .filter_map(|a| failover(a))
        .map(|s| s.lost_frames)
        .max()
        .unwrap_or(0);
    let wrong: usize = results
        .iter()
        .map(|a| a.wrong_branch_after_last_switch)
        .sum();
    println!(
        "RESULT trigger={trigger} calls={} clean={} gap_p50_ms={:.1} gap_p95_ms={:.1} \
         gap_max_ms={:.1} lost_frames_max={lost} wrong_branch_packets={wrong} \
         preferred_takeovers_at_start={takeovers}",
        results.len(),
        clean.len(),
        percentile(&gaps, 50.0),
        percentile(&gaps, 95.0),
        gaps.last().copied().unwrap_or(f64::NAN),
    );
    for (i, a) in results.iter().enumerate() {
        if !clean.iter().any(|c| std::ptr::eq(*c, a)) {
            println!("  not clean: call {i}: {a:?}");
        }
    }
}
