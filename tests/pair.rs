//! The pair behind anycast, on a real network: two pointsman processes, each in a network
//! namespace of its own, share the anycast address 198.18.0.100 (on each node's loopback); the
//! carrier's and the clouds' hosts reach it over two equal-cost routes hashed on the L4 ports,
//! as behind an ECMP router that both nodes announce the address to, so every message of a
//! call may land on either node. SIPp plays the carrier (a socket per call: `-t un`) and two
//! clouds on addresses of their own. The nodes are linked over QUIC on their unicast
//! addresses.
//!
//! When a node is killed or frozen, the test withdraws it from the routes as BGP would (the
//! announcement itself, by BIRD, has tests of its own) and checks that every call completes:
//! calls in setup and answered calls of the dead node are carried on by the other.
//!
//! Needs root, iproute2 and SIPp (CI has them).

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::certs::Ca;
use support::netns::{ip, Lab};
use support::sipp::{scenario, tail, Sipp, WorkDir};

const ANYCAST: &str = "198.18.0.100";
const NODE_IPS: [&str; 2] = ["198.18.1.11", "198.18.1.12"];
/// The nodes' ends of the cable between them (the link's first path, when there is one), off
/// the segment's 198.18.0.0/16: with the cable down, nothing routes to them.
const CABLE_IPS: [&str; 2] = ["198.19.9.1", "198.19.9.2"];
const CARRIER_IP: &str = "198.18.2.10";
const CLOUD_IPS: [&str; 2] = ["198.18.3.21", "198.18.3.22"];
const LINK_PORT: u16 = 5800;
const ADMIN: &str = "127.0.0.1:8080";

fn ipaddr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node `i` (id `i + 1`) of the pair; with `cable`, its link runs over the cable between the
/// nodes, with the segment as its backup path.
fn node_config(i: usize, dir: &Path, cable: bool) -> String {
    let link = if cable {
        format!(
            "listen = \"0.0.0.0:{LINK_PORT}\"\npeers = [{{ id = {peer}, address = \
             \"{other}:{LINK_PORT}\", backup = \"{other_segment}:{LINK_PORT}\" }}]",
            peer = 2 - i,
            other = CABLE_IPS[1 - i],
            other_segment = NODE_IPS[1 - i],
        )
    } else {
        format!(
            "listen = \"{me}:{LINK_PORT}\"\npeers = [{{ id = {peer}, address = \
             \"{other}:{LINK_PORT}\" }}]",
            me = NODE_IPS[i],
            peer = 2 - i,
            other = NODE_IPS[1 - i],
        )
    };
    format!(
        r#"[node]
id = {id}
workers = {workers}
advertise = "{ANYCAST}:5060"

[[listen]]
transport = "udp"
address = "{ANYCAST}:5060"

[admin]
listen = "{ADMIN}"

[cluster]
{link}
cert = "{dir}/node-{i}.pem"
key = "{dir}/node-{i}.key"
ca = "{dir}/ca.pem"
dead_after = "500ms"
{batch}

[[destination]]
name = "cloud1"
address = "{c1}:5060"
probe = false
provisional_timeout = "5s"

[[destination]]
name = "cloud2"
address = "{c2}:5060"
probe = false
provisional_timeout = "5s"

[[group]]
name = "clouds"
strategy = "weighted"
members = ["cloud1", "cloud2"]

[[route]]
name = "default"
tiers = ["clouds"]
"#,
        id = i + 1,
        // The bench's --workers; the tests run with two.
        workers = std::env::var("POINTSMAN_PAIR_WORKERS").unwrap_or_else(|_| "2".into()),
        // The bench's --batch; without it (the tests, the bench's default) pointsman's own.
        batch = std::env::var("POINTSMAN_PAIR_BATCH")
            .map(|b| format!("batch = \"{b}\""))
            .unwrap_or_default(),
        dir = dir.display(),
        c1 = CLOUD_IPS[0],
        c2 = CLOUD_IPS[1],
    )
}

/// One pair at a time: each runs SIPp at tens of calls per second with timing that matters,
/// and two at once on 2 vCPUs would measure the machine, not the pair.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a pair is started with.
struct Setup {
    /// Both nodes, linked; otherwise node 1 alone, without a `[cluster]` section.
    cluster: bool,
    /// The clouds' SIPp scenario (tests/sipp/).
    cloud_xml: &'static str,
    /// A cable between the nodes carries their link, the segment its backup path.
    cable: bool,
}

/// A pointsman process in its namespace; killed with the lab.
struct PairNode {
    ns: String,
    child: Child,
    log: PathBuf,
}

impl PairNode {
    fn start(ns: &str, config: &str, dir: &Path, i: usize) -> PairNode {
        let path = dir.join(format!("node-{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("node-{i}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_pointsman-node"))
            .args(["run", "--config"])
            .arg(&path)
            .env("POINTSMAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pointsman");
        PairNode {
            ns: ns.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the node's admin API (inside its namespace).
    fn get(&self, path: &'static str) -> Option<String> {
        Lab::within(&self.ns, move || {
            pointsman::admin::http_request(ADMIN, "GET", path, None, Duration::from_secs(2))
                .ok()
                .filter(|r| r.status == 200)
                .map(|r| r.text())
        })
    }

    /// The value of the series that starts `series ` in `GET /metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").unwrap_or_default();
        let prefix = format!("{series} ");
        // `+ 0.0`: an empty sum is -0.
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse::<f64>().ok())
            .sum::<f64>()
            + 0.0
    }

    /// Calls of the peer this node took over: (in setup, answered).
    fn adopted(&self) -> (f64, f64) {
        (
            self.metric("pointsman_cluster_adopted_total{state=\"setup\"}"),
            self.metric("pointsman_cluster_adopted_total{state=\"answered\"}"),
        )
    }

    /// What `GET /node` says of peer `id`.
    fn peer(&self, id: u64) -> Option<serde_json::Value> {
        let node: serde_json::Value = serde_json::from_str(&self.get("/node")?).ok()?;
        node["peers"]
            .as_array()?
            .iter()
            .find(|p| p["id"].as_u64() == Some(id))
            .cloned()
    }

    /// What `GET /node` says of peer `id`: (up, unsynced).
    fn peer_status(&self, id: u64) -> Option<(bool, bool)> {
        let peer = self.peer(id)?;
        Some((peer["up"].as_bool()?, peer["unsynced"].as_bool()?))
    }

    /// The address of peer `id` the link runs over now (`GET /node`), when up.
    fn peer_via(&self, id: u64) -> Option<String> {
        self.peer(id)?["via"].as_str().map(str::to_string)
    }

    /// CPU time the process has used (user + system).
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th of them, in clock ticks.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our child's (`ip netns exec`
        // execs the node in place).
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for PairNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab, the two nodes linked and ready, the two clouds (each rings 2 s, then answers), and
/// the routes to the anycast address over both nodes.
struct Pair {
    nodes: Vec<PairNode>,
    clouds: Vec<Sipp>,
    carrier_ns: String,
    cloud_ns: Vec<String>,
    /// The link runs over a cable between the nodes (see [`Setup::cable`]).
    cable: bool,
    work: WorkDir,
    // Dropped last: the namespaces go after every process in them.
    _lab: Lab,
    // Released last (fields drop in order), after every process and namespace of the pair.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Pair {
    fn start() -> Pair {
        Pair::start_with(&Setup {
            cluster: true,
            cloud_xml: "ringing_cloud_uas.xml",
            cable: false,
        })
    }

    fn start_with(setup: &Setup) -> Pair {
        // A test that failed while it held the turn leaves it poisoned: the next one still runs.
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut lab = Lab::new();
        let work = WorkDir::named(lab.name());
        let dir = work.0.clone();
        let ca = Ca::new("pair ca");
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        let mut node_ns = Vec::new();
        for (i, node_ip) in NODE_IPS.iter().enumerate() {
            // Its certificate names every address its peer may dial.
            let node = ca.node_on(&[ipaddr(node_ip), ipaddr(CABLE_IPS[i])]);
            std::fs::write(dir.join(format!("node-{i}.pem")), node.cert).unwrap();
            std::fs::write(dir.join(format!("node-{i}.key")), node.key).unwrap();
            let ns = lab.host(&format!("n{i}"), ipaddr(node_ip));
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ANYCAST}/32"),
                "dev",
                "lo",
            ]);
            node_ns.push(ns);
        }
        if setup.cable {
            lab.cable(
                (&node_ns[0], ipaddr(CABLE_IPS[0])),
                (&node_ns[1], ipaddr(CABLE_IPS[1])),
            );
        }
        let carrier_ns = lab.host("car", ipaddr(CARRIER_IP));
        let cloud_ns: Vec<String> = CLOUD_IPS
            .iter()
            .enumerate()
            .map(|(i, c)| lab.host(&format!("c{i}"), ipaddr(c)))
            .collect();
        for ns in std::iter::once(&carrier_ns).chain(&cloud_ns) {
            route_over(ns, &NODE_IPS);
            // ECMP hashed on the L4 ports too (policy 1), as a carrier-facing router does.
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg("net.ipv4.fib_multipath_hash_policy=1")
                .output()
                .unwrap();
            assert!(out.status.success(), "sysctl: {:?}", out);
        }
        let clouds = cloud_ns
            .iter()
            .zip(CLOUD_IPS)
            .enumerate()
            .map(|(i, (ns, ip))| {
                let name = if i == 0 { "cloud1" } else { "cloud2" };
                Sipp::run_in(
                    Some(ns),
                    name,
                    &[
                        "-sf".into(),
                        scenario(setup.cloud_xml).display().to_string(),
                    ],
                    100_000,
                    (ipaddr(ip), 5060, 16000),
                    &dir,
                    &[],
                )
            })
            .collect();
        let nodes: Vec<PairNode> = if setup.cluster {
            node_ns
                .iter()
                .enumerate()
                .map(|(i, ns)| PairNode::start(ns, &node_config(i, &dir, setup.cable), &dir, i))
                .collect()
        } else {
            // Node 1 alone: its config without the [cluster] section.
            let config = node_config(0, &dir, false);
            let start = config.find("[cluster]").unwrap();
            let end = config.find("[[destination]]").unwrap();
            let alone = format!("{}{}", &config[..start], &config[end..]);
            vec![PairNode::start(&node_ns[0], &alone, &dir, 0)]
        };
        let pair = Pair {
            _turn: turn,
            nodes,
            clouds,
            carrier_ns,
            cloud_ns,
            cable: setup.cable,
            work,
            _lab: lab,
        };
        if setup.cluster {
            pair.wait_linked();
        } else {
            let deadline = Instant::now() + Duration::from_secs(15);
            while pair.nodes[0].get("/ready").is_none() {
                assert!(Instant::now() < deadline, "node 1 did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        pair
    }

    /// Points the carrier's route at `carrier` and the clouds' at `clouds` (node indices).
    fn route(&self, carrier: &[usize], clouds: &[usize]) {
        let ips = |nodes: &[usize]| nodes.iter().map(|&i| NODE_IPS[i]).collect::<Vec<_>>();
        route_over(&self.carrier_ns, &ips(carrier));
        for ns in &self.cloud_ns {
            route_over(ns, &ips(clouds));
        }
    }

    /// Waits until both nodes are ready and each reports the other up.
    fn wait_linked(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let linked = self.nodes.iter().enumerate().all(|(i, n)| {
                n.get("/ready").is_some()
                    && n.metric(&format!("pointsman_link_up{{peer=\"{}\"}}", 2 - i)) == 1.0
            });
            if linked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not link up:\n--- node 1 ---\n{}\n--- node 2 ---\n{}",
                tail(&self.nodes[0].log(), 20),
                tail(&self.nodes[1].log(), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until each node's link to the other runs over the cable.
    fn wait_link_via_cable(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let via: Vec<Option<String>> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| n.peer_via(2 - i as u64))
                .collect();
            let cable = |i: usize| format!("{}:{LINK_PORT}", CABLE_IPS[i]);
            if via[0] == Some(cable(1)) && via[1] == Some(cable(0)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the link is not on the cable: {via:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A SIPp carrier placing `calls` calls at `rate`/s to the anycast address, each held for
    /// `hold`, from a socket of its own.
    fn carrier(&self, calls: u32, rate: u32, hold: Duration) -> Sipp {
        let hold = hold.as_millis().to_string();
        self.carrier_running(
            "talking_carrier_uac.xml",
            calls,
            rate,
            &["-t", "un", "-l", "400", "-d", &hold, "-max_socket", "2000"],
        )
    }

    /// A SIPp carrier playing `xml` (tests/sipp/): `calls` calls at `rate`/s to the anycast
    /// address, with SIPp's own `extra` arguments.
    fn carrier_running(&self, xml: &str, calls: u32, rate: u32, extra: &[&str]) -> Sipp {
        let mut args = vec![format!("{ANYCAST}:5060"), "-r".into(), rate.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Sipp::run_in(
            Some(&self.carrier_ns),
            "carrier",
            &["-sf".into(), scenario(xml).display().to_string()],
            calls,
            (ipaddr(CARRIER_IP), 5060, 16000),
            &self.work.0,
            &args,
        )
    }

    /// Takes node `i` out of every route to the anycast address, as the router does when its
    /// BGP session or BFD goes down.
    fn withdraw(&self, i: usize) {
        let left = [NODE_IPS[1 - i]];
        for ns in std::iter::once(&self.carrier_ns).chain(&self.cloud_ns) {
            route_over(ns, &left);
        }
    }

    /// Puts both nodes back in every route, as the router does when a node announces again.
    fn announce_both(&self) {
        for ns in std::iter::once(&self.carrier_ns).chain(&self.cloud_ns) {
            route_over(ns, &NODE_IPS);
        }
    }

    /// Starts node `i` again (a new run) on its config.
    fn restart(&mut self, i: usize) {
        let ns = self.nodes[i].ns.clone();
        let config = node_config(i, &self.work.0, self.cable);
        self.nodes[i] = PairNode::start(&ns, &config, &self.work.0, i + 10);
    }

    /// The clouds saw every call end, and failed none: no ghost left ringing or talking, no
    /// second INVITE for a call (their last calls wait 1 s after the BYE, and the statistics
    /// are written every second).
    fn assert_clouds_clean(&mut self) {
        for cloud in &mut self.clouds {
            let deadline = Instant::now() + Duration::from_secs(5);
            while cloud.count("CurrentCall") > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(
                cloud.count("CurrentCall"),
                0,
                "SIPp {}: calls left open\n{}",
                cloud.name,
                cloud.errors()
            );
            assert_eq!(
                cloud.count("FailedCall(C)"),
                0,
                "SIPp {}: {}",
                cloud.name,
                cloud.errors()
            );
        }
    }

    /// The SIPp carrier ended well (`code` 0) with `calls` successful calls.
    fn assert_every_call_completed(&self, carrier: &Sipp, code: Option<i32>, calls: u32) {
        assert_eq!(
            code,
            Some(0),
            "SIPp carrier: not every call completed ({:?})\n{}\n{}",
            carrier.stats(),
            carrier.errors(),
            self.logs()
        );
        assert_eq!(carrier.count("SuccessfulCall(C)"), calls);
    }

    /// `series` summed over both nodes.
    fn total(&self, series: &str) -> f64 {
        self.nodes.iter().map(|n| n.metric(series)).sum()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {} (tail) ---\n{}\n", i + 1, tail(&n.log(), 30)))
            .collect()
    }
}

/// Points `ns`'s route to the anycast address over `nodes` (equal cost).
fn route_over(ns: &str, nodes: &[&str]) {
    let mut args = vec!["-n", ns, "route", "replace", "198.18.0.100/32"];
    if nodes.len() == 1 {
        args.extend(["via", nodes[0], "dev", "eth0"]);
    } else {
        for n in nodes {
            args.extend(["nexthop", "via", n, "dev", "eth0"]);
        }
    }
    ip(&args);
}

/// Waits for SIPp `s` to end (bounded); its exit code.
fn finish(s: &mut Sipp, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = s.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_carriers_datagrams_spread_over_both_nodes_and_every_call_completes() {
    let pair = Pair::start();
    let mut carrier = pair.carrier(200, 50, Duration::from_millis(300));
    let code = finish(&mut carrier, Duration::from_secs(40));
    assert_eq!(
        code,
        Some(0),
        "SIPp carrier: not every call completed ({:?})\n{}\n{}",
        carrier.stats(),
        carrier.errors(),
        pair.logs()
    );
    assert_eq!(carrier.count("SuccessfulCall(C)"), 200);
    let invites: Vec<f64> = pair
        .nodes
        .iter()
        .map(|n| n.metric("pointsman_requests_total{method=\"INVITE\"}"))
        .collect();
    assert!(
        invites.iter().all(|&n| n > 0.0),
        "both nodes take calls: {invites:?}"
    );
    let handed = pair.total("pointsman_cluster_forwarded_total");
    assert!(
        handed > 0.0,
        "some messages landed on the node that does not own their call, and went to their owner"
    );
    // Every new branch and answer was confirmed by the peer before its sends went out.
    let confirmed = pair.total("pointsman_cluster_confirm_seconds_count");
    let waited = pair.total("pointsman_cluster_confirm_seconds_sum");
    assert!(
        confirmed >= 400.0,
        "200 calls: at least a branch and an answer each confirmed, {confirmed} were"
    );
    eprintln!(
        "INVITEs per node {invites:?}, datagrams handed to their owner {handed}, call states \
         confirmed {confirmed} (mean wait {:?})",
        Duration::from_secs_f64(waited / confirmed)
    );
    let _ = &pair.clouds;
}

/// Places calls that ring for 2 s and talk for 2 s, hits node 1 with `signal` while calls ring
/// and talk, withdraws it after `withdraw_after` (what BGP takes to notice), and checks that
/// every call completes.
fn a_node_lost_mid_call_loses_no_call(signal: i32, withdraw_after: Duration) {
    let mut pair = Pair::start();
    let calls = 200;
    let mut carrier = pair.carrier(calls, 40, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(3500));
    let ringing_and_talking = pair.nodes[0].metric("pointsman_calls_in_progress");
    let lost = Instant::now();
    pair.nodes[0].signal(signal);
    std::thread::sleep(withdraw_after);
    pair.withdraw(0);
    // Node 2 sees node 1 down, then adopts its calls as their messages arrive.
    let mut declared_dead = None;
    let mut first_adoption = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && (declared_dead.is_none() || first_adoption.is_none()) {
        let survivor = &pair.nodes[1];
        if declared_dead.is_none() && survivor.metric("pointsman_link_up{peer=\"1\"}") == 0.0 {
            declared_dead = Some(lost.elapsed());
        }
        if first_adoption.is_none() && survivor.adopted() != (0.0, 0.0) {
            first_adoption = Some(lost.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = finish(&mut carrier, Duration::from_secs(60));
    let survivor = &pair.nodes[1];
    let (adopted_setup, adopted_answered) = survivor.adopted();
    let takeovers = survivor.metric("pointsman_cluster_takeover_seconds_count");
    let takeover =
        Duration::from_secs_f64(survivor.metric("pointsman_cluster_takeover_seconds_sum"));
    eprintln!(
        "signal {signal}: node 1 had {ringing_and_talking} calls in progress; declared dead after \
         {declared_dead:?}, first call adopted after {first_adoption:?} (the survivor's \
         takeover metric: {takeover:?} after the declaration); adopted {adopted_setup} in \
         setup, {adopted_answered} answered"
    );
    pair.assert_every_call_completed(&carrier, code, calls);
    assert!(
        ringing_and_talking > 0.0,
        "node 1 had calls when it was lost"
    );
    assert!(
        adopted_setup > 0.0 && adopted_answered > 0.0,
        "node 2 carried on node 1's calls in setup and answered ones\n{}",
        pair.logs()
    );
    let dead = declared_dead.expect("node 2 declared node 1 dead");
    assert!(
        dead < Duration::from_secs(1),
        "declared dead after {dead:?}"
    );
    assert_eq!(takeovers, 1.0, "one death, one takeover");
    assert!(
        dead + takeover < Duration::from_secs(1),
        "taken over {takeover:?} after the death was declared, {dead:?} after it"
    );
    pair.assert_clouds_clean();
}

#[test]
fn a_node_killed_mid_call_loses_no_call_in_setup_or_answered() {
    // A killed node's BGP session closes at once (the router withdraws it in ~70 ms).
    a_node_lost_mid_call_loses_no_call(libc::SIGKILL, Duration::from_millis(100));
}

#[test]
fn a_node_frozen_mid_call_loses_no_call_in_setup_or_answered() {
    // A frozen node is withdrawn by BFD (100 ms × 3).
    a_node_lost_mid_call_loses_no_call(libc::SIGSTOP, Duration::from_millis(300));
}

/// The link runs over a cable between the nodes, with the segment (the SIP network) as its
/// backup path. The cable is cut for 3 s while calls ring and talk on both nodes: both nodes
/// live, so neither may take the other's calls over. The link moves to the backup path within
/// `dead_after` + the grace; the frames lost meanwhile leave each node unsynced, and the
/// snapshots over the new connection resync them. Every call completes.
#[test]
fn the_link_cut_while_both_nodes_live_moves_to_its_backup_path_and_no_call_is_lost() {
    let mut pair = Pair::start_with(&Setup {
        cluster: true,
        cloud_xml: "ringing_cloud_uas.xml",
        cable: true,
    });
    // The link on the cable (a start may find it first over the segment: it moves back).
    pair.wait_link_via_cable();
    let calls = 200;
    let mut carrier = pair.carrier(calls, 40, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(3500));
    let in_progress: Vec<f64> = pair
        .nodes
        .iter()
        .map(|n| n.metric("pointsman_calls_in_progress"))
        .collect();
    ip(&["-n", &pair.nodes[0].ns, "link", "set", "ic", "down"]);
    let cut = Instant::now();
    let segment = format!("{}:{LINK_PORT}", NODE_IPS[1]);
    let mut moved = None;
    while cut.elapsed() < Duration::from_secs(3) {
        if moved.is_none() && pair.nodes[0].peer_via(2).as_ref() == Some(&segment) {
            moved = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["-n", &pair.nodes[0].ns, "link", "set", "ic", "up"]);
    let code = finish(&mut carrier, Duration::from_secs(60));
    pair.assert_every_call_completed(&carrier, code, calls);
    pair.assert_clouds_clean();
    assert!(
        in_progress.iter().all(|&n| n > 0.0),
        "both nodes had calls when the cable was cut: {in_progress:?}"
    );
    for (i, node) in pair.nodes.iter().enumerate() {
        let peer = 2 - i;
        let deaths = |reason: &str| {
            node.metric(&format!(
                "pointsman_link_deaths_total{{peer=\"{peer}\",reason=\"{reason}\"}}"
            ))
        };
        // Node 1 dials: its connection over the cable went silent. Node 2's went silent too,
        // or node 1's connection over the segment replaced it first.
        let deaths = if i == 0 {
            deaths("timeout")
        } else {
            deaths("timeout") + deaths("replaced")
        };
        let dropped = node.metric(&format!("pointsman_link_dropped_total{{peer=\"{peer}\"}}"));
        eprintln!(
            "node {}: {} calls in progress at the cut; link deaths {deaths}, frames for the peer \
             lost {dropped}, calls taken over {:?}",
            i + 1,
            in_progress[i],
            node.adopted()
        );
        assert!(
            deaths >= 1.0,
            "node {}'s connection died with the cable",
            i + 1
        );
        assert_eq!(
            node.adopted(),
            (0.0, 0.0),
            "node {} took none of its live peer's calls over\n{}",
            i + 1,
            pair.logs()
        );
        assert_eq!(
            node.peer_status(peer as u64),
            Some((true, false)),
            "node {} reports its peer up and synced again",
            i + 1
        );
        assert!(
            node.log().contains("was_unsynced=true"),
            "node {} had lost frames for its peer and sent it a full snapshot",
            i + 1
        );
    }
    eprintln!("the link was on the segment {moved:?} after the cut");
    // dead_after (500 ms) and the grace (250 ms), with slack for a loaded machine.
    assert!(
        moved.is_some_and(|m| m < Duration::from_millis(1250)),
        "node 1's link moved to the segment within dead_after and the grace: {moved:?}"
    );
    // The cable is back: the link returns to it.
    pair.wait_link_via_cable();
}

#[test]
fn a_node_that_rejoins_under_load_takes_its_peers_calls_before_it_is_ready_and_no_call_fails() {
    let mut pair = Pair::start();
    let calls = 300;
    let mut carrier = pair.carrier(calls, 40, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(3000));
    pair.nodes[0].signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    pair.withdraw(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        pair.nodes[1].peer_status(1),
        Some((false, true)),
        "node 2 reports node 1 down and unsynced (its calls' states for node 1 were dropped)"
    );
    // Node 1 comes back while node 2 carries every call, its own and node 1's.
    pair.restart(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    while pair.nodes[0].get("/ready").is_none() {
        assert!(
            Instant::now() < deadline,
            "node 1 never became ready\n{}",
            pair.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready_after = started.elapsed();
    let log = pair.nodes[0].log();
    assert!(
        log.contains("synced with the peer: ready"),
        "ready because the peer's calls came, not because the bound passed\n{}",
        tail(&log, 20)
    );
    let replicas = pair.nodes[0].metric("pointsman_cluster_replicas");
    assert_eq!(
        pair.nodes[1].peer_status(1),
        Some((true, false)),
        "node 2 sent node 1 its calls: node 1 is up and synced again"
    );
    // The router takes it back: about half the flows move to it at once.
    pair.announce_both();
    let code = finish(&mut carrier, Duration::from_secs(60));
    eprintln!(
        "node 1 ready {ready_after:?} after its restart, holding {replicas} of node 2's calls; \
         node 2 adopted {} of node 1's calls",
        {
            let (setup, answered) = pair.nodes[1].adopted();
            setup + answered
        }
    );
    pair.assert_every_call_completed(&carrier, code, calls);
    assert!(
        replicas > 0.0,
        "node 1 held node 2's calls when it became ready"
    );
    assert!(
        pair.nodes[0].metric("pointsman_cluster_forwarded_total") > 0.0,
        "messages of node 2's calls that landed on node 1 went to node 2"
    );
    pair.assert_clouds_clean();
}

/// The upper bound of the bucket of histogram `name` in `metrics` that holds quantile `q`
/// (`≤ 200 µs`), or `-` when it has no samples.
fn quantile_bound(metrics: &str, name: &str, q: f64) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix.as_str())?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((
                le.parse().unwrap_or(f64::INFINITY),
                count.trim().parse().ok()?,
            ))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return "-".into();
    }
    let (le, _) = buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .copied()
        .unwrap_or((f64::INFINITY, total));
    if le.is_finite() {
        format!("≤ {:.0} µs", le * 1e6)
    } else {
        "> 250 ms".into()
    }
}

/// What replication and forwarding cost, measured side by side in one run (BENCHMARKS.md,
/// "The pair"): node 1 alone, node 1 replicating every call to node 2, and node 1 with every
/// cloud response landing on node 2 and handed over. The carrier and the clouds are SIPp;
/// clouds answer at once, calls are held 50 ms. `POINTSMAN_PAIR_RATE` (default 1000) calls/s
/// for `POINTSMAN_PAIR_SECONDS` (default 10) s each. The first two rows alternate for
/// `POINTSMAN_PAIR_ROUNDS` (default 3) rounds, each ratio against the lone row just before it
/// (the machine's speed drifts between minutes), and the median ratio is printed last.
#[test]
#[ignore = "a benchmark, not a test: benches/pair/run.sh runs it"]
fn pair_bench() {
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rate = env("POINTSMAN_PAIR_RATE", 1000);
    let seconds = env("POINTSMAN_PAIR_SECONDS", 10);
    let rounds = env("POINTSMAN_PAIR_ROUNDS", 3).max(1);
    let calls = rate * seconds;
    println!("| run | calls | failed | node 1 CPU-µs/call | node 2 CPU-µs/call | link bytes/call | transit p50 | transit p99 | confirmed p50 | p99 | handed-over transit p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let alone = ("node 1 alone", false, 0);
    let replicating = ("node 1 replicating to node 2", true, 0);
    let handed_over = ("responses landing on node 2, handed to node 1", true, 1);
    let mut runs = Vec::new();
    for _ in 0..rounds {
        runs.push(alone);
        runs.push(replicating);
    }
    runs.push(handed_over);
    let mut base = f64::NAN;
    let mut ratios = Vec::new();
    for (name, cluster, clouds_via) in runs {
        let pair = Pair::start_with(&Setup {
            cluster,
            cloud_xml: "cloud_uas.xml",
            cable: false,
        });
        pair.route(&[0], &[clouds_via]);
        let cpu0: Vec<Duration> = pair.nodes.iter().map(PairNode::cpu).collect();
        let mut carrier = pair.carrier_running("carrier_uac.xml", calls, rate, &["-l", "5000"]);
        let code = finish(
            &mut carrier,
            Duration::from_secs(u64::from(seconds) * 3 + 30),
        );
        let cpu1: Vec<Duration> = pair.nodes.iter().map(PairNode::cpu).collect();
        let per_call = |i: usize| {
            cpu1.get(i)
                .zip(cpu0.get(i))
                .map(|(b, a)| (*b - *a).as_micros() as f64 / f64::from(calls))
        };
        let bytes = pair.nodes[0].metric("pointsman_link_sent_bytes_total{peer=\"2\"}");
        let text = pair.nodes[0].get("/metrics").unwrap_or_default();
        let transit = |name: &str, q: f64| quantile_bound(&text, name, q);
        let failed = carrier.count("FailedCall(C)");
        let n1 = per_call(0).unwrap_or(f64::NAN);
        let ratio = if cluster {
            if clouds_via == 0 {
                ratios.push(n1 / base);
            }
            format!(" ({:.2}×)", n1 / base)
        } else {
            base = n1;
            String::new()
        };
        println!(
            "| {name} | {calls} | {failed}{} | {n1:.1}{ratio} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            if code == Some(0) {
                ""
            } else {
                " (SIPp failed)"
            },
            per_call(1).map_or("-".into(), |c| format!("{c:.1}")),
            bytes / f64::from(calls),
            transit("pointsman_udp_transit_seconds", 0.5),
            transit("pointsman_udp_transit_seconds", 0.99),
            transit("pointsman_cluster_confirm_seconds", 0.5),
            transit("pointsman_cluster_confirm_seconds", 0.99),
            transit("pointsman_cluster_handover_seconds", 0.5),
            transit("pointsman_cluster_handover_seconds", 0.99),
        );
    }
    ratios.sort_by(f64::total_cmp);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
    println!(
        "| replicating ÷ alone, median of {} rounds | **{:.2}×** ({}) | | | | | | | | | | |",
        ratios.len(),
        ratios[ratios.len() / 2],
        shown.join(", ")
    );
}
