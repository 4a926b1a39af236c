//! The node's control plane: what runs beside the workers. It owns the destinations' health
//! table and its OPTIONS prober, the metrics recorder, the reload (SIGHUP and `POST /reload`),
//! the node's own state (serving, drained by the operator, stopping on a signal), and the admin
//! API, which it serves through [`NodeControl`].
//!
//! Every rule set in force is one [`Routing`] snapshot (rules, resolved addresses, health view,
//! metric handles), built here and swapped into the core atomically, so a call never mixes the
//! ids of two rule sets. It must not touch SIP messages: that is the core's job.

use crate::admin::{self, ActionError, DestinationStatus, NodeControl, NodeStatus, Reloaded};
use crate::config::Config;
use crate::dns::{self, DnsConfig, Lookups};
use crate::prober::{Prober, ProberConfig};
use crate::transport::tls::{self, Certificates};
use anyhow::{anyhow, Context};
use metrics_exporter_prometheus::PrometheusHandle;
use pointsman_protocol::health::{
    AdminAction, Cap, DestinationSnapshot, Health, HealthError, State,
};
use pointsman_protocol::media::{MediaMetrics, MediaPlane};
use pointsman_protocol::metrics::{Metrics, NodeState};
use pointsman_protocol::{Core, Routing};
use routing_rules::{DestId, Router};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{error, info, warn};

/// The running node, less its workers.
pub struct Node {
    core: Arc<Core>,
    health: Arc<Health>,
    prober: Prober,
    /// Handles bound to the first rule set; reloads rebind from these.
    metrics: Metrics,
    handle: PrometheusHandle,
    /// The process's own series (build, uptime, CPU, memory, descriptors, reloads).
    process: crate::process::ProcessMetrics,
    /// Drained by the operator (`POST /node/drain`): not ready, calls still served. Node state,
    /// not config: a reload keeps it.
    draining: AtomicBool,
    id: u16,
    started: Instant,
    /// The file it was started on (also in `reload`, whose lock a reload holds for long).
    config_file: Option<PathBuf>,
    reload: Mutex<ReloadState>,
    /// TLS certificates and trust of listeners and destinations, swapped on reload.
    tls: Arc<Certificates>,
    /// HEP capture, when `[hep]` is given.
    hep: Option<Arc<crate::hep::Hep>>,
    /// The node link and its configured peers, when `[cluster]` is given.
    link: std::sync::OnceLock<(
        Arc<crate::link::Link>,
        Vec<crate::link::PeerAddr>,
        tokio::runtime::Handle,
    )>,
    /// The worker that carries out what the core decides off the workers (an operator ending
    /// a call on the admin thread), once the workers run.
    executor: std::sync::OnceLock<crate::transport::tcp::EventSink>,
    /// `[dns]` as started (it changes on restart).
    dns: DnsConfig,
    /// The destinations of the rules in force found by DNS, and what their lookups gave.
    lookups: Mutex<Lookups>,
    /// The targets that have series of their own.
    series: Mutex<TargetSeries>,
}

/// Most targets found by DNS that get metric series of their own over the process's life: a
/// series stays until restart, and DNS answers (from the network) must not grow them without
/// bound. Targets past it are counted under `NAME@other`.
pub const MAX_TARGET_SERIES: usize = 1024;

/// One rule set's [`Routing`]: `router`'s destinations at `addrs`, their health as adopted
/// (destinations that keep their name and address keep theirs) and metric handles.
fn routing_of(
    health: &Health,
    series: &mut TargetSeries,
    metrics: &Metrics,
    router: Arc<Router>,
    addrs: Vec<SocketAddr>,
    now: Instant,
) -> Routing {
    let view = health.adopt(&router, now);
    let (dests, routes) = series.names(&router);
    let bound = metrics.rebind(&dests, &routes);
    Routing::new(router, addrs, view, bound)
}

/// The metric names of the destinations of a router: a target's own name while fewer than
/// [`MAX_TARGET_SERIES`] targets have had one, else its destination's `NAME@other`.
#[derive(Default)]
struct TargetSeries {
    named: std::collections::HashSet<String>,
}

impl TargetSeries {
    fn names(&mut self, router: &Router) -> (Vec<String>, Vec<String>) {
        let (dests, routes) = pointsman_protocol::metrics::names(router);
        let dests = dests
            .iter()
            .enumerate()
            .map(|(i, name)| match router.target_of(DestId(i as u32)) {
                Some(parent)
                    if !self.named.contains(*name) && self.named.len() >= MAX_TARGET_SERIES =>
                {
                    format!("{}@other", router.destination(parent).name)
                }
                Some(_) => {
                    self.named.insert(name.to_string());
                    name.to_string()
                }
                None => name.to_string(),
            })
            .collect();
        (dests, routes.iter().map(|r| r.to_string()).collect())
    }
}

/// The listeners of `cfg` as [`Certificates`] takes them.
fn listener_refs(cfg: &Config) -> Vec<tls::ListenerRef<'_>> {
    cfg.listeners
        .iter()
        .map(|l| (l.name.as_str(), l.tls.as_ref()))
        .collect()
}

/// What a reload needs: the file, and the config in force (to tell what changed).
struct ReloadState {
    source: Option<PathBuf>,
    running: Config,
}

/// Where each destination of `router` is sent, by `DestId`. A destination found by DNS is not
/// sent to itself (its targets are): it gets the unspecified address, which no packet comes
/// from.
pub fn addresses(router: &Router) -> Vec<SocketAddr> {
    router
        .rules
        .destinations
        .iter()
        .map(|d| match d.host.parse::<IpAddr>() {
            Ok(ip) if !d.lookup.is_dns() => SocketAddr::new(ip, d.port),
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), d.port),
        })
        .collect()
}

/// The destinations sent to, as the TLS settings take them: by config index (a target: its
/// destination's), with their address.
fn tls_addresses(router: &Router, addrs: &[SocketAddr]) -> Vec<tls::DestinationAddr> {
    (0..router.rules.destinations.len())
        .map(|i| DestId(i as u32))
        .filter(|&d| !router.destination(d).lookup.is_dns())
        .map(|d| {
            let config_index = router.target_of(d).unwrap_or(d).0 as usize;
            (config_index, addrs[d.0 as usize])
        })
        .collect()
}

/// The first lookups of `router`'s names (at start, on reload), counted in `metrics`: every
/// failure is a warning, and the destination is down until a lookup answers.
fn first_lookups(
    router: &Router,
    config: &DnsConfig,
    generation: u64,
    metrics: &Metrics,
) -> Lookups {
    let mut lookups = Lookups::new(router, config, generation, Instant::now());
    if let Err(e) = dns::lookup_now(config, &mut lookups) {
        warn!(error = %e, "DNS: no destination given by name can be looked up");
    }
    for name in &lookups.names {
        let answered = name.error.is_none() && name.answered_at.is_some();
        dns::record(
            metrics.recorder(),
            &name.destination.name,
            answered,
            name.targets.len(),
        );
        match &name.error {
            Some(error) => warn!(
                destination = %name.destination.name,
                %error,
                "DNS: the destination's name does not resolve: it is down until it does"
            ),
            None if name.answered_at.is_none() => warn!(
                destination = %name.destination.name,
                "DNS: the destination's name did not resolve in time: it is down until it does"
            ),
            None => info!(
                destination = %name.destination.name,
                targets = name.targets.len(),
                "DNS: the destination's name resolved"
            ),
        }
    }
    lookups
}

impl Node {
    /// Builds the core on `cfg`, starts the prober, installs the metrics recorder, the SIGHUP
    /// handler (when `source` is given) and the admin API (when enabled). Fails when anything
    /// cannot be bound or resolved: nothing half-starts. UDP probes leave from `egress` (the
    /// listeners' sockets) unless `[health] source` is set.
    pub fn start(
        cfg: &Config,
        core_config: pointsman_protocol::CoreConfig,
        source: Option<PathBuf>,
        egress: Vec<std::net::UdpSocket>,
    ) -> anyhow::Result<Arc<Node>> {
        let now = Instant::now();
        let health = Arc::new(Health::new(&cfg.health));
        let (dests, routes) = pointsman_protocol::metrics::names(&cfg.router);
        let (metrics, handle) = crate::exporter::install(&dests, &routes)
            .map_err(|e| anyhow!("cannot install the metrics recorder: {e}"))?;
        let process = crate::process::ProcessMetrics::register(metrics.recorder(), now);
        let lookups = first_lookups(&cfg.router, &cfg.dns, 0, &metrics);
        let router = Arc::new(cfg.router.with_targets(&lookups.resolved()));
        let addrs = addresses(&router);
        let tls_addrs = tls_addresses(&router, &addrs);
        let tls =
            Certificates::load(&listener_refs(cfg), &cfg.tls, &tls_addrs).map_err(|errors| {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow!("cannot load the TLS files:\n{}", errors.join("\n"))
            })?;
        let tls = Arc::new(tls);
        let mut series = TargetSeries::default();
        let routing = routing_of(&health, &mut series, &metrics, router, addrs, now);
        let prober = Prober::spawn_with_tls(
            ProberConfig {
                source: cfg.health.source,
                t1: cfg.timers.t1,
                t2: cfg.timers.t2,
                limits: cfg.limits.clone(),
                node_id: cfg.node_id,
                contact: Some(cfg.advertise.clone()).filter(|a| !a.is_empty()),
            },
            routing.health.clone(),
            Some(tls.clone()),
            if cfg.health.from_listener {
                egress
            } else {
                Vec::new()
            },
        )
        .with_context(|| {
            format!(
                "health.source: cannot probe from {} (it must be this node's own address)",
                cfg.health.source
            )
        })?;
        let hep = match &cfg.hep {
            Some(h) => Some(
                crate::hep::Hep::start(h)
                    .with_context(|| format!("hep: cannot start capture to {}", h.address))?,
            ),
            None => None,
        };
        let node = Arc::new(Node {
            hep,
            core: Arc::new(Core::new(
                core_config,
                routing,
                Instant::now(),
                process_seed(),
            )),
            health,
            prober,
            metrics,
            handle,
            process,
            draining: AtomicBool::new(false),
            id: cfg.node_id,
            started: now,
            config_file: source.clone(),
            tls,
            reload: Mutex::new(ReloadState {
                source: source.clone(),
                running: cfg.clone(),
            }),
            link: std::sync::OnceLock::new(),
            executor: std::sync::OnceLock::new(),
            dns: cfg.dns.clone(),
            lookups: Mutex::new(lookups),
            series: Mutex::new(series),
        });
        dns::spawn_refresher(&cfg.dns, Arc::downgrade(&node))
            .context("cannot start the DNS refresher")?;
        if let Some(cluster) = &cfg.cluster {
            let (link, runtime) =
                start_link(cluster, cfg.node_id).context("cluster: cannot start the node link")?;
            let _ = node.link.set((link, cluster.peers.clone(), runtime));
        }
        if let Some(media) = &cfg.media {
            let metrics = MediaMetrics::register(node.metrics.recorder());
            node.core
                .set_media(Arc::new(MediaPlane::new(media.clone(), metrics)));
        }
        if source.is_some() {
            spawn_hangup_handler(node.clone())?;
        }
        crate::memory::spawn_trimmer(node.core.clone())
            .context("cannot start the memory watcher")?;
        if cfg.admin.enabled {
            let control: Arc<dyn NodeControl> = node.clone();
            admin::spawn(cfg.admin.listen, control, cfg.admin.token.clone())
                .with_context(|| format!("admin.listen: cannot serve on {}", cfg.admin.listen))?;
            info!(address = %cfg.admin.listen, "admin API listening");
        }
        Ok(node)
    }

    /// The TLS material the transport and the prober use.
    pub fn tls(&self) -> &Arc<Certificates> {
        &self.tls
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// HEP capture, when `[hep]` is given.
    pub fn hep(&self) -> Option<&Arc<crate::hep::Hep>> {
        self.hep.as_ref()
    }

    /// Where the workers hand replies to this node's probes.
    pub fn probe_replies(&self) -> tokio::sync::mpsc::Sender<bytes::Bytes> {
        self.prober.replies()
    }

    /// The node link, when this node is one of a pair.
    pub fn pair_link(&self) -> Option<crate::cluster::PairLink> {
        self.link.get().map(|(link, peers, _)| {
            crate::cluster::PairLink::new(link.clone(), peers.iter().map(|p| p.id).collect())
        })
    }

    /// The node link itself, when this node is one of a pair.
    pub fn link(&self) -> Option<&Arc<crate::link::Link>> {
        self.link.get().map(|(link, _, _)| link)
    }

    /// The runtime the node link runs on (its events are read there too).
    pub fn link_runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.link.get().map(|(_, _, runtime)| runtime)
    }

    /// Serving, drained, or stopping (which outranks a drain).
    pub fn state(&self) -> NodeState {
        if self.core.is_stopping() {
            NodeState::Stopping
        } else if self.draining.load(Ordering::Acquire) {
            NodeState::Draining
        } else if !self.core.is_synced() {
            // A node of a pair without its peer's calls yet (or a peer to get them from).
            NodeState::Syncing
        } else {
            NodeState::Serving
        }
    }

    /// The process is stopping: `/ready` turns false for good and new calls get 503 with
    /// Retry-After; calls in progress go on.
    pub fn stop_taking_calls(&self) {
        self.core.stop_taking_calls();
        self.metrics.node_state(NodeState::Stopping);
    }

    /// Re-reads the config file. If it is valid, its routing (destinations, groups, routes,
    /// health settings) replaces the running one atomically: calls in progress finish on the
    /// rules they started with, new calls take the new ones, and destinations that keep their
    /// name (and address) keep their health state. If it is not, the running rules stay and
    /// every error is returned (and logged). The certificates, keys and CA bundles of TLS
    /// listeners and destinations are re-read too and serve the next handshakes (established
    /// connections keep theirs); a bad file refuses the whole reload, the running ones stay.
    /// Sections that need new sockets, threads or a new core (listeners, node, timers, limits,
    /// TCP, `[health]`, `[guard]`, TLS handshake timeout, `[cluster]`, admin) change only on
    /// restart; a reload that changes them logs them and lists them in its [`Reloaded`].
    /// Either way it is counted in `pointsman_reloads_total` and sets
    /// `pointsman_last_reload_success` and `pointsman_last_reload_timestamp_seconds`.
    pub fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let mut state = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.reload_locked(&mut state);
        self.process.reloaded(result.is_ok());
        result
    }

    /// [`reload`](Self::reload), its lock held.
    fn reload_locked(&self, state: &mut ReloadState) -> Result<Reloaded, Vec<String>> {
        let Some(path) = state.source.clone() else {
            return Err(vec![
                "this node was started without a config file to reload".into(),
            ]);
        };
        let refuse = |errors: Vec<String>| {
            for e in &errors {
                error!(error = %e, "reload refused");
            }
            error!(
                file = %path.display(),
                errors = errors.len(),
                "reload refused: the running rules stay"
            );
            Err(errors)
        };
        let new = match Config::load(&path) {
            Ok(new) => new,
            Err(errors) => return refuse(errors.0.iter().map(ToString::to_string).collect()),
        };
        let generation = self.lookups().generation + 1;
        let lookups = first_lookups(&new.router, &self.dns, generation, &self.metrics);
        let router = new.router.with_targets(&lookups.resolved());
        let addrs = addresses(&router);
        // Certificates and keys: re-read, and swapped for the next handshakes only if every
        // one is good (connections already established keep theirs).
        if let Err(errors) = self.tls.reload(
            &listener_refs(&new),
            &new.tls,
            &tls_addresses(&router, &addrs),
        ) {
            return refuse(errors.iter().map(ToString::to_string).collect());
        }
        let restart_required = restart_only(&state.running, &new);
        for section in &restart_required {
            warn!(
                section,
                "reload: this section changed and takes effect only on restart"
            );
        }
        let summary = format!(
            "{} destinations, {} routes",
            new.router.rules.destinations.len(),
            new.router.rules.routes.len()
        );
        self.put_in_force(Arc::new(router), addrs);
        *self.lookups() = lookups;
        info!(
            file = %path.display(),
            rules = %summary,
            "rules reloaded: new calls use them, calls in progress keep theirs"
        );
        state.running.router = new.router;
        Ok(Reloaded {
            summary,
            restart_required: restart_required.into_iter().map(String::from).collect(),
        })
    }
}

impl Node {
    fn lookups(&self) -> std::sync::MutexGuard<'_, Lookups> {
        self.lookups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `router` (with its destinations at `addrs`) the routing of new calls: health
    /// (destinations that keep their name and address keep theirs), metric handles, the core's
    /// snapshot and the prober's list. The TLS settings by address are the caller's to set
    /// first.
    fn put_in_force(&self, router: Arc<Router>, addrs: Vec<SocketAddr>) {
        let now = Instant::now();
        let routing = routing_of(
            &self.health,
            &mut self.series.lock().unwrap_or_else(|p| p.into_inner()),
            &self.metrics,
            router.clone(),
            addrs,
            now,
        );
        let view = routing.health.clone();
        self.core.set_routing(routing);
        self.prober.set(view.clone());
        // A target found after an operator drained (or put in maintenance, or forced up) its
        // name gets the same: the action was on the name.
        for parent in 0..router.configured_destinations() {
            let parent = DestId(parent as u32);
            let Some(targets) = router.targets(parent) else {
                continue;
            };
            let action = match view.get(parent).map(|d| d.state()) {
                Some(State::Draining) => AdminAction::Drain,
                Some(State::Maintenance) => AdminAction::Maintenance,
                Some(State::ForcedUp) => AdminAction::ForceUp,
                _ => continue,
            };
            for t in targets {
                if let Some(target) = view.get(t.dest).filter(|d| !is_admin_state(d.state())) {
                    let _ = target.act(action, now);
                }
            }
        }
    }
}

impl dns::Names for Node {
    fn take_due(&self, now: Instant) -> (Vec<dns::Due>, Option<Instant>) {
        let mut lookups = self.lookups();
        let due = lookups.take_due(now);
        (due, lookups.next_at())
    }

    fn answered(&self, answers: Vec<(dns::Due, Result<dns::Answer, String>)>, now: Instant) {
        // Under the reload lock: the rules these answers are for stay in force meanwhile.
        let state = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let mut lookups = self.lookups();
        let mut changed = false;
        for (due, result) in answers {
            if due.generation != lookups.generation {
                continue; // for rules no longer in force
            }
            let name = due.destination.name.as_str();
            let ok = result.is_ok();
            let failed_before = lookups.name(due.dest).and_then(|n| n.error.clone());
            let this_changed = lookups.answer(due.generation, due.dest, result, now);
            changed |= this_changed;
            let Some(looked) = lookups.name(due.dest) else {
                continue;
            };
            match (&looked.error, &failed_before) {
                // Said once per failure, not at every retry of an outage.
                (Some(error), before) if before.as_ref() != Some(error) => {
                    warn!(destination = name, %error, "DNS: the lookup failed: the destination keeps the targets it had");
                }
                (None, Some(_)) => info!(destination = name, "DNS: the name resolves again"),
                _ => {}
            }
            if this_changed {
                let targets: Vec<String> =
                    looked.targets.iter().map(|t| t.addr.to_string()).collect();
                info!(destination = name, targets = %targets.join(", "), "DNS: the destination's targets changed");
            }
            dns::record(self.metrics.recorder(), name, ok, looked.targets.len());
        }
        lookups.end_batch();
        if changed {
            let router = state.running.router.with_targets(&lookups.resolved());
            let addrs = addresses(&router);
            self.tls.set_addresses(&tls_addresses(&router, &addrs));
            self.put_in_force(Arc::new(router), addrs);
        }
    }
}

/// The sections of `new` that differ from the `running` config but need new sockets, threads
/// or a new core to apply: they change only on restart.
fn restart_only(running: &Config, new: &Config) -> Vec<&'static str> {
    let sections = [
        ("listen", running.listeners != new.listeners),
        (
            "node",
            running.node_id != new.node_id
                || running.advertise != new.advertise
                || running.workers != new.workers
                || running.realtime_priority != new.realtime_priority
                || running.scheduler_slice != new.scheduler_slice
                || running.shutdown_grace != new.shutdown_grace
                || running.topology_key != new.topology_key,
        ),
        // The relay's sockets and threads are set up once, at start.
        (
            "media",
            running.media != new.media || running.media_kernel_relay != new.media_kernel_relay,
        ),
        ("timers", running.timers != new.timers),
        ("limits", running.limits != new.limits),
        (
            "tcp",
            running.tcp_idle_timeout != new.tcp_idle_timeout
                || running.tcp_max_connections != new.tcp_max_connections
                || running.tcp_connect_timeout != new.tcp_connect_timeout,
        ),
        ("health", running.health != new.health),
        ("guard", running.guard != new.guard),
        (
            "tls.handshake_timeout",
            running.tls.handshake_timeout != new.tls.handshake_timeout,
        ),
        // The node link's socket, certificates and peers: a pair is re-formed by restarting
        // its nodes one at a time (the other keeps the calls).
        ("cluster", running.cluster != new.cluster),
        ("hep", running.hep != new.hep),
        ("dns", running.dns != new.dns),
        (
            "admin",
            running.admin.listen != new.admin.listen
                || running.admin.enabled != new.admin.enabled
                || running.admin.token != new.admin.token,
        ),
    ];
    sections
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
}

/// Installs the SIGHUP handler now (so an early SIGHUP cannot kill the process) and serves it
/// on a thread of its own: reloads are rare, blocking (file, DNS) and must not stall a worker.
/// Starts the node link, its runtime running on a thread of its own (as the admin API's does),
/// and returns the runtime's handle: its events are read there by
/// [`crate::cluster::serve_link_events`] once the workers run. Fails when the link cannot start
/// (its address taken, a PEM file unreadable).
fn start_link(
    cluster: &crate::config::ClusterConfig,
    node_id: u16,
) -> anyhow::Result<(Arc<crate::link::Link>, tokio::runtime::Handle)> {
    use crate::link::{Link, LinkTls};
    let tls = LinkTls::load(&cluster.cert, &cluster.key, &cluster.ca)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let link = {
        // The link's endpoint and tasks belong to this runtime.
        let _in_runtime = runtime.enter();
        Arc::new(Link::start(cluster.link_config(node_id), tls)?)
    };
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("pointsman-link".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .context("cannot start the node link's thread")?;
    Ok((link, handle))
}

fn spawn_hangup_handler(node: Arc<Node>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hangup = {
        let _guard = rt.enter();
        signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?
    };
    std::thread::Builder::new()
        .name("pointsman-reload".into())
        .spawn(move || {
            rt.block_on(async move {
                while hangup.recv().await.is_some() {
                    let _ = node.reload();
                }
            })
        })?;
    Ok(())
}

/// A state an operator set (drain, maintenance, force-up), which a name keeps whatever its
/// targets do.
fn is_admin_state(state: State) -> bool {
    matches!(
        state,
        State::Draining | State::Maintenance | State::ForcedUp
    )
}

/// The state of a destination found by DNS (`None` for another): what an operator set on it,
/// else up while one of its targets takes calls; with how many do, of how many.
fn name_state(routing: &Routing, dest: DestId) -> Option<(State, usize, usize)> {
    let targets = routing.router.targets(dest)?;
    let up = targets
        .iter()
        .filter(|t| routing.health.accepts_calls(t.dest))
        .count();
    let own = routing.health.get(dest).map(|d| d.state());
    let state = match own {
        Some(s) if is_admin_state(s) => s,
        _ if up > 0 => State::Up,
        _ => State::Down,
    };
    Some((state, up, targets.len()))
}

/// Why a destination found by DNS is in its state: its targets, and its last lookup.
fn dns_reason(targets: usize, up: usize, name: Option<&dns::NameState>, now: Instant) -> String {
    let lookup = match name {
        Some(n) => match (&n.error, n.answered_at) {
            (Some(e), _) => format!("last lookup failed: {e}"),
            (None, Some(at)) => format!(
                "looked up {}s ago, next in {}s",
                now.saturating_duration_since(at).as_secs(),
                n.next_at.saturating_duration_since(now).as_secs()
            ),
            (None, None) => "not looked up yet".to_string(),
        },
        None => "not looked up".to_string(),
    };
    if targets == 0 {
        format!("DNS: no target; {lookup}")
    } else {
        format!("DNS: {up} of {targets} targets take calls; {lookup}")
    }
}

fn status(s: DestinationSnapshot) -> DestinationStatus {
    DestinationStatus {
        name: s.name,
        address: s.address,
        state: s.state,
        reason: s.reason,
        since_secs: s.in_state_for.as_secs(),
        last_probe_rtt_ms: s.last_probe_rtt.map(|d| d.as_secs_f64() * 1e3),
        calls_in_progress: u64::from(s.calls_in_progress),
        max_calls: s.max_calls,
        max_cps: s.max_cps,
        at_cap: s.at_cap,
        capped_calls: s.capped[Cap::Calls as usize],
        capped_cps: s.capped[Cap::Cps as usize],
        calls: s.calls,
        failures: s.failures,
        probes_ok: s.probes_ok,
        probes_failed: s.probes_failed,
    }
}

impl Node {
    /// Names the worker whose inbox takes the core's outputs decided off the workers (see
    /// [`NodeControl::end_call`]). Set once, when the workers start.
    pub(crate) fn set_executor(&self, sink: crate::transport::tcp::EventSink) {
        let _ = self.executor.set(sink);
    }
}

impl NodeControl for Node {
    fn calls(&self) -> Vec<admin::CallSummary> {
        self.core.list_calls(Instant::now())
    }

    fn end_call(&self, call_id: &str) -> Result<Vec<admin::CallSummary>, ActionError> {
        let Some(executor) = self.executor.get() else {
            return Err(ActionError::Conflict(
                "the node's workers are not running: no call can be ended".into(),
            ));
        };
        let mut out = Vec::new();
        let ended = self.core.end_call(call_id, Instant::now(), &mut out);
        if !out.is_empty() && !executor.execute(out) {
            error!(
                call_id,
                "a call ended by the operator: the worker to send its CANCEL or BYEs is gone"
            );
        }
        if !ended.is_empty() {
            info!(call_id, calls = ended.len(), "admin action: call ended");
        }
        Ok(ended)
    }

    fn hep(&self) -> Option<bool> {
        self.hep.as_ref().map(|h| h.enabled())
    }

    fn set_hep(&self, on: bool) -> Option<bool> {
        self.hep.as_ref().map(|h| h.set_enabled(on))
    }

    fn destinations(&self) -> Vec<DestinationStatus> {
        let now = Instant::now();
        let routing = self.core.routing();
        let lookups = self.lookups();
        routing
            .health
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut s = status(d.snapshot(now));
                let dest = DestId(i as u32);
                if let Some((state, up, targets)) = name_state(&routing, dest) {
                    let reason = dns_reason(targets, up, lookups.name(dest), now);
                    if state != s.state {
                        s.since_secs = 0;
                    }
                    s.reason = if is_admin_state(s.state) {
                        format!("{}; {reason}", s.reason)
                    } else {
                        reason
                    };
                    s.state = state;
                    s.last_probe_rtt_ms = None;
                }
                s
            })
            .collect()
    }

    fn destination_action(
        &self,
        name: &str,
        action: AdminAction,
    ) -> Result<DestinationStatus, ActionError> {
        let now = Instant::now();
        // An action on a destination found by DNS is an action on each of its targets.
        let routing = self.core.routing();
        if let Some(targets) = routing
            .router
            .destination_by_name(name)
            .and_then(|d| routing.router.targets(d))
        {
            for t in targets {
                let target = &routing.router.destination(t.dest).name;
                if let Err(e) = self.health.act(target, action, now) {
                    return Err(ActionError::Conflict(e.to_string()));
                }
            }
        }
        match self.health.act(name, action, now) {
            Ok(_) => {}
            Err(HealthError::UnknownDestination { .. }) => {
                return Err(ActionError::UnknownDestination(name.to_string()))
            }
            Err(e) => return Err(ActionError::Conflict(e.to_string())),
        }
        info!(destination = name, action = ?action, "admin action");
        self.health
            .get(name)
            .map(|d| status(d.snapshot(now)))
            .ok_or_else(|| ActionError::UnknownDestination(name.to_string()))
    }

    fn node(&self) -> NodeStatus {
        let state = self.state();
        NodeStatus {
            id: self.id,
            version: env!("CARGO_PKG_VERSION").into(),
            state,
            draining: self.draining.load(Ordering::Acquire),
            stopping: state == NodeState::Stopping,
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_file.as_ref().map(|p| p.display().to_string()),
            calls_in_setup: self.core.calls_in_setup() as u64,
            answered_calls: self.core.answered_calls() as u64,
            peers: self
                .link
                .get()
                .map(|(link, peers, _)| {
                    peers
                        .iter()
                        .map(|p| crate::admin::PeerStatus {
                            id: p.id,
                            address: p.address.to_string(),
                            up: link.is_up(p.id),
                            unsynced: link.is_unsynced(p.id),
                            via: link.path(p.id).map(|a| a.to_string()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn drain_node(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.metrics.node_state(self.state());
            warn!("node draining: /ready answers 503; calls in progress and new arrivals are still served");
        }
    }

    fn resume_node(&self) -> Result<(), ActionError> {
        if self.core.is_stopping() {
            return Err(ActionError::Conflict(
                "the node is stopping (SIGTERM or SIGINT): it cannot resume; start it again".into(),
            ));
        }
        if self.draining.swap(false, Ordering::AcqRel) {
            self.metrics.node_state(self.state());
            info!("node resumed: /ready answers 200");
        }
        Ok(())
    }

    fn reload(&self) -> Result<Reloaded, Vec<String>> {
        Node::reload(self)
    }

    fn log_filter(&self) -> Result<String, crate::logging::LogError> {
        crate::logging::current()
    }

    fn set_log_filter(
        &self,
        filter: &str,
    ) -> Result<crate::logging::LogChange, crate::logging::LogError> {
        crate::logging::set(filter)
    }

    fn metrics(&self) -> String {
        // Gauges of state are read when scraped, not pushed on every change.
        self.process.refresh();
        let routing = self.core.routing();
        let (servers, clients, _) = self.core.table_sizes();
        routing.metrics.set_transactions(servers + clients);
        for (i, d) in routing.health.iter().enumerate() {
            let id = DestId(i as u32);
            let state = name_state(&routing, id).map_or_else(|| d.state(), |(s, _, _)| s);
            routing.metrics.destination_state(id, state);
            routing
                .metrics
                .destination_calls_in_progress(id, d.calls_in_progress());
            if let Some(rtt) = d.snapshot(Instant::now()).last_probe_rtt {
                routing.metrics.probe_rtt(id, rtt);
            }
        }
        self.handle.render()
    }
}

/// A seed no other process on this host shares: the branch parameters of two nodes never
/// collide.
fn process_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::restart_only;
    use crate::config::Config;

    const BASE: &str = r#"
[node]
workers = 2

[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"

[[route]]
name = "default"
destinations = ["primary"]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid config")
    }

    #[test]
    fn a_reload_names_each_section_that_changes_only_on_restart_and_not_the_rules() {
        let running = parse(BASE);
        assert!(restart_only(&running, &running).is_empty());
        let rules_only = BASE.replace("10.0.0.1:5060", "10.0.0.2:5060");
        assert!(restart_only(&running, &parse(&rules_only)).is_empty());
        let changed = BASE.replace("workers = 2", "workers = 2\nshutdown_grace = \"5s\"")
            + "\n[timers]\nt1 = \"200ms\"\n[guard]\nrate = 5.0\n[health]\npassive = false\n\
               [tcp]\nidle_timeout = \"1min\"\n";
        assert_eq!(
            restart_only(&running, &parse(&changed)),
            ["node", "timers", "tcp", "health", "guard"]
        );
        let mut paired = running.clone();
        paired.cluster = Some(crate::config::ClusterConfig {
            listen: "127.0.0.1:5800".parse().unwrap(),
            peers: vec![crate::link::PeerAddr {
                id: 2,
                address: "127.0.0.2:5800".parse().unwrap(),
                backup: None,
            }],
            cert: "n.pem".into(),
            key: "n.key".into(),
            ca: "ca.pem".into(),
            dead_after: std::time::Duration::from_secs(1),
            batch: crate::link::DEFAULT_BATCH,
        });
        assert_eq!(restart_only(&running, &paired), ["cluster"]);
        let mut repeered = paired.clone();
        if let Some(c) = &mut repeered.cluster {
            c.dead_after = std::time::Duration::from_millis(500);
        }
        assert_eq!(restart_only(&paired, &repeered), ["cluster"]);
        let keyed = BASE.replace(
            "workers = 2",
            "workers = 2\ntopology_key = \"0123456789abcdef0123\"",
        ) + "\n[hep]\naddress = \"127.0.0.9:9060\"\n";
        assert_eq!(restart_only(&running, &parse(&keyed)), ["node", "hep"]);
        let mut relaying = running.clone();
        relaying.media = Some(pointsman_protocol::media::MediaConfig {
            carrier_ip: "127.0.0.1".parse().unwrap(),
            cloud_ip: "127.0.0.1".parse().unwrap(),
            port_min: 20000,
            port_max: 20099,
            silence: None,
            silence_comfort_noise: pointsman_protocol::media::DEFAULT_SILENCE_COMFORT_NOISE,
            strict_source: false,
        });
        assert_eq!(restart_only(&running, &relaying), ["media"]);
    }

    #[test]
    fn targets_past_the_series_bound_are_counted_under_their_names_other() {
        use super::{TargetSeries, MAX_TARGET_SERIES};
        use routing_rules::{DestId, Resolved};
        let cfg = parse(&BASE.replace("10.0.0.1:5060", "cloud.test"));
        let batch = |from: u32| {
            let targets = (from..from + 100)
                .map(|i| Resolved {
                    addr: std::net::SocketAddr::new(
                        std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                        5060,
                    ),
                    priority: 0,
                    weight: 1,
                    host: "t".into(),
                })
                .collect();
            cfg.router.with_targets(&[(DestId(0), targets)])
        };
        let mut series = TargetSeries::default();
        let first = batch(0);
        let (names, _) = series.names(&first);
        assert_eq!(names[0], "primary");
        assert_eq!(names[1], first.destination(DestId(1)).name);
        // DNS keeps giving new addresses: past the bound they share one series.
        let mut last = Vec::new();
        for round in 1..12 {
            last = series.names(&batch(round * 100)).0;
        }
        assert_eq!(series.named.len(), MAX_TARGET_SERIES);
        assert!(last[1..].iter().all(|n| n == "primary@other"), "{last:?}");
        // A target that had its own series keeps it.
        assert_eq!(series.names(&first).0, names);
    }
}
