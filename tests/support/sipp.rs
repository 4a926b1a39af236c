//! SIPp, the independent SIP implementation the interop and pair tests run against: one SIPp
//! process per role (on the host or in a network namespace), its statistics file read back,
//! and a work directory kept when the test fails.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scenario file of tests/sipp/.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// One SIPp process; killed when dropped.
pub struct Sipp {
    pub name: &'static str,
    pub child: Child,
    pub dir: PathBuf,
}

impl Sipp {
    /// Starts SIPp with `scenario` (`-sf FILE` or `-sn BUILTIN`) for `calls` calls on `ip`,
    /// `port` (media on `media_port`), inside network namespace `netns` (`ip netns exec`) when
    /// one is given.
    pub fn run_in(
        netns: Option<&str>,
        name: &'static str,
        scenario: &[String],
        calls: u32,
        (ip, port, media_port): (IpAddr, u16, u16),
        dir: &Path,
        extra: &[String],
    ) -> Sipp {
        let mut cmd = match netns {
            Some(ns) => {
                // `ip netns exec` starts whatever it finds: a missing sipp would fail as a
                // SIPp that ran no call.
                let on_path = std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|dir| dir.join("sipp").is_file())
                });
                assert!(
                    on_path,
                    "cannot run sipp (not on PATH): install it with `apt-get install sip-tester`"
                );
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sipp"]);
                c
            }
            None => Command::new("sipp"),
        };
        cmd.args(scenario)
            .args(["-i", &ip.to_string(), "-p", &port.to_string()])
            .args(["-mi", &ip.to_string(), "-mp", &media_port.to_string()])
            .args(["-m", &calls.to_string()])
            .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(dir.join(format!("{name}.csv")))
            .args(["-trace_err", "-error_file"])
            .arg(dir.join(format!("{name}.err")))
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run sipp ({e}): install it with `apt-get install sip-tester`")
        });
        Sipp {
            name,
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits for SIPp to exit; its exit code (0: every call succeeded).
    pub async fn finish(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The last row of SIPp's statistics file, by column name.
    pub fn stats(&self) -> HashMap<String, String> {
        let text = std::fs::read_to_string(self.dir.join(format!("{}.csv", self.name)))
            .unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return HashMap::new();
        };
        let last = lines.next_back().unwrap_or_default();
        header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn count(&self, column: &str) -> u32 {
        self.stats()
            .get(column)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.err", self.name)))
            .unwrap_or_default()
            .chars()
            .take(4000)
            .collect()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIPp's statistics and error files; removed unless the test failed.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(ip: IpAddr) -> WorkDir {
        WorkDir::named(&ip.to_string())
    }

    /// A work directory named after `name` (unique within this test process).
    pub fn named(name: &str) -> WorkDir {
        let dir =
            std::env::temp_dir().join(format!("pointsman-sipp-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("sipp work dir");
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("SIPp files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
