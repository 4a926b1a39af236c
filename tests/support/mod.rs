//! What every end-to-end test needs: a loopback address of its own, a pointsman process on a
//! config written for the test, and simulated peers around it. Everything a test starts is
//! stopped when its handle drops, even when the test fails.

#![allow(dead_code)]

pub mod certs;
pub mod netns;
pub mod sipp;

use pointsman_sim::{Behaviour, Carrier, Cloud, Endpoint, Journal};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback address no other test of this run uses (127.0.0.0/8 is all loopback on Linux),
/// so tests run in parallel on the same ports without meeting.
pub fn fresh_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt = (std::process::id() % 100) as u8;
    IpAddr::V4(Ipv4Addr::new(
        127,
        100 + salt,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

pub fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// A pointsman process; killed when dropped.
pub struct Node {
    child: Child,
    pub dir: PathBuf,
    pub sip: SocketAddr,
}

impl Node {
    /// Writes `config` to a file, starts `pointsman run` on it (logging at debug) and waits
    /// until it answers OPTIONS on `sip` (UDP).
    pub async fn start(config: &str, sip: SocketAddr) -> Node {
        Node::start_logging(config, sip, "debug").await
    }

    /// [`Node::start`] with `POINTSMAN_LOG` set to `filter`.
    pub async fn start_logging(config: &str, sip: SocketAddr, filter: &str) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "pointsman-test-{}-{}",
            std::process::id(),
            sip.ip()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pointsman.toml");
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::File::create(dir.join("pointsman.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
            .args(["run", "--config"])
            .arg(&path)
            .env("POINTSMAN_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pointsman");
        let mut node = Node { child, dir, sip };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let sock = tokio::net::UdpSocket::bind(at(self.sip.ip(), 0))
            .await
            .expect("probe socket");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pointsman exited with {status}:\n{}", self.log());
            }
            n += 1;
            let probe = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ready{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag=r\r\nTo: <sip:{sip}>\r\n\
                 Call-ID: ready-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                sip = self.sip,
                me = sock.local_addr().expect("addr"),
            );
            let _ = sock.send_to(probe.as_bytes(), self.sip).await;
            let mut buf = [0u8; 2048];
            if let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
            {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("pointsman did not answer OPTIONS in 10 s:\n{}", self.log());
    }

    /// Everything pointsman logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pointsman.log")).unwrap_or_default()
    }

    /// Replaces the config file and sends SIGHUP; waits until pointsman logged the outcome
    /// and returns whether it took the new rules (`false`: refused, old rules kept).
    pub async fn reload(&self, config: &str) -> bool {
        const OK: &str = "rules reloaded";
        const REFUSED: &str = "reload refused: the running rules stay";
        let count = |what: &str| self.log().matches(what).count();
        let (ok_before, refused_before) = (count(OK), count(REFUSED));
        std::fs::write(self.dir.join("pointsman.toml"), config).expect("write config");
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if count(OK) > ok_before {
                return true;
            }
            if count(REFUSED) > refused_before {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pointsman logged no reload outcome:\n{}", self.log());
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "cannot signal pointsman");
    }

    /// Waits up to `timeout` for the process to exit: its exit status, or `None` while it runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, timeout).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("pointsman log kept in {}", self.dir.display());
        }
    }
}

/// Waits up to `timeout` for `child` to exit: its exit status, or `None` while it runs.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The usual cast: a carrier, pointsman, and two clouds (`primary` first, then `secondary`).
pub struct TwoClouds {
    pub ip: IpAddr,
    pub journal: Arc<Journal>,
    pub node: Node,
    pub carrier: Carrier,
    /// `None` when the test asked for a dead primary (nothing bound on its port).
    pub primary: Option<Cloud>,
    pub secondary: Cloud,
}

/// How a [`TwoClouds`] scenario is set up.
pub struct Setup {
    pub primary: Option<Behaviour>,
    pub secondary: Behaviour,
    /// `provisional_timeout` of both destinations.
    pub provisional: &'static str,
    /// Extra lines for the `[[destination]]` table of the primary.
    pub primary_extra: &'static str,
    /// `transport` of the primary.
    pub primary_transport: &'static str,
    /// Extra lines for the `[[route]]` table.
    pub route_extra: &'static str,
    /// Health probes (OPTIONS) to both destinations.
    pub probe: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            primary: Some(Behaviour::answer()),
            secondary: Behaviour::answer(),
            provisional: "500ms",
            primary_extra: "",
            primary_transport: "udp",
            route_extra: "",
            probe: true,
        }
    }
}

pub const PROXY_PORT: u16 = 5060;
pub const PRIMARY_PORT: u16 = 5070;
pub const SECONDARY_PORT: u16 = 5080;
pub const CARRIER_PORT: u16 = 5090;
pub const ADMIN_PORT: u16 = 9060;

pub fn two_clouds_config(ip: IpAddr, setup: &Setup) -> String {
    format!(
        r#"
[node]
id = 7
workers = 2

[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"

[[listen]]
transport = "tcp"
address = "{ip}:{PROXY_PORT}"

[timers]
t1 = "100ms"

[admin]
listen = "{ip}:{ADMIN_PORT}"

[[destination]]
name = "primary"
address = "{ip}:{PRIMARY_PORT}"
transport = "{ptransport}"
provisional_timeout = "{prov}"
probe = {probe}
{pextra}

[[destination]]
name = "secondary"
address = "{ip}:{SECONDARY_PORT}"
provisional_timeout = "{prov}"
probe = {probe}

[[route]]
name = "default"
destinations = ["primary", "secondary"]
{rextra}
"#,
        ptransport = setup.primary_transport,
        prov = setup.provisional,
        pextra = setup.primary_extra,
        rextra = setup.route_extra,
        probe = setup.probe,
    )
}

impl TwoClouds {
    pub async fn start(setup: Setup) -> TwoClouds {
        let ip = fresh_ip();
        let journal = Arc::new(Journal::default());
        let primary = match setup.primary.clone() {
            None => None,
            Some(b) if setup.primary_transport == "tcp" => {
                let ep = Endpoint::tcp_listen(at(ip, PRIMARY_PORT))
                    .await
                    .expect("bind primary");
                Some(Cloud::start("primary", ep, b, journal.clone()))
            }
            Some(b) => Some(
                Cloud::udp("primary", at(ip, PRIMARY_PORT), b, journal.clone())
                    .expect("bind primary"),
            ),
        };
        let secondary = Cloud::udp(
            "secondary",
            at(ip, SECONDARY_PORT),
            setup.secondary.clone(),
            journal.clone(),
        )
        .expect("bind secondary");
        let node = Node::start(&two_clouds_config(ip, &setup), at(ip, PROXY_PORT)).await;
        let carrier = Carrier::udp(
            "carrier",
            at(ip, CARRIER_PORT),
            at(ip, PROXY_PORT),
            journal.clone(),
        )
        .expect("bind carrier");
        TwoClouds {
            ip,
            journal,
            node,
            carrier,
            primary,
            secondary,
        }
    }

    pub fn proxy(&self) -> SocketAddr {
        at(self.ip, PROXY_PORT)
    }

    /// The journal and pointsman's log, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "--- journal ---\n{}--- pointsman log ---\n{}",
            self.journal.dump(),
            self.node.log()
        )
    }
}

/// Any cast: a carrier, pointsman on a config written for the test, and named UDP clouds.
pub struct Cast {
    pub ip: IpAddr,
    pub journal: Arc<Journal>,
    pub node: Node,
    pub carrier: Carrier,
    pub clouds: Vec<Cloud>,
}

impl Cast {
    /// `config` gets the test's address; `clouds` are (name, port, behaviour); a cloud with no
    /// behaviour is a dead port (nothing bound).
    pub async fn start(
        config: impl FnOnce(IpAddr) -> String,
        clouds: &[(&str, u16, Option<Behaviour>)],
    ) -> Cast {
        let ip = fresh_ip();
        let journal = Arc::new(Journal::default());
        let clouds = clouds
            .iter()
            .filter_map(|(name, port, b)| {
                let b = b.clone()?;
                Some(Cloud::udp(name, at(ip, *port), b, journal.clone()).expect("bind cloud"))
            })
            .collect();
        let node = Node::start(&config(ip), at(ip, PROXY_PORT)).await;
        let carrier = Carrier::udp(
            "carrier",
            at(ip, CARRIER_PORT),
            at(ip, PROXY_PORT),
            journal.clone(),
        )
        .expect("bind carrier");
        Cast {
            ip,
            journal,
            node,
            carrier,
            clouds,
        }
    }

    pub fn report(&self) -> String {
        format!(
            "--- journal ---\n{}--- pointsman log ---\n{}",
            self.journal.dump(),
            self.node.log()
        )
    }
}

/// The `[node]` and `[[listen]]` part of a test config on `ip`.
pub fn node_section(ip: IpAddr) -> String {
    format!(
        r#"
[node]
id = 7
workers = 2

[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"

[timers]
t1 = "100ms"

[admin]
listen = "{ip}:{ADMIN_PORT}"
"#
    )
}

/// A `[[destination]]` table on `ip:port`.
pub fn destination(name: &str, ip: IpAddr, port: u16, provisional: &str) -> String {
    format!(
        r#"
[[destination]]
name = "{name}"
address = "{ip}:{port}"
provisional_timeout = "{provisional}"
"#
    )
}

/// The Prometheus text of the node whose admin API listens on `admin`.
pub async fn metric_text(admin: &str) -> String {
    let addr = admin.to_string();
    tokio::task::spawn_blocking(move || {
        pointsman::admin::http_request(&addr, "GET", "/metrics", None, Duration::from_secs(5))
    })
    .await
    .expect("join")
    .expect("GET /metrics")
    .text()
}
