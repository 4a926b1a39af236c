//! `pointsman announce` in a real BGP lab: network namespaces the test makes (a router with a
//! bridge, one node on it; addresses in 198.18.0.0/15, no link to the host), BIRD 2 in both on
//! the configs shipped in `deploy/bird/`, and on the node pointsman plus its announce sidecar.
//! The router's kernel route table says whether the anycast /32 is announced: never before
//! pointsman is ready, then withdrawn on drain (at once), on SIGSTOP (within the fall count), on
//! SIGKILL (at once) and when the sidecar itself is stopped; back on resume and SIGCONT. The
//! withdrawal times are printed (`--nocapture`).
//!
//! Needs root, `ip` (iproute2) and `bird` (Debian `bird2`): it fails, saying so, without them.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ANYCAST: &str = "198.18.0.100";
const ROUTER_IP: &str = "198.18.1.1";
const NODE_IP: &str = "198.18.1.11";
/// The pointsman admin API, on the node namespace's own loopback.
const ADMIN: &str = "127.0.0.1:9060";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The program `name` from PATH or the sbin directories (root's PATH may lack them).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program args`, panicking with its stderr if it fails.
fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab: two namespaces and the processes in them. Dropping it kills every process and
/// deletes the namespaces, even when the test panicked (the logs are printed then).
struct Lab {
    ip: PathBuf,
    bird: PathBuf,
    birdc: PathBuf,
    rtr: String,
    node: String,
    dir: PathBuf,
    procs: Vec<(&'static str, Child)>,
}

impl Lab {
    fn new() -> Lab {
        // SAFETY: geteuid(2) reads the process's effective user id; no memory is involved.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "the announce lab needs root (network namespaces, veths, BIRD): run as root, as CI \
             does"
        );
        let need = |name: &str, package: &str| {
            program(name).unwrap_or_else(|| {
                panic!("the announce lab needs `{name}`: apt-get install {package} (.ci/run does)")
            })
        };
        let (ip, bird, birdc) = (
            need("ip", "iproute2"),
            need("bird", "bird2"),
            need("birdc", "bird2"),
        );
        // Unique per run: the pid, and the names fit the 15 bytes of an interface name.
        let tag = format!("pman{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("pointsman-announce-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            ip,
            bird,
            birdc,
            rtr: format!("{tag}-rtr"),
            node: format!("{tag}-n1"),
            dir,
            procs: Vec::new(),
        };
        lab.wire();
        lab
    }

    fn ip(&self, args: &[&str]) -> String {
        run(&self.ip, args)
    }

    /// Router: a bridge with 198.18.1.1/24. Node: eth0 on the bridge with 198.18.1.11/24, and
    /// the anycast address on its loopback.
    fn wire(&self) {
        let (rtr, node) = (self.rtr.as_str(), self.node.as_str());
        self.ip(&["netns", "add", rtr]);
        self.ip(&["netns", "add", node]);
        for ns in [rtr, node] {
            self.ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        self.ip(&["-n", rtr, "link", "add", "br0", "type", "bridge"]);
        self.ip(&["-n", rtr, "link", "set", "br0", "up"]);
        self.ip(&["-n", rtr, "addr", "add", "198.18.1.1/24", "dev", "br0"]);
        self.ip(&[
            "-n", rtr, "link", "add", "p-n1", "type", "veth", "peer", "name", "eth0", "netns", node,
        ]);
        self.ip(&["-n", rtr, "link", "set", "p-n1", "master", "br0", "up"]);
        self.ip(&["-n", node, "link", "set", "eth0", "up"]);
        self.ip(&["-n", node, "addr", "add", "198.18.1.11/24", "dev", "eth0"]);
        self.ip(&["-n", node, "addr", "add", "198.18.0.100/32", "dev", "lo"]);
    }

    /// Starts `program args` in namespace `ns`, its output in `<dir>/<name>.log`.
    fn spawn(&mut self, name: &'static str, ns: &str, program: &Path, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(&self.ip)
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("POINTSMAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.procs.push((name, child));
    }

    fn child(&mut self, name: &str) -> &mut Child {
        self.procs
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    fn signal(&mut self, name: &str, signal: libc::c_int) {
        let pid = self.child(name).id();
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the program in place, so
        // it is the program itself); no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "cannot signal {name}");
    }

    /// Kills `name` with SIGKILL and reaps it.
    fn kill(&mut self, name: &str) {
        self.signal(name, libc::SIGKILL);
        let _ = self.child(name).wait();
        self.procs.retain(|(n, _)| *n != name);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        ["router-bird", "node-bird", "pointsman", "announce"]
            .iter()
            .map(|n| format!("--- {n} ---\n{}", self.log(n)))
            .collect()
    }

    fn socket(&self, name: &str) -> String {
        self.dir.join(format!("{name}.ctl")).display().to_string()
    }

    fn start_birds(&mut self) {
        let rtr = self.rtr.clone();
        let bird = self.bird.clone();
        let conf = repo_file("deploy/bird/router.conf").display().to_string();
        let sock = self.socket("router");
        self.spawn(
            "router-bird",
            &rtr,
            &bird,
            &["-f", "-c", &conf, "-s", &sock],
        );
        self.start_node_bird();
    }

    fn start_node_bird(&mut self) {
        let node = self.node.clone();
        let bird = self.bird.clone();
        let conf = repo_file("deploy/bird/node.conf").display().to_string();
        let sock = self.socket("node");
        // A killed BIRD leaves its socket file behind; BIRD replaces it.
        self.spawn("node-bird", &node, &bird, &["-f", "-c", &conf, "-s", &sock]);
    }

    fn start_pointsman(&mut self) {
        let config = self.dir.join("pointsman.toml");
        std::fs::write(
            &config,
            format!(
                r#"[node]
id = 1
workers = 1

[[listen]]
transport = "udp"
address = "{ANYCAST}:5060"

[admin]
listen = "{ADMIN}"

[[destination]]
name = "cloud"
address = "{ROUTER_IP}:5070"
probe = false

[[route]]
name = "default"
destinations = ["cloud"]
"#
            ),
        )
        .unwrap();
        let node = self.node.clone();
        let config = config.display().to_string();
        self.spawn(
            "pointsman",
            &node,
            Path::new(env!("CARGO_BIN_EXE_pointsman-node")),
            &["run", "--config", &config],
        );
    }

    fn start_announce(&mut self) {
        let node = self.node.clone();
        let sock = self.socket("node");
        self.spawn(
            "announce",
            &node,
            Path::new(env!("CARGO_BIN_EXE_pointsman-node")),
            &[
                "announce",
                "--admin",
                ADMIN,
                "--bird-socket",
                &sock,
                "--protocol",
                "anycast",
                "--interval",
                "100ms",
                "--timeout",
                "100ms",
                "--rise",
                "2",
                "--fall",
                "3",
            ],
        );
    }

    /// `birdc show protocols NAME` on the router.
    fn router_protocol(&self, name: &str) -> String {
        let out = Command::new(&self.birdc)
            .args(["-s", &self.socket("router"), "show", "protocols", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The router's kernel route to the anycast address, if any.
    fn route(&self) -> Option<String> {
        let out = self.ip(&["-n", &self.rtr, "route", "show", ANYCAST]);
        let out = out.trim();
        (!out.is_empty()).then(|| out.to_string())
    }

    /// Polls until the route is there (`present`) or gone, at most `within`: how long it took.
    fn wait_route(&self, present: bool, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            let route = self.route();
            if route.is_some() == present {
                if let Some(r) = route {
                    assert!(r.contains(&format!("via {NODE_IP}")), "{what}: {r}");
                }
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{what}: the router's route to {ANYCAST} is still {} after {within:?}\n{}",
            if present { "absent" } else { "there" },
            self.logs()
        );
    }

    /// The route stays absent for `period`.
    fn assert_no_route_for(&self, period: Duration, what: &str) {
        let start = Instant::now();
        while start.elapsed() < period {
            if let Some(r) = self.route() {
                panic!(
                    "{what}: the router has a route to {ANYCAST}: {r}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `POST path` to pointsman's admin API, from inside the node's namespace.
    fn admin_post(&self, path: &'static str) -> u16 {
        let netns = PathBuf::from("/run/netns").join(&self.node);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&netns).unwrap();
            // SAFETY: setns(2) with a namespace file descriptor we hold open; it moves only this
            // thread, which exists for this one request, into the node's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            pointsman::admin::http_request(ADMIN, "POST", path, None, Duration::from_secs(2))
                .unwrap()
                .status
        })
        .join()
        .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.rtr] {
            let _ = Command::new(&self.ip)
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!("{}\nlab files kept in {}", self.logs(), self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn the_anycast_route_follows_the_proxy_health() {
    let mut lab = Lab::new();
    let mut report = Vec::new();
    lab.start_birds();
    lab.start_announce();

    // (a) BGP up, the sidecar has told BIRD to disable, pointsman not running: no route.
    let start = Instant::now();
    while !lab.router_protocol("node_a").contains("Established") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "BGP between router and node not established in 15 s:\n{}\n{}",
            lab.router_protocol("node_a"),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    report.push(format!("BGP established after {:?}", start.elapsed()));
    lab.assert_no_route_for(Duration::from_millis(1000), "before pointsman runs");
    assert!(
        lab.log("announce").contains("withdrawn"),
        "the sidecar withdraws first:\n{}",
        lab.log("announce")
    );

    // (b) pointsman starts and answers ready: the route appears.
    let started = Instant::now();
    lab.start_pointsman();
    lab.wait_route(true, Duration::from_secs(10), "after pointsman started");
    report.push(format!(
        "announced {:?} after pointsman was started",
        started.elapsed()
    ));

    // (c) Drain: /ready answers 503, withdrawn at the next probe; resume: back after rise (2).
    assert_eq!(lab.admin_post("/node/drain"), 200);
    let t = lab.wait_route(false, Duration::from_secs(3), "after drain");
    report.push(format!("drain -> withdrawn in {t:?}"));
    assert!(
        t < Duration::from_millis(700),
        "withdrawal after drain took {t:?}"
    );
    // At the first 503, not after a fall count.
    assert!(
        lab.log("announce")
            .contains("withdrawing reason=/ready answered 503"),
        "{}",
        lab.log("announce")
    );
    assert_eq!(lab.admin_post("/node/resume"), 200);
    let t = lab.wait_route(true, Duration::from_secs(3), "after resume");
    report.push(format!("resume -> announced in {t:?}"));

    // (e) SIGSTOP: probes time out, withdrawn after fall (3) x timeout (100 ms) and BIRD's
    // update; SIGCONT: back.
    lab.signal("pointsman", libc::SIGSTOP);
    let t = lab.wait_route(false, Duration::from_secs(3), "after SIGSTOP");
    report.push(format!("SIGSTOP -> withdrawn in {t:?}"));
    assert!(
        t < Duration::from_millis(1500),
        "withdrawal after SIGSTOP took {t:?}"
    );
    assert!(
        lab.log("announce")
            .contains("withdrawing reason=3 failed probe(s) in a row"),
        "{}",
        lab.log("announce")
    );
    lab.signal("pointsman", libc::SIGCONT);
    let t = lab.wait_route(true, Duration::from_secs(3), "after SIGCONT");
    report.push(format!("SIGCONT -> announced in {t:?}"));

    // BIRD restarts under a ready node: its config starts the route disabled, and the sidecar,
    // telling BIRD the desired state again every second, reconnects and re-enables it.
    lab.kill("node-bird");
    let t = lab.wait_route(false, Duration::from_secs(5), "after the node's BIRD died");
    report.push(format!("node BIRD SIGKILL -> withdrawn in {t:?}"));
    let restarted = Instant::now();
    lab.start_node_bird();
    lab.wait_route(
        true,
        Duration::from_secs(15),
        "after the node's BIRD restarted",
    );
    report.push(format!(
        "node BIRD restarted -> announced again after {:?} (BGP reconnect included)",
        restarted.elapsed()
    ));

    // (d) SIGKILL: the admin port refuses at once, withdrawn without a fall count.
    lab.kill("pointsman");
    let t = lab.wait_route(false, Duration::from_secs(2), "after SIGKILL");
    report.push(format!("SIGKILL -> withdrawn in {t:?}"));
    assert!(
        t < Duration::from_millis(700),
        "withdrawal after SIGKILL took {t:?}"
    );
    assert!(
        lab.log("announce").contains("refused the connection"),
        "{}",
        lab.log("announce")
    );

    // The sidecar itself stopped (SIGTERM) while pointsman is ready: it withdraws and exits 0.
    lab.start_pointsman();
    lab.wait_route(true, Duration::from_secs(10), "after pointsman restarted");
    lab.signal("announce", libc::SIGTERM);
    let t = lab.wait_route(
        false,
        Duration::from_secs(2),
        "after SIGTERM to the sidecar",
    );
    report.push(format!("sidecar SIGTERM -> withdrawn in {t:?}"));
    let status = lab.child("announce").wait().unwrap();
    assert!(status.success(), "the sidecar exited {status}");
    assert!(
        lab.log("announce").contains("withdrawn: SIGTERM"),
        "{}",
        lab.log("announce")
    );

    let mut out = std::io::stdout();
    for line in &report {
        let _ = writeln!(out, "announce lab: {line}");
    }
}
