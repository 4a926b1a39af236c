//! `pointsman announce`: the sidecar that ties a node's BGP announcement of the anycast address to
//! the health of its proxy process.
//!
//! A pair of nodes shares one anycast /32, announced by BIRD on each node. BIRD alone keeps
//! announcing as long as BIRD lives, so a dead, frozen or drained proxy would keep attracting
//! traffic. This sidecar polls the node's `GET /ready` and drives BIRD's control socket to
//! `enable` or `disable` one protocol (a static route, `anycast` by default) that BIRD exports
//! over BGP. It starts by disabling (nothing is announced before the proxy is ready), withdraws
//! at once on a definite answer (503: drained or stopping; a refused connection: the proxy
//! process is gone) and after `fall` doubtful probes in a row (timeouts: a frozen process),
//! announces after `rise` good ones, and withdraws on SIGTERM/SIGINT.
//!
//! [`Announcer`] decides, sans IO: it is fed probe results and BIRD outcomes with the time, and
//! says what BIRD must be told and when; its tests pass the time in. [`run`] is the I/O around
//! it: the probe (the admin client of `pointsman status`, [`crate::admin::http_request`]) and
//! the BIRD control socket client ([`Bird`]).
//!
//! It must not: announce before a probe said ready, keep an announcement after the proxy
//! stopped answering, or talk to the proxy other than through `GET /ready`. It holds no call
//! state and does not touch the routing table itself (BIRD does).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tracing::{debug, error, info, warn};

/// What one probe of `GET /ready` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// 200: the node is serving.
    Ready,
    /// 503: the proxy says it is not ready (drained, or stopping: a stopping node answers new
    /// INVITEs with 503). The text says why.
    NotReady(String),
    /// The connection was refused: nothing listens on the admin port, the proxy is gone.
    Refused,
    /// No answer within the timeout, or another answer than 200 or 503 (a frozen, overloaded
    /// or misconfigured process).
    Failed(String),
}

/// What BIRD must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `enable <protocol>`: announce the anycast route.
    Enable,
    /// `disable <protocol>`: withdraw it.
    Disable,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Enable => "enable",
            Action::Disable => "disable",
        }
    }
}

/// A change of what the node should announce, with the reason for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub reason: String,
}

/// Rise and fall counts and BIRD retry backoff.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Good probes in a row before announcing...
    pub rise: u32,
    /// ...spanning at least `rise - 1` of these (the probe interval): after a stall, the
    /// answers to probes queued in the kernel come back to back, and two answers a millisecond
    /// apart say little about a steady node.
    pub rise_spacing: Duration,
    /// Failed probes in a row before withdrawing (a refused connection withdraws at once).
    pub fall: u32,
    /// First wait before retrying BIRD after a failure; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How often the desired state is told to BIRD again while nothing changes: a restarted
    /// BIRD comes back with the protocol disabled (its config says so) and must be told again.
    pub reassert: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            rise: 2,
            fall: 3,
            rise_spacing: Duration::from_millis(100),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            reassert: Duration::from_secs(1),
        }
    }
}

/// The decision logic: whether to announce, and what BIRD still has to be told.
#[derive(Debug)]
pub struct Announcer {
    rules: Rules,
    /// Whether the node should be announced now.
    want: bool,
    /// What BIRD was last told successfully and when; `None` when unknown (at start, or after
    /// BIRD failed).
    applied: Option<(Action, Instant)>,
    good: u32,
    /// When the current run of good probes began.
    good_since: Option<Instant>,
    bad: u32,
    /// When the current run of failed probes began (for the log: how long the node was away).
    bad_since: Option<Instant>,
    /// After a BIRD failure: no attempt before this.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Announcer {
    /// Starts withdrawn: the first thing BIRD is told is `disable`.
    pub fn new(rules: Rules) -> Announcer {
        Announcer {
            rules: Rules {
                rise: rules.rise.max(1),
                fall: rules.fall.max(1),
                ..rules
            },
            want: false,
            applied: None,
            good: 0,
            good_since: None,
            bad: 0,
            bad_since: None,
            retry_at: None,
            backoff: rules.backoff,
        }
    }

    /// Whether the node should be announced now.
    pub fn announced(&self) -> bool {
        self.want
    }

    /// Feeds one probe result; returns the change of the desired state it caused, if any.
    pub fn probe(&mut self, probe: &Probe, now: Instant) -> Option<Change> {
        let down = |reason: String| Change {
            action: Action::Disable,
            reason,
        };
        if *probe == Probe::Ready {
            self.bad_since = None;
            self.good_since.get_or_insert(now);
        } else {
            self.bad_since.get_or_insert(now);
            self.good_since = None;
        }
        let away = self
            .bad_since
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        match probe {
            Probe::Ready => {
                self.bad = 0;
                self.good = self.good.saturating_add(1);
                let span = self
                    .good_since
                    .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                let needed = self
                    .rules
                    .rise_spacing
                    .checked_mul(self.rules.rise.saturating_sub(1))
                    .unwrap_or(Duration::MAX);
                let steady = span >= needed;
                if !self.want && self.good >= self.rules.rise && steady {
                    self.want = true;
                    return Some(Change {
                        action: Action::Enable,
                        reason: format!("/ready answered 200 {} time(s) in a row", self.good),
                    });
                }
                None
            }
            // Definite answers withdraw at once; the fall count is for doubtful ones. A refused
            // connection: the proxy process is gone, and waiting would only keep attracting
            // traffic to a port nobody listens on. A 503: the proxy itself says so, and a
            // stopping one answers every new INVITE with 503 until the route is gone.
            Probe::Refused | Probe::NotReady(_) => {
                self.good = 0;
                self.bad = self.bad.saturating_add(1);
                if self.want {
                    self.want = false;
                    return Some(down(match probe {
                        Probe::NotReady(why) => why.clone(),
                        _ => {
                            "the admin API refused the connection: the proxy is not running".into()
                        }
                    }));
                }
                None
            }
            Probe::Failed(why) => {
                self.good = 0;
                self.bad = self.bad.saturating_add(1);
                if self.want && self.bad >= self.rules.fall {
                    self.want = false;
                    return Some(down(format!(
                        "{} failed probe(s) in a row over {} ms, the last: {why}",
                        self.bad,
                        away.as_millis()
                    )));
                }
                None
            }
        }
    }

    /// What to tell BIRD now, if anything: the desired state when BIRD has not confirmed it
    /// (and no retry wait runs), or again every `reassert`.
    pub fn due(&self, now: Instant) -> Option<Action> {
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let want = if self.want {
            Action::Enable
        } else {
            Action::Disable
        };
        match self.applied {
            Some((told, at))
                if told == want && now.saturating_duration_since(at) < self.rules.reassert =>
            {
                None
            }
            _ => Some(want),
        }
    }

    /// BIRD did `action`.
    pub fn told(&mut self, action: Action, now: Instant) {
        self.applied = Some((action, now));
        self.retry_at = None;
        self.backoff = self.rules.backoff;
    }

    /// BIRD could not be told (gone, stuck, or it refused the command): the next attempt waits a
    /// backoff that doubles at each failure in a row; returns that wait.
    pub fn bird_failed(&mut self, now: Instant) -> Duration {
        self.applied = None;
        let wait = self.backoff;
        self.retry_at = Some(now + wait);
        self.backoff = (self.backoff * 2).min(self.rules.max_backoff);
        wait
    }

    /// Whether BIRD has confirmed the last change (for the log: "announced" is only said once
    /// BIRD did it).
    pub fn confirmed(&self) -> Option<Action> {
        self.applied.map(|(a, _)| a)
    }
}

/// Classifies what the admin client returned for `GET /ready`.
pub fn classify(result: Result<crate::admin::HttpReply, crate::admin::ClientError>) -> Probe {
    use crate::admin::ClientError;
    match result {
        Ok(reply) if reply.status == 200 => Probe::Ready,
        Ok(reply) => {
            let why = format!(
                "/ready answered {}: {}",
                reply.status,
                reply.text().trim().chars().take(200).collect::<String>()
            );
            if reply.status == 503 {
                Probe::NotReady(why)
            } else {
                Probe::Failed(why)
            }
        }
        Err(ClientError::Unreachable { source, .. })
            if source.kind() == io::ErrorKind::ConnectionRefused =>
        {
            Probe::Refused
        }
        Err(e) => Probe::Failed(e.to_string()),
    }
}

/// A BIRD protocol name the control socket can take unquoted: letters, digits and `_`, not
/// starting with a digit (nothing that could end the command line or start another).
pub fn valid_protocol(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How BIRD answered a command: `Ok` with its text on a `0xxx` final line, `Err` with it on an
/// `8xxx`/`9xxx` (runtime or parse error).
pub type BirdReply = Result<String, String>;

/// Reads one whole BIRD reply from the lines of `read_line` (doc/reply_codes): continuation
/// lines are `DDDD-text` or ` text`, the last one is `DDDD text`; `+DDDD` lines are
/// asynchronous notices and are skipped.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<BirdReply> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "BIRD closed the control socket",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with('+') {
            continue;
        }
        let bytes = line.as_bytes();
        let coded = bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit);
        let part = if coded {
            line.get(5..).unwrap_or_default().trim()
        } else {
            line.trim()
        };
        if !part.is_empty() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(part);
        }
        if coded && bytes[4] == b' ' {
            return Ok(match bytes[0] {
                b'8' | b'9' => Err(format!("{} {text}", line.get(..4).unwrap_or_default())),
                _ => Ok(text),
            });
        }
    }
}

/// A connection to BIRD's control socket (`birdc`'s protocol: one command a line).
pub struct Bird {
    reader: BufReader<UnixStream>,
}

impl Bird {
    /// Connects and reads the greeting (`0001 BIRD 2.0.12 ready.`).
    pub async fn connect(path: &std::path::Path) -> io::Result<Bird> {
        let stream = UnixStream::connect(path).await?;
        let mut bird = Bird {
            reader: BufReader::new(stream),
        };
        match read_reply(&mut bird.reader).await? {
            Ok(_) => Ok(bird),
            Err(e) => Err(io::Error::other(format!("BIRD greeted with an error: {e}"))),
        }
    }

    /// `enable <protocol>` or `disable <protocol>`; "already enabled/disabled" is success.
    pub async fn tell(&mut self, action: Action, protocol: &str) -> io::Result<BirdReply> {
        let line = format!("{} {protocol}\n", action.verb());
        self.reader.get_mut().write_all(line.as_bytes()).await?;
        read_reply(&mut self.reader).await
    }
}

/// Settings of `pointsman announce`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node's admin API, `host:port`.
    pub admin: String,
    pub token: Option<String>,
    /// BIRD's control socket.
    pub bird_socket: PathBuf,
    /// The BIRD protocol that holds the anycast route.
    pub protocol: String,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// A probe with no answer within this failed.
    pub timeout: Duration,
    pub rules: Rules,
}

/// How long one command to BIRD may take (it answers in microseconds when alive).
const BIRD_TIMEOUT: Duration = Duration::from_secs(1);

/// The sidecar's I/O: probe, decide, tell BIRD, until SIGTERM or SIGINT; then withdraw. An
/// error only when it cannot start (signal handlers) or cannot withdraw at the end.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    if !valid_protocol(&opts.protocol) {
        anyhow::bail!(
            "--protocol {:?}: a BIRD protocol name is letters, digits and _",
            opts.protocol
        );
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(
        admin = %opts.admin,
        bird = %opts.bird_socket.display(),
        protocol = %opts.protocol,
        interval = ?opts.interval,
        timeout = ?opts.timeout,
        rise = opts.rules.rise,
        fall = opts.rules.fall,
        "announce: watching /ready; withdrawn until it answers ready"
    );
    let mut machine = Announcer::new(opts.rules);
    let mut bird: Option<Bird> = None;
    let stopped_by = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        never = watch(&opts, &mut machine, &mut bird) => match never {},
    };
    // A fresh connection: the one in use may have been cut in the middle of a command.
    drop(bird);
    let withdrawn = tokio::time::timeout(BIRD_TIMEOUT, async {
        let mut bird = Bird::connect(&opts.bird_socket).await?;
        bird.tell(Action::Disable, &opts.protocol).await
    })
    .await;
    match withdrawn {
        Ok(Ok(Ok(_))) => {
            info!(protocol = %opts.protocol, "withdrawn: {stopped_by}, the sidecar stops");
            Ok(())
        }
        Ok(Ok(Err(e))) => anyhow::bail!("stopping ({stopped_by}): BIRD refused to disable: {e}"),
        Ok(Err(e)) => anyhow::bail!(
            "stopping ({stopped_by}): cannot reach BIRD at {} to withdraw: {e}",
            opts.bird_socket.display()
        ),
        Err(_) => anyhow::bail!("stopping ({stopped_by}): BIRD did not answer within 1 s"),
    }
}

/// The loop: one probe per interval, and BIRD told whatever the machine says is due. It never
/// ends: only a signal stops the sidecar.
async fn watch(
    opts: &Options,
    machine: &mut Announcer,
    bird: &mut Option<Bird>,
) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval(opts.interval);
    // A probe that took longer than the interval is followed at once, not by a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe: Option<Probe> = None;
    loop {
        // BIRD first: at start this is the `disable` that comes before any probe.
        apply(opts, machine, bird).await;
        ticks.tick().await;
        let (admin, token, timeout) = (opts.admin.clone(), opts.token.clone(), opts.timeout);
        let probe = match tokio::task::spawn_blocking(move || {
            crate::admin::http_request(&admin, "GET", "/ready", token.as_deref(), timeout)
        })
        .await
        {
            Ok(result) => classify(result),
            Err(e) => Probe::Failed(format!("the probe task failed: {e}")),
        };
        if last_probe.as_ref() != Some(&probe) {
            debug!(?probe, "probe result changed");
        }
        if let Some(change) = machine.probe(&probe, Instant::now()) {
            match change.action {
                Action::Enable => info!(reason = %change.reason, "node ready: announcing"),
                Action::Disable => warn!(reason = %change.reason, "node not ready: withdrawing"),
            }
        }
        last_probe = Some(probe);
    }
}

/// Tells BIRD what is due, connecting first if needed; a failure drops the connection and
/// waits the backoff the machine gives.
async fn apply(opts: &Options, machine: &mut Announcer, bird: &mut Option<Bird>) {
    let Some(action) = machine.due(Instant::now()) else {
        return;
    };
    let first = machine.confirmed() != Some(action);
    // The connection is put back only after a whole exchange: one cut by the timeout or an
    // error is dropped, and the next attempt connects afresh.
    let outcome = tokio::time::timeout(BIRD_TIMEOUT, async {
        let mut conn = match bird.take() {
            Some(conn) => conn,
            None => Bird::connect(&opts.bird_socket).await?,
        };
        let reply = conn.tell(action, &opts.protocol).await?;
        *bird = Some(conn);
        Ok::<_, io::Error>(reply)
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "BIRD did not answer within 1 s",
        ))
    });
    let now = Instant::now();
    match outcome {
        Ok(Ok(text)) => {
            machine.told(action, now);
            if first {
                match action {
                    Action::Enable => {
                        info!(protocol = %opts.protocol, bird = %text, "announced")
                    }
                    Action::Disable => {
                        info!(protocol = %opts.protocol, bird = %text, "withdrawn")
                    }
                }
            }
        }
        Ok(Err(refused)) => {
            // The connection is fine; the command is not (e.g. no such protocol).
            let wait = machine.bird_failed(now);
            error!(
                protocol = %opts.protocol,
                bird = %refused,
                retry_in = ?wait,
                "BIRD refused `{} {}`",
                action.verb(),
                opts.protocol
            );
        }
        Err(e) => {
            let wait = machine.bird_failed(now);
            warn!(
                socket = %opts.bird_socket.display(),
                error = %e,
                retry_in = ?wait,
                "cannot reach BIRD to {}: retrying",
                action.verb()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::default()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn failed() -> Probe {
        Probe::Failed("timed out".into())
    }

    #[test]
    fn starts_by_withdrawing_and_announces_only_after_rise_good_probes() {
        let t0 = Instant::now();
        let mut a = Announcer::new(rules());
        assert_eq!(a.due(t0), Some(Action::Disable), "disable before any probe");
        a.told(Action::Disable, t0);
        assert_eq!(a.due(t0 + ms(10)), None);
        assert_eq!(
            a.probe(&Probe::Ready, t0 + ms(100)),
            None,
            "one is not rise 2"
        );
        assert!(!a.announced());
        assert_eq!(a.due(t0 + ms(100)), None);
        let change = a.probe(&Probe::Ready, t0 + ms(200)).unwrap();
        assert_eq!(change.action, Action::Enable);
        assert!(change.reason.contains("2 time(s)"), "{}", change.reason);
        assert_eq!(a.due(t0 + ms(200)), Some(Action::Enable));
        a.told(Action::Enable, t0 + ms(200));
        assert_eq!(a.confirmed(), Some(Action::Enable));
        assert_eq!(
            a.probe(&Probe::Ready, t0 + ms(300)),
            None,
            "no change twice"
        );
    }

    #[test]
    fn rise_answers_must_span_the_probe_interval() {
        // After a stall, queued probes are answered back to back: 2 ms apart is not rise 2.
        let t0 = Instant::now();
        let mut a = Announcer::new(rules());
        a.probe(&failed(), t0);
        assert_eq!(a.probe(&Probe::Ready, t0 + ms(100)), None);
        assert_eq!(a.probe(&Probe::Ready, t0 + ms(102)), None);
        assert!(!a.announced());
        assert!(a.probe(&Probe::Ready, t0 + ms(200)).is_some());
    }

    #[test]
    fn a_good_probe_between_failures_resets_the_rise_count() {
        let t0 = Instant::now();
        let mut a = Announcer::new(rules());
        a.probe(&Probe::Ready, t0);
        a.probe(&failed(), t0 + ms(100));
        assert_eq!(a.probe(&Probe::Ready, t0 + ms(200)), None);
        assert!(!a.announced());
        assert!(a.probe(&Probe::Ready, t0 + ms(300)).is_some());
    }

    /// An announced node: two good probes, BIRD told.
    fn announced(t0: Instant) -> Announcer {
        let mut a = Announcer::new(rules());
        a.probe(&Probe::Ready, t0 - ms(100));
        assert!(a.probe(&Probe::Ready, t0).is_some());
        a.told(Action::Enable, t0);
        a
    }

    #[test]
    fn doubtful_probes_withdraw_after_the_fall_count() {
        let other_status = Probe::Failed("/ready answered 500: oops".into());
        for bad in [failed(), other_status] {
            let t0 = Instant::now();
            let mut a = announced(t0);
            assert_eq!(a.probe(&bad, t0 + ms(100)), None);
            assert_eq!(a.probe(&bad, t0 + ms(200)), None);
            assert!(a.announced(), "2 failures are not fall 3");
            let change = a.probe(&bad, t0 + ms(300)).unwrap();
            assert_eq!(change.action, Action::Disable);
            assert!(
                change
                    .reason
                    .starts_with("3 failed probe(s) in a row over 200 ms"),
                "{change:?}"
            );
            assert_eq!(a.due(t0 + ms(300)), Some(Action::Disable));
        }
    }

    #[test]
    fn a_good_probe_resets_the_fall_count() {
        let t0 = Instant::now();
        let mut a = announced(t0);
        a.probe(&failed(), t0);
        a.probe(&failed(), t0);
        a.probe(&Probe::Ready, t0);
        a.probe(&failed(), t0);
        assert_eq!(a.probe(&failed(), t0), None);
        assert!(a.announced());
    }

    #[test]
    fn a_refused_connection_or_a_503_withdraws_at_once() {
        let stopping = r#"/ready answered 503: {"ready":false,"reason":"stopping"}"#;
        for (probe, reason) in [
            (Probe::Refused, "refused the connection"),
            (Probe::NotReady(stopping.into()), stopping),
        ] {
            let t0 = Instant::now();
            let mut a = announced(t0);
            let change = a.probe(&probe, t0 + ms(100)).unwrap();
            assert_eq!(change.action, Action::Disable);
            assert!(change.reason.contains(reason), "{change:?}");
            assert_eq!(a.due(t0 + ms(100)), Some(Action::Disable));
            // And it comes back after rise good probes only.
            assert_eq!(a.probe(&Probe::Ready, t0 + ms(200)), None);
            assert!(a.probe(&Probe::Ready, t0 + ms(300)).is_some());
        }
    }

    #[test]
    fn bird_failures_back_off_doubling_and_the_desired_state_is_reapplied() {
        let t0 = Instant::now();
        let mut a = Announcer::new(rules());
        assert_eq!(a.bird_failed(t0), ms(100));
        assert_eq!(a.due(t0 + ms(99)), None, "waits the backoff");
        assert_eq!(a.due(t0 + ms(100)), Some(Action::Disable));
        assert_eq!(a.bird_failed(t0 + ms(100)), ms(200));
        assert_eq!(a.bird_failed(t0 + ms(300)), ms(400));
        // The node became ready while BIRD was away: when it is back it gets `enable`.
        a.probe(&Probe::Ready, t0 + ms(400));
        a.probe(&Probe::Ready, t0 + ms(500));
        assert_eq!(a.due(t0 + ms(600)), None, "still waiting the 400 ms");
        assert_eq!(a.due(t0 + ms(700)), Some(Action::Enable));
        a.told(Action::Enable, t0 + ms(700));
        // Success resets the backoff.
        assert_eq!(a.bird_failed(t0 + ms(800)), ms(100));
    }

    #[test]
    fn the_backoff_stops_growing_at_its_maximum() {
        let t0 = Instant::now();
        let mut a = Announcer::new(rules());
        let waits: Vec<_> = (0..8).map(|_| a.bird_failed(t0)).collect();
        assert_eq!(waits[..6], [100, 200, 400, 800, 1600, 2000].map(ms));
        assert_eq!(waits[7], ms(2000));
    }

    #[test]
    fn the_desired_state_is_told_again_every_reassert_period() {
        // A BIRD that restarted has the protocol disabled again (its config): telling it again
        // once a second puts the announcement back.
        let t0 = Instant::now();
        let a = announced(t0);
        assert_eq!(a.due(t0 + ms(999)), None);
        assert_eq!(a.due(t0 + ms(1000)), Some(Action::Enable));
    }

    #[test]
    fn rise_and_fall_of_zero_act_as_one() {
        let t0 = Instant::now();
        let mut a = Announcer::new(Rules {
            rise: 0,
            fall: 0,
            ..rules()
        });
        assert!(a.probe(&Probe::Ready, t0).is_some());
        assert!(a.probe(&failed(), t0).is_some());
    }

    #[test]
    fn probe_results_are_classified_from_the_admin_client() {
        use crate::admin::{ClientError, HttpReply};
        let reply = |status, body: &str| HttpReply {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(classify(Ok(reply(200, r#"{"ready":true}"#))), Probe::Ready);
        assert_eq!(
            classify(Ok(reply(503, r#"{"ready":false,"reason":"draining"}"#))),
            Probe::NotReady(r#"/ready answered 503: {"ready":false,"reason":"draining"}"#.into())
        );
        let refused = ClientError::Unreachable {
            addr: "x".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(classify(Err(refused)), Probe::Refused);
        assert!(matches!(
            classify(Ok(reply(401, "missing or wrong bearer token"))),
            Probe::Failed(why) if why.starts_with("/ready answered 401")
        ));
        let timed_out = ClientError::Io {
            addr: "x".into(),
            source: io::Error::from(io::ErrorKind::WouldBlock),
        };
        assert!(matches!(classify(Err(timed_out)), Probe::Failed(_)));
    }

    #[test]
    fn protocol_names_are_plain_symbols() {
        assert!(valid_protocol("anycast"));
        assert!(valid_protocol("_any_1"));
        for bad in [
            "",
            "1any",
            "any cast",
            "any\ndisable all",
            "any;",
            "\"any\"",
        ] {
            assert!(!valid_protocol(bad), "{bad:?}");
        }
    }

    async fn reply_of(text: &str) -> io::Result<BirdReply> {
        read_reply(&mut BufReader::new(text.as_bytes())).await
    }

    #[tokio::test]
    async fn bird_replies_are_read_to_their_final_line() {
        assert_eq!(
            reply_of("0009-anycast: disabled\n0000 \n").await.unwrap(),
            Ok("anycast: disabled".into())
        );
        assert_eq!(
            reply_of("0008 already disabled\n").await.unwrap(),
            Ok("already disabled".into())
        );
        assert_eq!(
            reply_of("+0016 notice\n0001 BIRD 2.0.12 ready.\n")
                .await
                .unwrap(),
            Ok("BIRD 2.0.12 ready.".into())
        );
        assert_eq!(
            reply_of("8003 No protocols match\n").await.unwrap(),
            Err("8003 No protocols match".into())
        );
        let eof = reply_of("0009-anycast: disabled\n").await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A fake BIRD on a real unix socket: greets, answers like BIRD 2.0.12, records commands.
    #[tokio::test]
    async fn talks_to_a_control_socket_like_birdc() {
        let dir = std::env::temp_dir().join(format!("pointsman-announce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bird.ctl");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            w.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            while let Some(line) = lines.next_line().await.unwrap() {
                let answer: &[u8] = match line.as_str() {
                    "disable anycast" => b"0009-anycast: disabled\n0000 \n",
                    "enable anycast" => b"0011-anycast: enabled\n0000 \n",
                    _ => b"8003 No protocols match\n",
                };
                w.write_all(answer).await.unwrap();
                seen.push(line);
            }
            seen
        });
        let mut bird = Bird::connect(&path).await.unwrap();
        assert_eq!(
            bird.tell(Action::Disable, "anycast").await.unwrap(),
            Ok("anycast: disabled".into())
        );
        assert_eq!(
            bird.tell(Action::Enable, "anycast").await.unwrap(),
            Ok("anycast: enabled".into())
        );
        assert!(bird.tell(Action::Enable, "other").await.unwrap().is_err());
        drop(bird);
        assert_eq!(
            server.await.unwrap(),
            ["disable anycast", "enable anycast", "enable other"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
