//! `pointsman drill`: a failover drill anyone can run with nothing else installed. It starts a
//! pointsman process on loopback between a simulated carrier and two simulated clouds (the
//! simulators the tests use), places calls at a steady rate, and walks the primary cloud
//! through the failures pointsman exists for: it answers 503, it browns out past the
//! provisional timer and answers late anyway, it dies, it comes back. Every call is shown as it
//! ends (where it went, which CANCELs and ghost teardowns it took), then a summary computed from
//! what the simulated peers saw on the wire.
//!
//! It owns the drill's script and its report; it must not reach into the pointsman under test
//! (only packets cross, as in production).

use pointsman_sim::{Behaviour, Carrier, Cloud, Dir, Entry, Journal, Summary};
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
}

impl Failure {
    pub(crate) fn parse(s: &str) -> Result<Failure, String> {
        match s.trim() {
            "503" | "overload" => Ok(Failure::Overload),
            "brownout" => Ok(Failure::Brownout),
            "dies" | "dead" => Ok(Failure::Dies),
            "recovers" | "recover" => Ok(Failure::Recovers),
            other => Err(format!(
                "unknown failure {other:?}: use 503, brownout, dies or recovers"
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
    /// pointsman listens here; the primary, secondary and carrier take the next ports.
    pub base_port: u16,
    /// How long an answered call lasts before the carrier hangs up.
    pub hold: Duration,
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
    /// Over: failed, or answered and hung up (the carrier got the 200 to its BYE).
    pub ended: bool,
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
}

impl Report {
    /// Every call answered, no ghost ever reached the carrier, and every message pointsman
    /// sent reads with an independent parser.
    pub(crate) fn passed(&self) -> bool {
        self.calls > 0
            && self.answered == self.calls
            && self.ghosts_relayed == 0
            && self.unreadable == 0
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
        write!(
            f,
            "  verdict                 {}",
            if self.passed() {
                "PASS: every call answered, no ghost call reached the carrier"
            } else {
                "FAIL"
            }
        )
    }
}

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

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#,
        p = base + 1,
        s = base + 2,
        a = base + 4,
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

    let admin = SocketAddr::new(opts.ip, opts.base_port + 4).to_string();
    let changes = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = tokio::spawn(watch_states(admin, changes.clone(), Instant::now()));
    let phases = 1 + opts.failures.len();
    let phase_len = phase_len(&opts);
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let start = Instant::now();
    let mut calls = Vec::new();
    let mut shown = 0;
    for phase in 0..phases {
        let banner = match phase {
            0 => "both clouds healthy",
            n => opts.failures[n - 1].describe(),
        };
        writeln!(out, "== phase {}: {banner}", phase + 1)?;
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
            tokio::spawn(place_call(
                carrier.clone(),
                journal.clone(),
                call_id,
                opts.hold,
            ));
            tokio::time::sleep(interval).await;
            shown = show_finished(out, &journal, &calls, shown)?;
            show_changes(out, &changes)?;
        }
    }
    // Let the last calls finish (a brownout call takes the provisional timer plus ringing).
    let drain_until = Instant::now() + Duration::from_secs(4) + opts.hold;
    while Instant::now() < drain_until && shown < calls.len() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = show_finished(out, &journal, &calls, shown)?;
        show_changes(out, &changes)?;
    }
    watcher.abort();
    show_changes(out, &changes)?;
    // Late ghost teardowns and hang-ups settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports: Vec<CallReport> = calls.iter().map(|c| report_call(&journal, c)).collect();
    for r in reports.iter().skip(shown) {
        writeln!(out, "{}", line(r))?;
    }
    let mut report = total(&reports);
    (report.messages, report.unreadable) = readability(&journal, out)?;
    writeln!(out, "\n{report}")?;
    Ok(report)
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
    calls: &[String],
    mut shown: usize,
) -> std::io::Result<usize> {
    while let Some(call_id) = calls.get(shown) {
        let r = report_call(journal, call_id);
        if !r.ended {
            break;
        }
        writeln!(out, "{}", line(&r))?;
        shown += 1;
    }
    Ok(shown)
}

fn line(r: &CallReport) -> String {
    let mut s = format!("{}  {}", r.call_id, r.tried.join(" -> "));
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
    s
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

/// What the peers saw of one call.
pub(crate) fn report_call(journal: &Journal, call_id: &str) -> CallReport {
    let entries: Vec<Entry> = journal
        .entries()
        .into_iter()
        .filter(|e| e.summary.call_id == call_id)
        .collect();
    let clouds = ["primary", "secondary"];
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
        if c.tried.len() > 1 {
            r.failed_over += 1;
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
    let lines = std::mem::take(&mut *changes.lock().unwrap_or_else(|p| p.into_inner()));
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
                    last.insert(d.name, d.state);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
