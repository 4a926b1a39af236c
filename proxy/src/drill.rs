//! `pointsman drill`: a failover drill anyone can run with nothing else installed. It starts a
//! pointsman process on loopback between a simulated carrier and two simulated clouds (the
//! simulators the tests use), places calls at a steady rate, and walks the primary cloud
//! through the failures pointsman exists for: it answers 503, it browns out past the
//! provisional timer and answers late anyway, it dies, it comes back. Then a hot-hot phase:
//! calls to another number fork to two more clouds with their media anchored in pointsman's
//! relay, both play early media, and the preferred one fails each call (an error response, or
//! its RTP goes silent); the carrier's own media peer records what it heard across the switch.
//! Every call is shown as it ends (where it went, which CANCELs and ghost teardowns it took, and
//! for hot-hot calls the switch the caller heard), then a summary computed from what the
//! simulated peers saw and heard on the wire.
//!
//! It owns the drill's script and its report; it must not reach into the pointsman under test
//! (only packets cross, as in production).

use crate::timeline::{StateChange, Timeline, TimelineCall};
use pointsman_sim::{
    analyse, body, sdp_media_addr, Behaviour, Carrier, Cloud, Dir, Entry, Journal, MediaAnalysis,
    MediaPeer, Step, Summary, PTIME,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One injected failure of the primary cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Every INVITE gets 503 Service Unavailable.
    Overload,
    /// No provisional, a 200 after the provisional timer, whatever CANCEL came meanwhile.
    Brownout,
    /// The process is gone: its port is closed (ICMP port unreachable).
    Dies,
    /// Back to normal.
    Recovers,
    /// Calls go to the hot-hot route instead: both hot clouds play early media, and the
    /// preferred one fails each call (a 500, or RTP silence, by turns).
    HotHot,
}

impl Failure {
    pub(crate) fn parse(s: &str) -> Result<Failure, String> {
        match s.trim() {
            "503" | "overload" => Ok(Failure::Overload),
            "brownout" => Ok(Failure::Brownout),
            "dies" | "dead" => Ok(Failure::Dies),
            "recovers" | "recover" => Ok(Failure::Recovers),
            "hot-hot" | "hothot" | "media" => Ok(Failure::HotHot),
            other => Err(format!(
                "unknown failure {other:?}: use 503, brownout, dies, recovers or hot-hot"
            )),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Failure::Overload => {
                "the primary is overloaded: 503 Service Unavailable to calls and probes"
            }
            Failure::Brownout => {
                "the primary browns out: probes still answered, calls silent past the \
                 provisional timer, then answered anyway"
            }
            Failure::Dies => "the primary dies: its port is closed",
            Failure::Recovers => "the primary recovers",
            Failure::HotHot => {
                "hot-hot early media: calls fork to hot-1 (preferred) and hot-2 with media \
                 relayed, both play early media, then hot-1 fails each call (a 500, or its RTP \
                 goes silent, by turns): the carrier must hear hot-2 at once, as one stream"
            }
        }
    }
}

/// What the drill does.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The pointsman executable to run.
    pub bin: PathBuf,
    /// New calls per second.
    pub rate: f64,
    /// Length of the whole drill; each phase gets an equal share.
    pub duration: Duration,
    /// Phases after the first (normal) one, in order.
    pub failures: Vec<Failure>,
    /// Loopback address everything binds to.
    pub ip: IpAddr,
    /// pointsman listens here; the primary, secondary, carrier, admin API, hot-1 and hot-2 take
    /// the next six ports, the media relay [`MEDIA_PORTS`] from `base_port + 100`.
    pub base_port: u16,
    /// How long an answered call lasts before the carrier hangs up.
    pub hold: Duration,
    /// Where to write the timeline picture (SVG), if anywhere.
    pub timeline: Option<PathBuf>,
}

/// What happened to one call, as the peers saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallReport {
    pub call_id: String,
    /// Final code the carrier got (0: none).
    pub code: u16,
    /// Cloud whose answer the carrier got.
    pub answered_by: Option<String>,
    /// Clouds that received this call's INVITE, in order.
    pub tried: Vec<String>,
    /// CANCELs the clouds received for it.
    pub cancels: usize,
    /// Late 2xx torn down by pointsman (a cloud got a BYE from pointsman the carrier never sent).
    pub ghosts_torn_down: usize,
    /// 2xx from a cloud other than the one that won, relayed to the carrier (must be 0).
    pub ghosts_relayed: usize,
    /// Over: failed, or answered and hung up (the carrier got the 200 to its BYE); for a
    /// hot-hot call, what the carrier heard is judged too.
    pub ended: bool,
    /// Hot-hot calls: what the carrier heard.
    pub media: Option<HeardReport>,
}

/// How the preferred cloud fails a hot-hot call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// A final 500 on its early dialog (not 503: calls answered 503 take a destination down,
    /// and the next calls would no longer fork).
    ErrorResponse,
    /// Its RTP stops; its early dialog lives on (until the CANCEL when the other answers).
    Silence,
}

impl Cut {
    fn describe(self) -> &'static str {
        match self {
            Cut::ErrorResponse => "500",
            Cut::Silence => "silence",
        }
    }
}

/// What the carrier heard on one hot-hot call, from its media peer's [`analyse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeardReport {
    pub cut: Cut,
    /// RTP packets the carrier heard.
    pub packets: usize,
    /// Changes of the cloud heard (a clean call has exactly one: hot-1 to hot-2).
    pub switches: usize,
    /// The first switch went from the preferred cloud to the other.
    pub preferred_to_standby: bool,
    /// Silence the first switch left beyond the packet interval.
    pub gap: Duration,
    /// `gap` in 20 ms frames.
    pub lost_frames: u32,
    /// The first packet after the switch had M=1 (a new talkspurt to the carrier's jitter buffer).
    pub marker: bool,
    pub ssrc_constant: bool,
    pub seq_continuous: bool,
    /// Packets of the failed cloud heard after the switch.
    pub wrong_branch: usize,
}

impl HeardReport {
    pub(crate) fn judge(cut: Cut, a: &MediaAnalysis) -> HeardReport {
        let first = a.switches.first();
        HeardReport {
            cut,
            packets: a.packets,
            switches: a.switches.len(),
            preferred_to_standby: first.is_some_and(|s| (s.from, s.to) == (HOT_1, HOT_2)),
            gap: first.map_or(Duration::ZERO, |s| s.gap),
            lost_frames: first.map_or(0, |s| s.lost_frames),
            marker: first.is_some_and(|s| s.marker),
            ssrc_constant: a.ssrc_constant,
            seq_continuous: a.seq_continuous,
            wrong_branch: a.wrong_branch_after_last_switch,
        }
    }

    /// One switch from the preferred cloud to the other, heard as one stream: marker bit on
    /// the switch, one SSRC, no sequence gap, and nothing of the failed cloud after it.
    pub(crate) fn clean(&self) -> bool {
        self.switches == 1
            && self.preferred_to_standby
            && self.marker
            && self.ssrc_constant
            && self.seq_continuous
            && self.wrong_branch == 0
    }
}

/// The drill's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub calls: usize,
    pub answered: usize,
    pub answered_by: BTreeMap<String, usize>,
    pub failed: usize,
    pub failed_over: usize,
    pub cancels: usize,
    pub ghosts_torn_down: usize,
    pub ghosts_relayed: usize,
    /// Messages pointsman sent to the simulated peers.
    pub messages: usize,
    /// Of those, the ones rsip, a SIP parser independent of pointsman's, could not read.
    pub unreadable: usize,
    /// Hot-hot calls, and what their carrier heard.
    pub media: MediaTotals,
}

/// The hot-hot calls' totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MediaTotals {
    pub calls: usize,
    pub clean: usize,
    pub ssrc_constant: usize,
    pub seq_continuous: usize,
    pub marker: usize,
    pub wrong_branch: usize,
    /// The switch gaps (ms, lost frames) of the calls with a switch, by what cut them.
    pub gaps: BTreeMap<&'static str, Vec<(u64, u32)>>,
}

impl MediaTotals {
    fn add(&mut self, h: &HeardReport) {
        self.calls += 1;
        self.clean += usize::from(h.clean());
        self.ssrc_constant += usize::from(h.ssrc_constant);
        self.seq_continuous += usize::from(h.seq_continuous);
        self.marker += usize::from(h.marker);
        self.wrong_branch += h.wrong_branch;
        if h.switches > 0 {
            let gap = (h.gap.as_millis() as u64, h.lost_frames);
            self.gaps.entry(h.cut.describe()).or_default().push(gap);
        }
    }

    /// Every gap, whatever cut the call.
    fn all_gaps(&self) -> Vec<(u64, u32)> {
        self.gaps.values().flatten().copied().collect()
    }
}

/// `p50 X ms (N frames), max Y ms (M frames)` of `gaps`, or `-` without any.
fn gap_figures(gaps: &[(u64, u32)]) -> String {
    let mut ms: Vec<u64> = gaps.iter().map(|g| g.0).collect();
    let mut frames: Vec<u32> = gaps.iter().map(|g| g.1).collect();
    ms.sort_unstable();
    frames.sort_unstable();
    match (median(&ms), ms.last(), median(&frames), frames.last()) {
        (Some(p50), Some(max), Some(f50), Some(fmax)) => format!(
            "p50 {p50} ms ({f50} frame{}), max {max} ms ({fmax} frame{})",
            plural(u64::from(f50)),
            plural(u64::from(*fmax))
        ),
        _ => "-".into(),
    }
}

/// The median of sorted values (the lower middle of an even count).
fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl Report {
    /// Every call answered, no ghost ever reached the carrier, and every message pointsman
    /// sent reads with an independent parser.
    pub(crate) fn passed(&self) -> bool {
        self.calls > 0
            && self.answered == self.calls
            && self.ghosts_relayed == 0
            && self.unreadable == 0
            && self.media.clean == self.media.calls
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "summary")?;
        writeln!(f, "  calls placed            {}", self.calls)?;
        writeln!(f, "  answered                {}", self.answered)?;
        for (cloud, n) in &self.answered_by {
            writeln!(f, "    by {cloud:<20} {n}")?;
        }
        writeln!(f, "  failed                  {}", self.failed)?;
        writeln!(f, "  failed over             {}", self.failed_over)?;
        writeln!(f, "  CANCELs to clouds       {}", self.cancels)?;
        writeln!(f, "  ghost calls torn down   {}", self.ghosts_torn_down)?;
        writeln!(f, "  ghost calls relayed     {}", self.ghosts_relayed)?;
        writeln!(
            f,
            "  messages sent           {} ({} unreadable by an independent SIP parser)",
            self.messages, self.unreadable
        )?;
        let m = &self.media;
        if m.calls > 0 {
            writeln!(f, "  hot-hot calls           {}", m.calls)?;
            writeln!(f, "    switched cleanly      {}", m.clean)?;
            writeln!(f, "    one SSRC              {}", m.ssrc_constant)?;
            writeln!(f, "    seq continuous        {}", m.seq_continuous)?;
            writeln!(f, "    marker on the switch  {}", m.marker)?;
            writeln!(f, "    wrong-branch packets  {}", m.wrong_branch)?;
            writeln!(
                f,
                "    switch gap            {}",
                gap_figures(&m.all_gaps())
            )?;
            for (cut, gaps) in &m.gaps {
                writeln!(f, "      after {cut:<14}{}", gap_figures(gaps))?;
            }
        }
        let verdict = match (self.passed(), m.calls) {
            (false, _) => "FAIL",
            (true, 0) => "PASS: every call answered, no ghost call reached the carrier",
            (true, _) => {
                "PASS: every call answered, no ghost call reached the carrier, every hot-hot \
                 call switched cleanly"
            }
        };
        write!(f, "  verdict                 {verdict}")
    }
}

/// The number hot-hot calls dial (the hot-hot route matches it; every other call takes the
/// default route).
pub(crate) const HOT_HOT_NUMBER: &str = "+15550100200";
/// How many relay ports the drill gives pointsman (6 per hot-hot call: RTP and RTCP for the
/// carrier leg and each cloud's), from `base_port + MEDIA_PORTS_OFFSET`.
pub(crate) const MEDIA_PORTS: u16 = 400;
const MEDIA_PORTS_OFFSET: u16 = 100;
/// The payload marks of the peers' media: the preferred cloud, the other, the carrier.
const HOT_1: u8 = 1;
const HOT_2: u8 = 2;
const CARRIER_MARK: u8 = 9;

/// The config the drill runs pointsman on.
fn config(ip: IpAddr, base: u16, phase: Duration) -> String {
    format!(
        r#"# Written by `pointsman drill`.
[node]
workers = 1

[admin]
listen = "{ip}:{a}"

# Time runs fast in a drill: a destination that calls took down stays down half a phase
# (30 s in production), doubled at each new takedown up to a whole phase (300 s), whatever
# its probes say.
[health]
passive_hold = "{hold}ms"
passive_hold_max = "{hold_max}ms"

[[listen]]
name = "carrier"
transport = "udp"
address = "{ip}:{base}"

[[destination]]
name = "primary"
address = "{ip}:{p}"
provisional_timeout = "1s"
probe_interval = "500ms"
probe_timeout = "400ms"
failure_threshold = 2
recovery_threshold = 2

[[destination]]
name = "secondary"
address = "{ip}:{s}"
provisional_timeout = "1s"
probe_interval = "500ms"
probe_timeout = "400ms"
failure_threshold = 2
recovery_threshold = 2

# Hot-hot: both clouds get every call at once and both play early media; pointsman's relay
# lets the carrier hear hot-1 and switches to hot-2 the moment hot-1 fails.
[[destination]]
name = "hot-1"
address = "{ip}:{h1}"
provisional_timeout = "1s"
probe_interval = "500ms"
probe_timeout = "400ms"

[[destination]]
name = "hot-2"
address = "{ip}:{h2}"
provisional_timeout = "1s"
probe_interval = "500ms"
probe_timeout = "400ms"

[[group]]
name = "hot-clouds"
strategy = "parallel"
members = ["hot-1", "hot-2"]

[media]
carrier_address = "{ip}"
ports = "{m0}-{m1}"

[[route]]
name = "hot-hot"
match = {{ to = ["{HOT_HOT_NUMBER}"] }}
tiers = ["hot-clouds"]
media = "relay"
media_timeout = "10s"

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#,
        p = base + 1,
        s = base + 2,
        a = base + 4,
        h1 = base + 5,
        h2 = base + 6,
        m0 = base + MEDIA_PORTS_OFFSET,
        m1 = base + MEDIA_PORTS_OFFSET + MEDIA_PORTS - 1,
        hold = (phase / 2).as_millis(),
        hold_max = phase.as_millis(),
    )
}

/// How long each phase of the drill lasts: the whole drill shared equally.
fn phase_len(opts: &Options) -> Duration {
    opts.duration / (1 + opts.failures.len()) as u32
}

/// The pointsman under drill; killed when dropped.
struct Proxy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_proxy(opts: &Options) -> anyhow::Result<Proxy> {
    let dir = std::env::temp_dir().join(format!("pointsman-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("drill.toml");
    std::fs::write(&path, config(opts.ip, opts.base_port, phase_len(opts)))?;
    let log = std::fs::File::create(dir.join("pointsman.log"))?;
    let child = Command::new(&opts.bin)
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Proxy { child, dir })
}

/// Waits until pointsman answers OPTIONS.
async fn wait_ready(carrier: &Carrier, journal: &Journal, proxy: SocketAddr) -> bool {
    let me = carrier.local_addr();
    for n in 0..100 {
        let probe = format!(
            "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-drill-ready{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:drill@{me}>;tag=d\r\nTo: <sip:{proxy}>\r\n\
             Call-ID: drill-ready-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = carrier.send(probe.into()).await;
        let got = journal
            .wait_for("carrier", Duration::from_millis(100), |s| {
                s.is_response(200, "OPTIONS")
            })
            .await;
        if got.is_some() {
            return true;
        }
    }
    false
}

/// Runs the drill, writing its live view and summary to `out`.
pub(crate) async fn run(opts: Options, out: &mut (dyn Write + Send)) -> anyhow::Result<Report> {
    let highest = u32::from(opts.base_port) + u32::from(MEDIA_PORTS_OFFSET + MEDIA_PORTS);
    if highest > u32::from(u16::MAX) || opts.base_port < 1024 {
        anyhow::bail!(
            "--port {} leaves no room: the drill uses it, the next six ports and {MEDIA_PORTS} \
             relay ports from port + {MEDIA_PORTS_OFFSET}; use a port from 1024 to {}",
            opts.base_port,
            u16::MAX - MEDIA_PORTS_OFFSET - MEDIA_PORTS
        );
    }
    let at = |port: u16| SocketAddr::new(opts.ip, port);
    let (proxy_addr, primary_addr, secondary_addr, carrier_addr) = (
        at(opts.base_port),
        at(opts.base_port + 1),
        at(opts.base_port + 2),
        at(opts.base_port + 3),
    );
    let journal = Arc::new(Journal::default());
    let mut primary = Some(Cloud::udp(
        "primary",
        primary_addr,
        Behaviour::answer_after(Duration::from_millis(200)),
        journal.clone(),
    )?);
    let _secondary = Cloud::udp(
        "secondary",
        secondary_addr,
        Behaviour::answer_after(Duration::from_millis(200)),
        journal.clone(),
    )?;
    // The hot-hot clouds play early media: hot-1 by the script of each call's cut, hot-2 always
    // 200 ms behind (so the carrier hears the preferred cloud first and the one switch measured
    // is the failure's, not the start-up race), then it answers.
    let hot_1 = Cloud::udp(
        "hot-1",
        at(opts.base_port + 5),
        hot_1_script(Cut::ErrorResponse),
        journal.clone(),
    )?
    .with_media(opts.ip, HOT_1);
    let _hot_2 = Cloud::udp(
        "hot-2",
        at(opts.base_port + 6),
        Behaviour::of(vec![
            Step::Respond(100),
            Step::Wait(Duration::from_millis(200)),
            Step::EarlyMedia,
            Step::Wait(Duration::from_millis(1000)),
            Step::Respond(200),
        ]),
        journal.clone(),
    )?
    .with_media(opts.ip, HOT_2);
    let carrier = Arc::new(Carrier::udp(
        "carrier",
        carrier_addr,
        proxy_addr,
        journal.clone(),
    )?);
    let _proxy = start_proxy(&opts)?;
    if !wait_ready(&carrier, &journal, proxy_addr).await {
        anyhow::bail!("pointsman did not start on {proxy_addr}");
    }
    writeln!(
        out,
        "pointsman drill: carrier {carrier_addr} -> pointsman {proxy_addr} -> primary \
         {primary_addr}, then secondary {secondary_addr}\n\
         {:.0} calls/s for {}s; provisional timer 1 s; each answered call lasts {} ms\n",
        opts.rate,
        opts.duration.as_secs(),
        opts.hold.as_millis()
    )?;
    if opts.failures.contains(&Failure::HotHot) {
        writeln!(
            out,
            "then hot-hot: calls to {HOT_HOT_NUMBER} fork to hot-1 {} and hot-2 {} with media relayed \
             on ports {}-{}\n",
            at(opts.base_port + 5),
            at(opts.base_port + 6),
            opts.base_port + MEDIA_PORTS_OFFSET,
            opts.base_port + MEDIA_PORTS_OFFSET + MEDIA_PORTS - 1
        )?;
    }

    let admin = SocketAddr::new(opts.ip, opts.base_port + 4).to_string();
    let changes = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let states = Arc::new(std::sync::Mutex::new(Vec::<StateChange>::new()));
    let began = std::time::SystemTime::now();
    let watcher = tokio::spawn(watch_states(
        admin,
        changes.clone(),
        states.clone(),
        Instant::now(),
    ));
    let mut phase_starts = Vec::new();
    let phases = 1 + opts.failures.len();
    let phase_len = phase_len(&opts);
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let start = Instant::now();
    let mut calls = Vec::new();
    let heard: HeardByCall = Arc::default();
    let mut shown = 0;
    for phase in 0..phases {
        let banner = match phase {
            0 => "both clouds healthy",
            n => opts.failures[n - 1].describe(),
        };
        writeln!(out, "== phase {}: {banner}", phase + 1)?;
        phase_starts.push((phase_len * phase as u32, phase_name(&opts, phase)));
        if phase > 0 {
            match opts.failures[phase - 1] {
                Failure::Overload => {
                    set(&primary, Behaviour::reject(503), Some(503));
                }
                Failure::Brownout => {
                    // The gray failure: OPTIONS fine, INVITEs not.
                    let brownout = Behaviour::brownout(Duration::from_millis(1500));
                    set(&primary, brownout, Some(200));
                }
                Failure::Dies => {
                    if let Some(p) = primary.take() {
                        p.stop().await;
                    }
                }
                Failure::HotHot => {}
                Failure::Recovers => {
                    let answer = Behaviour::answer_after(Duration::from_millis(200));
                    match &primary {
                        Some(p) => {
                            p.set_behaviour(answer);
                            p.set_options_reply(Some(200));
                        }
                        None => {
                            primary = Some(Cloud::udp(
                                "primary",
                                primary_addr,
                                answer,
                                journal.clone(),
                            )?)
                        }
                    }
                }
            }
        }
        let phase_end = start + phase_len * (phase as u32 + 1);
        while Instant::now() < phase_end {
            let n = calls.len();
            let call_id = format!("drill-{n:04}");
            calls.push(call_id.clone());
            if phase > 0 && opts.failures[phase - 1] == Failure::HotHot {
                // By turns; set before the INVITE leaves, read by hot-1 when it arrives.
                let cut = if n % 2 == 0 {
                    Cut::ErrorResponse
                } else {
                    Cut::Silence
                };
                hot_1.set_behaviour(hot_1_script(cut));
                lock(&heard).insert(call_id.clone(), None);
                tokio::spawn(place_hot_hot_call(
                    HotHotCall {
                        carrier: carrier.clone(),
                        journal: journal.clone(),
                        heard: heard.clone(),
                        ip: opts.ip,
                        hold: opts.hold,
                    },
                    call_id,
                    cut,
                ));
            } else {
                tokio::spawn(place_call(
                    carrier.clone(),
                    journal.clone(),
                    call_id,
                    opts.hold,
                ));
            }
            tokio::time::sleep(interval).await;
            shown = show_finished(out, &journal, &heard, &calls, shown)?;
            show_changes(out, &changes)?;
        }
    }
    // Let the last calls finish (a brownout call takes the provisional timer plus ringing).
    let drain_until = Instant::now() + Duration::from_secs(4) + opts.hold;
    while Instant::now() < drain_until && shown < calls.len() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = show_finished(out, &journal, &heard, &calls, shown)?;
        show_changes(out, &changes)?;
    }
    watcher.abort();
    show_changes(out, &changes)?;
    // Late ghost teardowns and hang-ups settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports: Vec<CallReport> = calls
        .iter()
        .map(|c| report_with_media(&journal, &heard, c))
        .collect();
    for r in reports.iter().skip(shown) {
        writeln!(out, "{}", line(r))?;
    }
    let mut report = total(&reports);
    (report.messages, report.unreadable) = readability(&journal, out)?;
    writeln!(out, "\n{report}")?;
    if let Some(path) = &opts.timeline {
        let picture = Timeline {
            length: phase_len * phases as u32,
            phases: phase_starts,
            destinations: ["primary", "secondary", "hot-1", "hot-2"]
                .iter()
                .filter(|d| opts.failures.contains(&Failure::HotHot) || !d.starts_with("hot-"))
                .map(|d| d.to_string())
                .collect(),
            calls: reports
                .iter()
                .map(|r| TimelineCall {
                    at: invite_sent(&journal, &r.call_id)
                        .and_then(|at| at.duration_since(began).ok())
                        .unwrap_or_default(),
                    tried: r.tried.clone(),
                    answered_by: r.answered_by.clone(),
                })
                .collect(),
            states: std::mem::take(&mut *lock(&states)),
        };
        std::fs::write(path, picture.render())
            .map_err(|e| anyhow::anyhow!("cannot write the timeline {}: {e}", path.display()))?;
        writeln!(out, "timeline written to {}", path.display())?;
    }
    Ok(report)
}

/// A phase's short name, for the timeline.
fn phase_name(opts: &Options, phase: usize) -> String {
    match phase {
        0 => "healthy".into(),
        n => match opts.failures[n - 1] {
            Failure::Overload => "503",
            Failure::Brownout => "brownout",
            Failure::Dies => "dies",
            Failure::Recovers => "recovers",
            Failure::HotHot => "hot-hot",
        }
        .into(),
    }
}

/// When the carrier sent the INVITE of `call_id`.
fn invite_sent(journal: &Journal, call_id: &str) -> Option<std::time::SystemTime> {
    journal
        .entries()
        .into_iter()
        .find(|e| {
            e.peer == "carrier"
                && e.dir == Dir::Out
                && e.summary.call_id == call_id
                && e.summary.is("INVITE")
        })
        .map(|e| e.at)
}

/// Every message the simulated peers received from pointsman, read again with rsip (see
/// [`pointsman_sim::independent_read`]); prints the first few it could not read. Returns (read,
/// unreadable).
fn readability(journal: &Journal, out: &mut (dyn Write + Send)) -> std::io::Result<(usize, usize)> {
    let sent: Vec<Entry> = journal
        .entries()
        .into_iter()
        .filter(|e| e.dir == Dir::In)
        .collect();
    let unreadable: Vec<&Entry> = sent
        .iter()
        .filter(|e| e.summary.independent_error.is_some())
        .collect();
    for e in unreadable.iter().take(3) {
        let why = e.summary.independent_error.as_deref().unwrap_or_default();
        writeln!(out, "unreadable by rsip ({why}):\n{}", e.text())?;
    }
    Ok((sent.len(), unreadable.len()))
}

fn set(cloud: &Option<Cloud>, calls: Behaviour, options: Option<u16>) {
    if let Some(c) = cloud {
        c.set_behaviour(calls);
        c.set_options_reply(options);
    }
}

/// Prints the calls that have ended, in order, from `shown` on; returns the new `shown`.
fn show_finished(
    out: &mut (dyn Write + Send),
    journal: &Journal,
    heard: &HeardByCall,
    calls: &[String],
    mut shown: usize,
) -> std::io::Result<usize> {
    while let Some(call_id) = calls.get(shown) {
        let r = report_with_media(journal, heard, call_id);
        if !r.ended {
            break;
        }
        writeln!(out, "{}", line(&r))?;
        shown += 1;
    }
    Ok(shown)
}

fn line(r: &CallReport) -> String {
    // A hot-hot call forks: its clouds are tried at once, not one after the other.
    let tried = r.tried.join(if r.media.is_some() { " + " } else { " -> " });
    let mut s = format!("{}  {tried}", r.call_id);
    match (&r.answered_by, r.code) {
        (Some(by), _) => s.push_str(&format!("  answered by {by}")),
        (None, 0) => s.push_str("  no final response"),
        (None, code) => s.push_str(&format!("  failed {code}")),
    }
    if r.cancels > 0 {
        s.push_str(&format!("  [CANCEL x{}]", r.cancels));
    }
    if r.ghosts_torn_down > 0 {
        s.push_str(&format!("  [late 200 ACKed+BYEd x{}]", r.ghosts_torn_down));
    }
    if r.ghosts_relayed > 0 {
        s.push_str("  [GHOST CALL RELAYED]");
    }
    if let Some(h) = &r.media {
        s.push_str(&format!("\n    {}", heard_line(h)));
    }
    s
}

/// What the carrier heard on a hot-hot call, in one line.
fn heard_line(h: &HeardReport) -> String {
    let yes_no = |ok: bool, yes: &'static str, no: &'static str| if ok { yes } else { no };
    let switch = match h.switches {
        0 => "no switch".to_string(),
        1 if h.preferred_to_standby => "switch hot-1 -> hot-2".to_string(),
        1 => "switch the wrong way".to_string(),
        n => format!("{n} switches"),
    };
    format!(
        "heard: hot-1 cut by {}, {switch}: gap {} ms ({} frame{} lost), {}, {}, {}, {} \
         wrong-branch packets, {} packets  {}",
        h.cut.describe(),
        h.gap.as_millis(),
        h.lost_frames,
        plural(u64::from(h.lost_frames)),
        yes_no(h.marker, "marker", "NO MARKER"),
        yes_no(h.ssrc_constant, "one SSRC", "SSRC CHANGED"),
        yes_no(h.seq_continuous, "seq continuous", "SEQ GAP"),
        h.wrong_branch,
        h.packets,
        yes_no(h.clean(), "clean", "NOT CLEAN"),
    )
}

/// One call of the drill: INVITE, then (answered) hold and hang up.
async fn place_call(carrier: Arc<Carrier>, journal: Arc<Journal>, call_id: String, hold: Duration) {
    let spec = carrier.invite_spec(&call_id);
    if carrier.invite(&spec).await.is_err() {
        return;
    }
    let fin = journal
        .wait_for("carrier", Duration::from_secs(10), |s| {
            s.call_id == call_id && s.cseq_method == "INVITE" && s.code.is_some_and(|c| c >= 200)
        })
        .await;
    if fin.is_some_and(|e| e.summary.code == Some(200)) {
        tokio::time::sleep(hold).await;
        let _ = carrier.hang_up(&call_id).await;
    }
}

/// What the carrier heard on each hot-hot call, by Call-ID: `None` until the call is over.
type HeardByCall = Arc<std::sync::Mutex<BTreeMap<String, Option<HeardReport>>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// hot-1's script for a call it is to fail by `cut`: early media for 600 ms, then the cut.
fn hot_1_script(cut: Cut) -> Behaviour {
    let fail = match cut {
        Cut::ErrorResponse => Step::Respond(500),
        Cut::Silence => Step::MediaPause,
    };
    Behaviour::early_media_then(vec![Step::Wait(Duration::from_millis(600)), fail])
}

/// What a hot-hot call needs besides its Call-ID and cut.
struct HotHotCall {
    carrier: Arc<Carrier>,
    journal: Arc<Journal>,
    heard: HeardByCall,
    ip: IpAddr,
    hold: Duration,
}

/// One hot-hot call: the carrier offers its own media peer, streams to the relay address the
/// first 18x/2xx with SDP names (latching needs the carrier to send), holds the answered call
/// and hangs up, then judges what it heard.
async fn place_hot_hot_call(c: HotHotCall, call_id: String, cut: Cut) {
    let analysis = match MediaPeer::bind(c.ip, CARRIER_MARK) {
        Ok(peer) => {
            hot_hot_call(&c, &call_id, &peer).await;
            peer.stop();
            analyse(&peer.heard(), PTIME)
        }
        // Nothing heard: judged as such (not clean), never a panic.
        Err(_) => analyse(&[], PTIME),
    };
    lock(&c.heard).insert(call_id, Some(HeardReport::judge(cut, &analysis)));
}

async fn hot_hot_call(c: &HotHotCall, call_id: &str, peer: &MediaPeer) {
    let mut spec = c.carrier.invite_spec(call_id);
    spec.to_user = HOT_HOT_NUMBER.into();
    spec.media = Some(peer.local_addr());
    if c.carrier.invite(&spec).await.is_err() {
        return;
    }
    let this_invite = |s: &Summary| s.call_id == call_id && s.cseq_method == "INVITE";
    // The first 18x/2xx (the clouds send no 180: it is hot-1's 183, with the relay's SDP).
    let early = c
        .journal
        .wait_for("carrier", Duration::from_secs(5), |s| {
            this_invite(s) && s.code.is_some_and(|n| (180..300).contains(&n))
        })
        .await;
    if let Some(relay) = early.and_then(|e| sdp_media_addr(body(&e.bytes))) {
        peer.start(relay);
    }
    let code = c
        .journal
        .wait_for("carrier", Duration::from_secs(10), |s| {
            this_invite(s) && s.code.is_some_and(|n| n >= 200)
        })
        .await
        .and_then(|e| e.summary.code);
    if code == Some(200) {
        tokio::time::sleep(c.hold).await;
        let _ = c.carrier.hang_up(call_id).await;
        // The last relayed packets arrive.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// [`report_call`] with what the carrier heard, for a hot-hot call (not over until judged).
fn report_with_media(journal: &Journal, heard: &HeardByCall, call_id: &str) -> CallReport {
    let mut r = report_call(journal, call_id);
    match lock(heard).get(call_id) {
        Some(Some(h)) => r.media = Some(h.clone()),
        Some(None) => r.ended = false,
        None => {}
    }
    r
}

/// What the peers saw of one call.
pub(crate) fn report_call(journal: &Journal, call_id: &str) -> CallReport {
    let entries: Vec<Entry> = journal
        .entries()
        .into_iter()
        .filter(|e| e.summary.call_id == call_id)
        .collect();
    let clouds = ["primary", "secondary", "hot-1", "hot-2"];
    let received = |peer: &str, pred: &dyn Fn(&Summary) -> bool| {
        entries
            .iter()
            .filter(|e| e.peer == peer && e.dir == Dir::In && pred(&e.summary))
            .count()
    };
    let mut invited: Vec<(std::time::SystemTime, String)> = entries
        .iter()
        .filter(|e| e.dir == Dir::In && clouds.contains(&e.peer.as_str()) && e.summary.is("INVITE"))
        .map(|e| (e.at, e.peer.clone()))
        .collect();
    invited.sort();
    invited.dedup_by(|a, b| a.1 == b.1);
    let finals: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.peer == "carrier"
                && e.dir == Dir::In
                && e.summary.cseq_method == "INVITE"
                && e.summary.code.is_some_and(|c| c >= 200)
        })
        .collect();
    let code = finals.first().and_then(|e| e.summary.code).unwrap_or(0);
    let tag_cloud = |e: &Entry| {
        let to = e.header("To").unwrap_or_default();
        clouds
            .iter()
            .find(|c| to.contains(&format!("tag={c}-")))
            .map(|c| c.to_string())
    };
    let answered_by = finals
        .first()
        .filter(|e| e.summary.code == Some(200))
        .and_then(|e| tag_cloud(e));
    let ghosts_relayed = finals
        .iter()
        .filter(|e| e.summary.code == Some(200))
        .filter(|e| tag_cloud(e) != answered_by)
        .count();
    // A BYE at a cloud that did not win the call came from pointsman: it tore a late answer
    // down (the carrier only ever hangs up on the cloud that answered it).
    let ghosts_torn_down = clouds
        .iter()
        .filter(|c| Some(c.to_string()) != answered_by)
        .map(|c| received(c, &|s| s.is("BYE")))
        .sum();
    let hung_up = received("carrier", &|s| s.is_response(200, "BYE")) > 0;
    CallReport {
        ended: (code >= 300) || (code == 200 && hung_up),
        call_id: call_id.to_string(),
        code,
        answered_by,
        tried: invited.into_iter().map(|(_, c)| c).collect(),
        // Distinct CANCELs (a CANCEL nobody answers is retransmitted, as RFC 3261 says).
        cancels: {
            let mut branches: Vec<&str> = entries
                .iter()
                .filter(|e| e.dir == Dir::In && clouds.contains(&e.peer.as_str()))
                .filter(|e| e.summary.is("CANCEL"))
                .map(|e| e.summary.branch.as_str())
                .collect();
            branches.sort_unstable();
            branches.dedup();
            branches.len()
        },
        ghosts_torn_down,
        ghosts_relayed,
        media: None,
    }
}

fn total(calls: &[CallReport]) -> Report {
    let mut r = Report {
        calls: calls.len(),
        ..Report::default()
    };
    for c in calls {
        match &c.answered_by {
            Some(by) => {
                r.answered += 1;
                *r.answered_by.entry(by.clone()).or_default() += 1;
            }
            None => r.failed += 1,
        }
        match &c.media {
            Some(h) => r.media.add(h),
            // A forked call tried its clouds at once: it did not fail over.
            None if c.tried.len() > 1 => r.failed_over += 1,
            None => {}
        }
        r.cancels += c.cancels;
        r.ghosts_torn_down += c.ghosts_torn_down;
        r.ghosts_relayed += c.ghosts_relayed;
    }
    r
}

/// Prints the destination state changes the watcher saw since the last call.
fn show_changes(
    out: &mut (dyn Write + Send),
    changes: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let lines = std::mem::take(&mut *lock(changes));
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// Polls pointsman's admin API and records every destination state change, as an operator's
/// `pointsman status` would show it.
async fn watch_states(
    admin: String,
    changes: Arc<std::sync::Mutex<Vec<String>>>,
    states: Arc<std::sync::Mutex<Vec<StateChange>>>,
    started: Instant,
) {
    let mut last: BTreeMap<String, pointsman_protocol::health::State> = BTreeMap::new();
    loop {
        let addr = admin.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            crate::admin::fetch_destinations(&addr, None, Duration::from_millis(500))
        })
        .await;
        if let Ok(Ok(dests)) = fetched {
            for d in dests {
                if last.get(&d.name) != Some(&d.state) {
                    let at = started.elapsed().as_secs_f64();
                    let line = format!(
                        "   [{at:5.1}s] destination {} is {}: {}",
                        d.name, d.state, d.reason
                    );
                    changes.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                    lock(&states).push(StateChange {
                        at: started.elapsed(),
                        destination: d.name.clone(),
                        state: d.state.to_string(),
                    });
                    last.insert(d.name, d.state);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointsman_sim::Switch;

    #[test]
    fn every_phase_name_parses_and_a_wrong_one_lists_them() {
        assert_eq!(Failure::parse("hot-hot"), Ok(Failure::HotHot));
        assert_eq!(Failure::parse(" media "), Ok(Failure::HotHot));
        assert_eq!(Failure::parse("503"), Ok(Failure::Overload));
        let e = Failure::parse("hot").unwrap_err();
        assert!(
            e.contains("use 503, brownout, dies, recovers or hot-hot"),
            "{e}"
        );
    }

    #[test]
    fn the_drill_config_relays_only_the_hot_hot_routes_media() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let text = config(ip, 25060, Duration::from_secs(8));
        let (result, warnings) = crate::config::Config::parse_with_warnings(&text, "drill.toml");
        let c = result.unwrap();
        assert!(warnings.is_empty(), "{warnings:#?}");
        let m = c.media.unwrap();
        assert_eq!((m.carrier_ip, m.cloud_ip), (ip, ip));
        assert_eq!((m.port_min, m.port_max), (25160, 25559));
        let r = &c.router;
        let route_of = |to: &str| {
            let call = routing_rules::Call {
                to_user: Some(to),
                ..routing_rules::Call::default()
            };
            r.rules.route(r.route_for(&call).unwrap()).clone()
        };
        let hot = route_of(HOT_HOT_NUMBER);
        assert_eq!(hot.name, "hot-hot");
        assert_eq!(hot.media, routing_rules::spec::MediaMode::Relay);
        let other = route_of("+15551230000");
        assert_eq!(other.name, "default");
        assert_eq!(other.media, routing_rules::spec::MediaMode::Off);
    }

    #[test]
    fn a_port_without_room_for_the_relay_is_refused_before_anything_starts() {
        let opts = Options {
            bin: "pointsman".into(),
            rate: 4.0,
            duration: Duration::from_secs(8),
            failures: vec![Failure::HotHot],
            ip: "127.0.0.1".parse().unwrap(),
            base_port: 65300,
            hold: Duration::from_millis(100),
            timeline: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let e = rt.block_on(run(opts, &mut out)).unwrap_err();
        assert!(e.to_string().contains("leaves no room"), "{e}");
    }

    /// What the carrier heard: one switch `from` → `to` after `gap_ms`, then `tweak`.
    fn heard(cut: Cut, gap_ms: u64, tweak: impl FnOnce(&mut MediaAnalysis)) -> HeardReport {
        let mut a = MediaAnalysis {
            packets: 130,
            switches: vec![Switch {
                from: HOT_1,
                to: HOT_2,
                index: 30,
                gap: Duration::from_millis(gap_ms),
                lost_frames: (gap_ms as f64 / 20.0).round() as u32,
                marker: true,
            }],
            stray_packets: 0,
            ssrc_constant: true,
            seq_continuous: true,
            seq_breaks: 0,
            ts_consistent: true,
            worst_ts_deviation: 0,
            wrong_branch_after_last_switch: 0,
        };
        tweak(&mut a);
        HeardReport::judge(cut, &a)
    }

    /// Spoils what the carrier heard in one way.
    type Fault = fn(&mut MediaAnalysis);

    #[test]
    fn only_one_marked_switch_to_the_standby_as_one_stream_is_clean() {
        assert!(heard(Cut::ErrorResponse, 0, |_| {}).clean());
        let faults: [(&str, Fault); 7] = [
            ("no switch", |a| a.switches.clear()),
            ("two switches", |a| {
                let back = a.switches[0].clone();
                a.switches.push(back)
            }),
            ("wrong way", |a| a.switches[0].from = HOT_2),
            ("no marker", |a| a.switches[0].marker = false),
            ("SSRC changed", |a| a.ssrc_constant = false),
            ("seq gap", |a| a.seq_continuous = false),
            ("failed cloud heard after", |a| {
                a.wrong_branch_after_last_switch = 2
            }),
        ];
        for (what, fault) in faults {
            let h = heard(Cut::Silence, 40, fault);
            assert!(!h.clean(), "{what}: {h:?}");
            assert!(heard_line(&h).ends_with("NOT CLEAN"), "{what}");
        }
    }

    fn hot_hot_call(n: usize, media: HeardReport) -> CallReport {
        CallReport {
            call_id: format!("drill-{n:04}"),
            code: 200,
            answered_by: Some("hot-2".into()),
            tried: vec!["hot-1".into(), "hot-2".into()],
            cancels: 0,
            ghosts_torn_down: 0,
            ghosts_relayed: 0,
            ended: true,
            media: Some(media),
        }
    }

    #[test]
    fn the_summary_counts_clean_switches_and_gives_the_gap_p50_and_max() {
        let calls = [
            hot_hot_call(0, heard(Cut::ErrorResponse, 0, |_| {})),
            hot_hot_call(1, heard(Cut::Silence, 40, |_| {})),
            hot_hot_call(2, heard(Cut::ErrorResponse, 2, |_| {})),
            hot_hot_call(3, heard(Cut::Silence, 60, |_| {})),
        ];
        let r = total(&calls);
        assert_eq!((r.media.calls, r.media.clean), (4, 4));
        assert_eq!(r.failed_over, 0, "a forked call does not fail over");
        assert!(r.passed());
        let shown = r.to_string();
        for line in [
            "  hot-hot calls           4",
            "    switched cleanly      4",
            "    wrong-branch packets  0",
            "    switch gap            p50 2 ms (0 frames), max 60 ms (3 frames)",
            "      after 500           p50 0 ms (0 frames), max 2 ms (0 frames)",
            "      after silence       p50 40 ms (2 frames), max 60 ms (3 frames)",
            "every hot-hot call switched cleanly",
        ] {
            assert!(shown.contains(line), "{line:?} not in\n{shown}");
        }
        assert!(line(&calls[1]).contains("drill-0001  hot-1 + hot-2  answered by hot-2"));
        assert!(line(&calls[1]).contains(
            "heard: hot-1 cut by silence, switch hot-1 -> hot-2: gap 40 ms (2 frames lost), \
             marker, one SSRC, seq continuous, 0 wrong-branch packets"
        ));

        let mut unclean = calls.to_vec();
        unclean.push(hot_hot_call(
            4,
            heard(Cut::Silence, 40, |a| a.wrong_branch_after_last_switch = 3),
        ));
        let r = total(&unclean);
        assert_eq!(
            (r.media.calls, r.media.clean, r.media.wrong_branch),
            (5, 4, 3)
        );
        assert!(!r.passed());
        assert!(r.to_string().ends_with("FAIL"));
    }

    #[test]
    fn the_median_is_the_lower_middle() {
        assert_eq!(median::<u64>(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[1, 2, 3, 4]), Some(2));
        assert_eq!(median(&[1, 2, 3]), Some(2));
        assert_eq!(gap_figures(&[]), "-");
    }
}
