//! A lab of network namespaces the test makes: hosts on one Ethernet segment (a bridge in a
//! namespace of its own), each with an address from 198.18.0.0/15 and no link to the host's
//! network. Every namespace, and every process started in one, is gone when the lab drops,
//! even when the test fails.
//!
//! Needs root and `ip` (iproute2); [`Lab::new`] fails with what is missing.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The namespaces of one test.
pub struct Lab {
    prefix: String,
    lan: String,
    hosts: Vec<String>,
}

/// Runs `ip` with `args`; panics with its error output when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip ({e}): install iproute2"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// An empty segment. Fails the test when this is not root or `ip` is missing.
    pub fn new() -> Lab {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test builds network namespaces and must run as root (CI does)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "pm{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lan = format!("{prefix}-lan");
        ip(&["netns", "add", &lan]);
        let lab = Lab {
            prefix,
            lan,
            hosts: Vec::new(),
        };
        ip(&["-n", &lab.lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.lan, "link", "set", "br0", "up"]);
        lab
    }

    /// The prefix of this lab's namespace names (unique on the machine while it lives).
    pub fn name(&self) -> &str {
        &self.prefix
    }

    /// Adds host `name` on the segment with `addr/16`; returns its namespace's name.
    pub fn host(&mut self, name: &str, addr: IpAddr) -> String {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let port = format!("v{}", self.hosts.len());
        ip(&[
            "-n", &self.lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &self.lan, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/16"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A cable between hosts `a` and `b` (their namespaces), apart from the segment: a veth
    /// pair named `ic` in each, `a_ip/24` and `b_ip/24` on its ends. Gone with the namespaces.
    pub fn cable(&self, (a, a_ip): (&str, IpAddr), (b, b_ip): (&str, IpAddr)) {
        ip(&[
            "-n", a, "link", "add", "ic", "type", "veth", "peer", "name", "ic", "netns", b,
        ]);
        for (ns, addr) in [(a, a_ip), (b, b_ip)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "ic"]);
            ip(&["-n", ns, "link", "set", "ic", "up"]);
        }
    }

    /// Runs `f` on a thread that lives in namespace `ns`: sockets it opens are that
    /// namespace's.
    pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{ns}"))
            .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the namespace")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.lan)) {
            // Whatever still runs in it goes with it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory preconditions.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
