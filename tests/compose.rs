//! The images, and the compose pair (docker-compose.yml, deploy/README.md) under a kill.
//!
//! - The node image (`pointsman:local`, deploy/docker/node/Dockerfile) holds pointsman alone and
//!   runs it as nobody.
//! - The pair: two pointsman nodes in containers (the node image plus BIRD and SIPp) behind a
//!   BIRD router's ECMP route, a SIPp carrier placing 10 calls a second through it and two SIPp
//!   clouds. When node-a is killed mid-call, node-b takes its calls over and the carrier sees no
//!   call fail.
//!
//! Needs Docker Engine with Compose, and BIRD, iproute2, SIPp and openssl on this machine (the
//! image copies them): ignored by default; `.ci/run` runs it where an engine runs and says so
//! where none does. The image carries this test build of pointsman (`build.sh --binary`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The repository (docker-compose.yml is at its root).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// Stages both images' files with this test build of pointsman and builds the node image,
/// once per test run (the tests share the staging folders and the tag).
fn node_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        run(Command::new(root().join("deploy/docker/build.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_pointsman-node")));
        run(Command::new("docker")
            .args(["build", "-q", "-t", "pointsman:local"])
            .arg(root().join("deploy/docker/node")));
    });
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A compose project of the pair; taken down (containers and networks) when dropped.
struct Project {
    name: String,
    /// `docker-compose` (Compose v1) or `docker compose` (v2).
    compose: Vec<&'static str>,
}

impl Project {
    fn up() -> Project {
        let compose: Vec<&'static str> = if Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            vec!["docker-compose"]
        } else {
            vec!["docker", "compose"]
        };
        let project = Project {
            name: format!("pmci{}", std::process::id()),
            compose,
        };
        node_image();
        run(&mut project.command(&["build"]));
        run(&mut project.command(&["up", "-d"]));
        project
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.compose[0]);
        cmd.args(&self.compose[1..])
            .args(["-p", &self.name])
            .args(args)
            .current_dir(root());
        cmd
    }

    /// The carrier's last statistics line (SIPp `-trace_stat`, every 5 s): (created, ok,
    /// failed).
    fn carrier(&self) -> Option<(u64, u64, u64)> {
        let out = self
            .command(&["exec", "-T", "carrier", "cat", "/tmp/carrier.csv"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.last()?.split(';').collect();
        let field = |name: &str| -> Option<u64> {
            let i = header.iter().position(|h| *h == name)?;
            last.get(i)?.trim().parse().ok()
        };
        Some((
            field("TotalCallCreated")?,
            field("SuccessfulCall(C)")?,
            field("FailedCall(C)")?,
        ))
    }

    /// Waits (bounded) for the carrier's statistics to satisfy `done`.
    fn wait_carrier(
        &self,
        within: Duration,
        done: impl Fn((u64, u64, u64)) -> bool,
    ) -> (u64, u64, u64) {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.carrier();
            if let Some(s) = stats.filter(|&s| done(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the carrier's calls did not get there ({stats:?}):\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn logs(&self) -> String {
        let out = self
            .command(&["logs", "--no-color", "--tail", "30"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "-t", "1"])
            .output();
    }
}

#[test]
#[ignore = "needs Docker Engine: .ci/run runs it where an engine runs"]
fn the_node_image_holds_pointsman_alone_and_runs_it_as_nobody() {
    node_image();
    let user = run(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}}",
        "pointsman:local",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&user.stdout).trim(),
        "65534:65534 [\"/usr/local/bin/pointsman\"]"
    );
    let version = run(Command::new("docker").args(["run", "--rm", "pointsman:local", "--version"]));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("pointsman "));
    // A config mounted at /etc/pointsman, read by the node as nobody.
    let examples = root().join("examples");
    let check = run(Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/etc/pointsman:ro", examples.display()))
        .args([
            "pointsman:local",
            "check",
            "--config",
            "/etc/pointsman/two-clouds.toml",
        ]));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("two-clouds.toml: ok"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Nothing else in it: no shell to run.
    let shell = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            "pointsman:local",
            "-c",
            "true",
        ])
        .output()
        .expect("docker run");
    assert!(!shell.status.success(), "the node image has a shell");
}

#[test]
#[ignore = "needs Docker Engine with Compose: .ci/run runs it where an engine runs"]
fn the_compose_pair_loses_no_call_when_a_node_is_killed_mid_call() {
    let pair = Project::up();
    // Calls flow over both nodes: 50 answered and ended.
    let before = pair.wait_carrier(Duration::from_secs(60), |(_, ok, _)| ok >= 50);
    run(&mut pair.command(&["kill", "node-a"]));
    let killed = Instant::now();
    // 20 s more of calls: those in progress on node-a when it died (4 s calls) have ended or
    // failed by then (the carrier's receive timeout is 10 s).
    let after = pair.wait_carrier(Duration::from_secs(60), |(created, _, _)| {
        created >= before.0 + 200
    });
    let adopted = {
        let out = pair.command(&["logs", "--no-color", "node-b"]).output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.matches("adopted a call of a node that is down")
            .count()
    };
    eprintln!(
        "compose pair: {} calls answered before node-a was killed, {} after ({:?} later), {} \
         failed; node-b adopted {adopted} of node-a's calls",
        before.1,
        after.1 - before.1,
        killed.elapsed(),
        after.2
    );
    assert_eq!(after.2, 0, "no call failed:\n{}", pair.logs());
    assert!(
        after.1 >= before.1 + 150,
        "calls went on through node-b: {before:?} -> {after:?}"
    );
    assert!(adopted > 0, "node-b took over node-a's calls in progress");
}
