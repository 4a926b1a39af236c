//! Destinations given by name, looked up as RFC 3263 says and looked up again when their
//! records expire.
//!
//! - **What is asked.** `name:port`: the name's A/AAAA records, at that port. `name` alone:
//!   NAPTR first, and the first record (lowest order, then preference) whose service fits the
//!   destination's transport (`SIP+D2U` UDP, `SIP+D2T` TCP, `SIPS+D2T` TLS) names the SRV
//!   name; without one, `_sip._udp.NAME`, `_sip._tcp.NAME` or `_sips._tcp.NAME`. Each SRV
//!   target's addresses are targets with its priority and weight; without SRV records, the
//!   name's own addresses at the transport's default port. A target `.` means no service: no
//!   target. IPv4 addresses are preferred where a name has both.
//! - **When.** Every name at start, before the node takes calls (for at most `[dns] timeout`:
//!   a name not answered by then is down until the refresher's answer), and again once its shortest
//!   TTL has passed (clamped to `[dns] min_ttl..=max_ttl`). A name that does not resolve at
//!   start is a warning and a destination that is down, never a failed start; one that stops
//!   resolving keeps the targets it had (a DNS outage must not take a cloud away) and is asked
//!   again after `min_ttl`.
//! - **What changes.** When a name's targets change, the node builds the routing anew
//!   ([`Router::with_targets`]) as a reload does: calls in progress keep theirs, targets that
//!   stay keep their health.
//!
//! [`Lookups`] is the bookkeeping, with time passed in; [`Resolver`] asks the name servers
//! (hickory-resolver); [`spawn_refresher`] runs them on a thread of its own. It must not decide
//! routing (the rules do) or block a worker.

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use routing_rules::spec::TransportSpec;
use routing_rules::{DestId, Destination, Lookup, Resolved, Router};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default `[dns] timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `[dns] min_ttl`.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Default `[dns] max_ttl`.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);

/// `[dns]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask in order; empty: those of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// Most targets a name may have: a lookup that gives more keeps the first, in SRV order (DNS
/// answers come from the network: they must not grow the routing without bound).
pub const MAX_TARGETS: usize = 32;

/// What one lookup of a destination gave: its targets and how long they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub targets: Vec<Resolved>,
    /// The shortest TTL of the records used (before clamping).
    pub ttl: Duration,
}

/// Asks the name servers; one per thread that looks names up (it runs on that thread's tokio
/// runtime).
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver on `config`'s servers, or the system's (/etc/resolv.conf).
    pub fn new(config: &DnsConfig) -> Result<Resolver, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let mut servers = ResolverConfig::new();
            for addr in &config.servers {
                servers.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            }
            TokioResolver::builder_with_config(servers, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = config.timeout;
        opts.attempts = 2;
        // The refresher decides when to ask again: no answer is kept longer than that, and a
        // name that did not exist is asked again next time.
        opts.positive_max_ttl = Some(config.max_ttl);
        opts.negative_max_ttl = Some(Duration::ZERO);
        Ok(Resolver {
            inner: builder.build(),
        })
    }

    /// Looks `dest` up as RFC 3263 says (see the module documentation). An error says what
    /// was asked and what went wrong.
    pub async fn lookup(&self, dest: &Destination) -> Result<Answer, String> {
        let now = Instant::now();
        match dest.lookup {
            // Never asked: [`Lookups`] holds names only.
            Lookup::Literal => Err(format!("{} is an address, not a name", dest.host)),
            Lookup::Address => self.addresses(&dest.host, dest.port, now).await,
            Lookup::Service => self.service(dest, now).await,
        }
    }

    /// The addresses of `host` at `port`, as equal targets.
    async fn addresses(&self, host: &str, port: u16, now: Instant) -> Result<Answer, String> {
        let found = self
            .inner
            .lookup_ip(absolute(host))
            .await
            .map_err(|e| failed("A/AAAA", host, &e))?;
        let ttl = found.valid_until().saturating_duration_since(now);
        let mut ips: Vec<IpAddr> = found.iter().collect();
        // Where a name has both, IPv4 first (the listeners carriers use).
        ips.sort_by_key(|ip| ip.is_ipv6());
        Ok(Answer {
            targets: ips
                .into_iter()
                .map(|ip| plain(SocketAddr::new(ip, port), host))
                .collect(),
            ttl,
        })
    }

    /// NAPTR, then SRV, then the name's own addresses at the default port.
    async fn service(&self, dest: &Destination, now: Instant) -> Result<Answer, String> {
        let host = dest.host.as_str();
        let mut ttl = Duration::MAX;
        let mut srv_name = None;
        match self.inner.lookup(absolute(host), RecordType::NAPTR).await {
            Ok(found) => {
                ttl = ttl.min(found.valid_until().saturating_duration_since(now));
                let mut fitting: Vec<_> = found
                    .record_iter()
                    .filter_map(|r| match r.data() {
                        RData::NAPTR(n) => Some(n.clone()),
                        _ => None,
                    })
                    .filter(|n| {
                        n.flags().eq_ignore_ascii_case(b"s")
                            && n.services()
                                .eq_ignore_ascii_case(naptr_service(dest.transport).as_bytes())
                    })
                    .collect();
                fitting.sort_by_key(|n| (n.order(), n.preference()));
                srv_name = fitting.first().map(|n| n.replacement().to_ascii());
            }
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(failed("NAPTR", host, &e)),
        }
        let srv_name = srv_name.unwrap_or_else(|| format!("{}{host}", srv_prefix(dest.transport)));
        let srv = match self.inner.srv_lookup(absolute(&srv_name)).await {
            Ok(srv) => srv,
            Err(e) if e.is_no_records_found() => {
                // No SRV records: the name's own addresses, at the transport's default port.
                let mut answer = self.addresses(host, dest.port, now).await?;
                answer.ttl = answer.ttl.min(ttl);
                return Ok(answer);
            }
            Err(e) => return Err(failed("SRV", &srv_name, &e)),
        };
        ttl = ttl.min(srv.as_lookup().valid_until().saturating_duration_since(now));
        let mut targets = Vec::new();
        let mut unresolved = Vec::new();
        for record in srv.iter() {
            let target = record.target().to_ascii();
            let target = target.trim_end_matches('.');
            if target.is_empty() {
                continue; // "." : the service is not offered here (RFC 2782)
            }
            match self.addresses(target, record.port(), now).await {
                Ok(answer) => {
                    ttl = ttl.min(answer.ttl);
                    targets.extend(answer.targets.into_iter().map(|t| Resolved {
                        priority: record.priority(),
                        weight: record.weight(),
                        ..t
                    }));
                }
                Err(e) => unresolved.push(e),
            }
        }
        if targets.is_empty() && !unresolved.is_empty() {
            return Err(unresolved.join("; "));
        }
        Ok(Answer { targets, ttl })
    }
}

/// An address found without SRV: priority 0, weight 1.
fn plain(addr: SocketAddr, host: &str) -> Resolved {
    Resolved {
        addr,
        priority: 0,
        weight: 1,
        host: host.trim_end_matches('.').to_string(),
    }
}

/// `host` as an absolute name, so no search domain is tried.
fn absolute(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

fn naptr_service(transport: TransportSpec) -> &'static str {
    match transport {
        TransportSpec::Udp => "SIP+D2U",
        TransportSpec::Tcp => "SIP+D2T",
        TransportSpec::Tls => "SIPS+D2T",
    }
}

fn srv_prefix(transport: TransportSpec) -> &'static str {
    match transport {
        TransportSpec::Udp => "_sip._udp.",
        TransportSpec::Tcp => "_sip._tcp.",
        TransportSpec::Tls => "_sips._tcp.",
    }
}

fn failed(what: &str, name: &str, e: &ResolveError) -> String {
    if e.is_nx_domain() {
        format!("{name}: no such name ({what} lookup: NXDOMAIN)")
    } else if e.is_no_records_found() {
        format!("{name}: no {what} records")
    } else {
        format!("{name}: {what} lookup failed: {e}")
    }
}

/// One name's lookups.
#[derive(Clone, Debug)]
pub struct NameState {
    pub dest: DestId,
    /// The destination as configured (what is looked up).
    pub destination: Destination,
    /// The targets in force: the last answer's, kept through failed lookups (none before the
    /// first answer).
    pub targets: Vec<Resolved>,
    /// Why the last lookup failed (`None`: it answered).
    pub error: Option<String>,
    /// When the last lookup answered.
    pub answered_at: Option<Instant>,
    /// When to look it up again.
    pub next_at: Instant,
    /// A lookup is under way.
    pub asking: bool,
}

/// The destinations of one rule set found by DNS, and what their lookups gave. Replaced whole
/// when the rules are (a reload); `generation` tells answers for older rules, which are
/// dropped.
#[derive(Clone, Debug)]
pub struct Lookups {
    pub generation: u64,
    pub names: Vec<NameState>,
    min_ttl: Duration,
    max_ttl: Duration,
}

/// A lookup due: the name, for the rules of `generation`.
#[derive(Clone, Debug)]
pub struct Due {
    pub generation: u64,
    pub dest: DestId,
    pub destination: Destination,
}

impl Lookups {
    /// Every destination of `router` found by DNS, all due at `now`.
    pub fn new(router: &Router, config: &DnsConfig, generation: u64, now: Instant) -> Lookups {
        let names = router
            .rules
            .destinations
            .iter()
            .take(router.configured_destinations())
            .enumerate()
            .filter(|(_, d)| d.lookup.is_dns())
            .map(|(i, d)| NameState {
                dest: DestId(i as u32),
                destination: d.clone(),
                targets: Vec::new(),
                error: None,
                answered_at: None,
                next_at: now,
                asking: false,
            })
            .collect();
        Lookups {
            generation,
            names,
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
        }
    }

    /// The lookups due at `now`, marked as under way.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let generation = self.generation;
        self.names
            .iter_mut()
            .filter(|n| !n.asking && n.next_at <= now)
            .map(|n| {
                n.asking = true;
                Due {
                    generation,
                    dest: n.dest,
                    destination: n.destination.clone(),
                }
            })
            .collect()
    }

    /// Ends a batch of lookups: a name taken by [`take_due`](Self::take_due) that got no
    /// answer (it ran out of time) is due again at once.
    pub fn end_batch(&mut self) {
        for n in &mut self.names {
            n.asking = false;
        }
    }

    /// When the next lookup is due (`None`: no name to look up).
    pub fn next_at(&self) -> Option<Instant> {
        self.names
            .iter()
            .filter(|n| !n.asking)
            .map(|n| n.next_at)
            .min()
    }

    /// Takes a lookup's `result` at `now`. Returns whether the targets in force changed (the
    /// routing must be rebuilt). A failure keeps the targets the name had and asks again
    /// after `min_ttl`; an answer holds for its TTL within `min_ttl..=max_ttl`.
    pub fn answer(
        &mut self,
        generation: u64,
        dest: DestId,
        result: Result<Answer, String>,
        now: Instant,
    ) -> bool {
        if generation != self.generation {
            return false;
        }
        let (min_ttl, max_ttl) = (self.min_ttl, self.max_ttl);
        let Some(name) = self.names.iter_mut().find(|n| n.dest == dest) else {
            return false;
        };
        name.asking = false;
        match result {
            Ok(answer) => {
                name.error = None;
                name.answered_at = Some(now);
                name.next_at = now + answer.ttl.clamp(min_ttl, max_ttl);
                let mut targets = answer.targets;
                targets.sort_by_key(|t| (t.priority, t.addr));
                targets.dedup_by_key(|t| t.addr);
                if targets.len() > MAX_TARGETS {
                    tracing::warn!(
                        destination = %name.destination.name,
                        found = targets.len(),
                        kept = MAX_TARGETS,
                        "DNS: the name has more targets than are kept: the first in SRV order serve"
                    );
                    targets.truncate(MAX_TARGETS);
                }
                let changed = targets != name.targets;
                name.targets = targets;
                changed
            }
            Err(error) => {
                name.error = Some(error);
                name.next_at = now + min_ttl;
                false
            }
        }
    }

    /// Every name's targets in force, as [`Router::with_targets`] takes them.
    pub fn resolved(&self) -> Vec<(DestId, Vec<Resolved>)> {
        self.names
            .iter()
            .map(|n| (n.dest, n.targets.clone()))
            .collect()
    }

    /// The state of the name `dest`, if it is one.
    pub fn name(&self, dest: DestId) -> Option<&NameState> {
        self.names.iter().find(|n| n.dest == dest)
    }
}

/// Looks the `due` names up at once on `resolver` (each bounded by its timeout) and hands each
/// result back with what was asked; with `within`, only those that answered by then.
pub async fn ask(
    resolver: &Arc<Resolver>,
    due: Vec<Due>,
    within: Option<Duration>,
) -> Vec<(Due, Result<Answer, String>)> {
    let mut asks = tokio::task::JoinSet::new();
    for d in due {
        let resolver = resolver.clone();
        asks.spawn(async move {
            let result = resolver.lookup(&d.destination).await;
            (d, result)
        });
    }
    let deadline = within.map(|w| tokio::time::Instant::now() + w);
    let mut out = Vec::with_capacity(asks.len());
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, asks.join_next()).await {
                Ok(next) => next,
                Err(_) => break, // the rest are aborted with the set
            },
            None => asks.join_next().await,
        };
        match next {
            Some(Ok(answer)) => out.push(answer),
            Some(Err(_)) => {} // a lookup that panicked: asked again next time
            None => break,
        }
    }
    out
}

/// What the refresher needs of the node: the lookups in force, and a way to apply answers.
pub trait Names: Send + Sync + 'static {
    /// The due lookups at `now` (marked as under way), and when the next one is due after them.
    fn take_due(&self, now: Instant) -> (Vec<Due>, Option<Instant>);
    /// Takes the answers; rebuilds the routing if targets changed.
    fn answered(&self, answers: Vec<(Due, Result<Answer, String>)>, now: Instant);
}

/// Longest the refresher sleeps without looking at the lookups (a reload may have brought
/// new names).
const IDLE: Duration = Duration::from_secs(1);

/// Starts the thread that looks names up again when they expire, for as long as `names`
/// lives (it holds a weak reference).
pub fn spawn_refresher<N: Names>(
    config: &DnsConfig,
    names: std::sync::Weak<N>,
) -> std::io::Result<()> {
    let config = config.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("pointsman-dns".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Made when a name is first due: a node with no name to look up needs no
                // resolver configuration (a container may have no /etc/resolv.conf).
                let mut resolver: Option<Arc<Resolver>> = None;
                loop {
                    let Some(node) = names.upgrade() else { return };
                    let (due, next) = node.take_due(Instant::now());
                    drop(node);
                    if !due.is_empty() {
                        let answers = match &resolver {
                            Some(r) => ask(r, due, None).await,
                            None => match Resolver::new(&config) {
                                Ok(r) => {
                                    let r = resolver.insert(Arc::new(r));
                                    ask(r, due, None).await
                                }
                                Err(e) => due.into_iter().map(|d| (d, Err(e.clone()))).collect(),
                            },
                        };
                        let Some(node) = names.upgrade() else { return };
                        node.answered(answers, Instant::now());
                        continue;
                    }
                    let wait = next
                        .map_or(IDLE, |at| at.saturating_duration_since(Instant::now()))
                        .min(IDLE);
                    tokio::time::sleep(wait).await;
                }
            });
        })?;
    Ok(())
}

/// `pointsman_dns_lookups_total{destination,result}` counts lookups that answered (`ok`) and
/// failed; `pointsman_dns_targets{destination}` is the targets in force.
pub fn record(recorder: &dyn metrics::Recorder, destination: &str, ok: bool, targets: usize) {
    use metrics::{Key, Label, Level, Metadata};
    const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);
    let dest = Label::new("destination", destination.to_string());
    let result = Label::new("result", if ok { "ok" } else { "failed" });
    recorder
        .register_counter(
            &Key::from_parts(LOOKUPS, vec![dest.clone(), result]),
            &METADATA,
        )
        .increment(1);
    recorder
        .register_gauge(&Key::from_parts(TARGETS, vec![dest]), &METADATA)
        .set(targets as f64);
}

/// See [`record`].
pub const LOOKUPS: &str = "pointsman_dns_lookups_total";
/// See [`record`].
pub const TARGETS: &str = "pointsman_dns_targets";

/// Looks every name of `lookups` up once, now, on a runtime of its own (at start and on
/// reload, before the rules are put in force), for at most one query's timeout (a name not
/// answered by then is down, and looked up again at once by the refresher); `Err` only when no
/// resolver can be made.
pub fn lookup_now(config: &DnsConfig, lookups: &mut Lookups) -> Result<(), String> {
    let due = lookups.take_due(Instant::now());
    if due.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the DNS lookups: {e}"))?;
    let answers = runtime.block_on(async {
        let resolver = Arc::new(Resolver::new(config)?);
        Ok::<_, String>(ask(&resolver, due, Some(config.timeout)).await)
    });
    let now = Instant::now();
    for (due, result) in answers.iter().flatten().cloned() {
        lookups.answer(due.generation, due.dest, result, now);
    }
    lookups.end_batch();
    answers.map(|_| ())
}

#[cfg(test)]
mod tests;
