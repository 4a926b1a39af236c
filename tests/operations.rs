//! Operating a running node end to end: destination health from probes and calls, drain and
//! maintenance through the admin API over HTTP, Prometheus metrics after a scripted set of
//! calls, `pointsman status`, destinations found by DNS (RFC 3263) on a DNS server of the
//! test's own. Each test runs a real `pointsman` process between simulated
//! peers, on its own loopback address.

mod support;

use pointsman::admin::{fetch_destinations, http_request, DestinationStatus};
use pointsman_sim::{Behaviour, DnsServer, Rec, Summary};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::{
    destination, node_section, Cast, ADMIN_PORT, PRIMARY_PORT, PROXY_PORT, SECONDARY_PORT,
};

const WAIT: Duration = Duration::from_secs(5);

/// A carrier, pointsman, primary and secondary; `primary_extra` and `health` complete the config.
async fn cast(primary: Behaviour, primary_extra: &str, health: &str) -> Cast {
    let (primary_extra, health) = (primary_extra.to_string(), health.to_string());
    Cast::start(
        move |ip| {
            let mut c = node_section(ip);
            c.push_str(&health);
            c.push_str(&destination("primary", ip, PRIMARY_PORT, "300ms"));
            c.push_str(&primary_extra);
            c.push_str(&destination("secondary", ip, SECONDARY_PORT, "300ms"));
            c.push_str(
                "\n[[route]]\nname = \"default\"\ndestinations = [\"primary\", \"secondary\"]\n",
            );
            c
        },
        &[
            ("primary", PRIMARY_PORT, Some(primary)),
            ("secondary", SECONDARY_PORT, Some(Behaviour::answer())),
        ],
    )
    .await
}

/// Fast probes: every 100 ms, 80 ms timeout, down after 2 failures, up after 3 successes.
const FAST_PROBES: &str = "probe_interval = \"100ms\"\nprobe_timeout = \"80ms\"\n\
                           failure_threshold = 2\nrecovery_threshold = 3\n";

fn admin(ip: IpAddr) -> String {
    format!("{ip}:{ADMIN_PORT}")
}

async fn destinations(ip: IpAddr) -> Vec<DestinationStatus> {
    let addr = admin(ip);
    tokio::task::spawn_blocking(move || fetch_destinations(&addr, None, WAIT))
        .await
        .expect("join")
        .expect("GET /destinations")
}

async fn state_of(ip: IpAddr, name: &str) -> DestinationStatus {
    destinations(ip)
        .await
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no destination {name}"))
}

/// Waits until `name` is in `state` (admin API), or fails.
async fn wait_state(t: &Cast, name: &str, state: &str) -> DestinationStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = state_of(t.ip, name).await;
        if d.state.as_str() == state {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {state} (is {} because {})\n{}",
            d.state,
            d.reason,
            t.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(ip: IpAddr, path: &str) -> (u16, String) {
    let (addr, path) = (admin(ip), path.to_string());
    let reply = tokio::task::spawn_blocking(move || http_request(&addr, "POST", &path, None, WAIT))
        .await
        .expect("join")
        .expect("POST");
    (reply.status, reply.text())
}

async fn get(ip: IpAddr, path: &str) -> (u16, String) {
    let (addr, path) = (admin(ip), path.to_string());
    let reply = tokio::task::spawn_blocking(move || http_request(&addr, "GET", &path, None, WAIT))
        .await
        .expect("join")
        .expect("GET");
    (reply.status, reply.text())
}

/// Places one call and waits for its final response; returns the code and who answered.
async fn call(t: &Cast, call_id: &str) -> (u16, String) {
    t.carrier
        .invite(&t.carrier.invite_spec(call_id))
        .await
        .expect("INVITE");
    let fin = t
        .journal
        .wait_for("carrier", WAIT, |s| {
            s.call_id == call_id && s.cseq_method == "INVITE" && s.code.is_some_and(|c| c >= 200)
        })
        .await
        .unwrap_or_else(|| panic!("{call_id}: no final response\n{}", t.report()));
    let to = fin.header("To").unwrap_or_default();
    let by = ["primary", "secondary", "third"]
        .into_iter()
        .find(|c| to.contains(&format!("tag={c}-")))
        .unwrap_or("-");
    (fin.summary.code.unwrap_or(0), by.to_string())
}

/// Hangs up an answered call and waits for the 200 to the BYE.
async fn hang_up(t: &Cast, call_id: &str) {
    t.carrier.hang_up(call_id).await.expect("BYE");
    t.journal
        .wait_for("carrier", WAIT, |s| {
            s.call_id == call_id && s.is_response(200, "BYE")
        })
        .await
        .unwrap_or_else(|| panic!("{call_id}: BYE not answered\n{}", t.report()));
}

fn invites_at(t: &Cast, peer: &str, call_id: &str) -> usize {
    t.journal
        .count(peer, |s: &Summary| s.is("INVITE") && s.call_id == call_id)
}

#[tokio::test]
async fn destination_that_stops_answering_probes_goes_down_gets_no_calls_and_comes_back() {
    let t = cast(Behaviour::answer(), FAST_PROBES, "").await;
    wait_state(&t, "primary", "up").await;
    t.clouds[0].set_options_reply(None);
    let down = wait_state(&t, "primary", "down").await;
    assert!(down.reason.contains("2 consecutive"), "{}", down.reason);
    // A down destination is skipped: the call goes straight to the secondary.
    assert_eq!(call(&t, "while-down").await, (200, "secondary".into()));
    assert_eq!(invites_at(&t, "primary", "while-down"), 0, "{}", t.report());
    // It answers probes again: up after the recovery threshold, and takes calls.
    t.clouds[0].set_options_reply(Some(200));
    let up = wait_state(&t, "primary", "up").await;
    assert!(up.reason.contains("3 consecutive"), "{}", up.reason);
    assert_eq!(call(&t, "after-recovery").await, (200, "primary".into()));
}

#[tokio::test]
async fn retry_after_503_skips_the_destination_for_the_time_it_asks() {
    // No probes: only the 503 and its Retry-After decide.
    let t = cast(Behaviour::overloaded(2), "probe = false\n", "").await;
    assert_eq!(call(&t, "overloaded").await, (200, "secondary".into()));
    t.clouds[0].set_behaviour(Behaviour::answer());
    let held = state_of(t.ip, "primary").await;
    assert_eq!(held.state.as_str(), "down", "{}", held.reason);
    assert_eq!(call(&t, "during-hold").await, (200, "secondary".into()));
    assert_eq!(invites_at(&t, "primary", "during-hold"), 0);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        call(&t, "after-hold").await,
        (200, "primary".into()),
        "{}",
        t.report()
    );
}

#[tokio::test]
async fn draining_a_destination_keeps_its_call_in_progress_and_sends_new_calls_elsewhere() {
    let t = cast(Behaviour::answer(), "", "").await;
    assert_eq!(call(&t, "kept").await, (200, "primary".into()));
    let (code, body) = post(t.ip, "/destinations/primary/drain").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"draining\""), "{body}");
    assert_eq!(state_of(t.ip, "primary").await.calls_in_progress, 1);
    // New calls go elsewhere...
    assert_eq!(call(&t, "new").await, (200, "secondary".into()));
    assert_eq!(invites_at(&t, "primary", "new"), 0);
    // ... while the call in progress ends normally, its BYE routed to the primary.
    hang_up(&t, "kept").await;
    assert_eq!(
        t.journal
            .count("primary", |s| s.is("BYE") && s.call_id == "kept"),
        1
    );
    let drained = state_of(t.ip, "primary").await;
    assert_eq!(drained.calls_in_progress, 0, "{drained:?}");
    assert!(t.node.log().contains("drained"), "{}", t.node.log());
    // Enable: it takes calls again.
    assert_eq!(post(t.ip, "/destinations/primary/enable").await.0, 200);
    assert_eq!(call(&t, "enabled").await, (200, "primary".into()));
}

#[tokio::test]
async fn maintenance_stops_probes_and_traffic_until_enabled() {
    let t = cast(Behaviour::answer(), FAST_PROBES, "").await;
    wait_state(&t, "primary", "up").await;
    let (code, body) = post(t.ip, "/destinations/primary/maintenance").await;
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probes = || t.journal.count("primary", |s| s.is("OPTIONS"));
    let before = probes();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(probes(), before, "no probes in maintenance");
    assert_eq!(call(&t, "maint").await, (200, "secondary".into()));
    assert_eq!(invites_at(&t, "primary", "maint"), 0);
    assert_eq!(post(t.ip, "/destinations/primary/enable").await.0, 200);
    wait_state(&t, "primary", "up").await;
    assert!(probes() > before, "probes resume");
    // Unknown destinations and actions are refused precisely.
    assert_eq!(post(t.ip, "/destinations/primry/drain").await.0, 404);
    assert_eq!(post(t.ip, "/destinations/primary/explode").await.0, 400);
}

/// The value of the unlabelled series `name` in `GET /metrics`.
async fn metric(ip: IpAddr, name: &str) -> f64 {
    let (code, text) = get(ip, "/metrics").await;
    assert_eq!(code, 200);
    sample(&text, name)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn node_drain_turns_ready_false_keeps_serving_survives_reload_and_resume_undoes_it() {
    let t = cast(Behaviour::answer(), "", "").await;
    assert_eq!(get(t.ip, "/health").await.0, 200);
    assert_eq!(get(t.ip, "/ready").await.0, 200);
    assert_eq!(metric(t.ip, "pointsman_node_state").await, 0.0);
    let (code, body) = get(t.ip, "/node").await;
    assert_eq!(code, 200, "{body}");
    let node = json(&body);
    assert_eq!(node["state"], "serving", "{body}");
    assert_eq!(node["id"], 7, "{body}");
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "{body}");
    let config = t.node.dir.join("pointsman.toml");
    assert_eq!(node["config_file"], config.display().to_string(), "{body}");

    let (code, body) = post(t.ip, "/node/drain").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "draining", "{body}");
    assert_eq!(json(&body)["draining"], true, "{body}");
    let (code, body) = get(t.ip, "/ready").await;
    assert_eq!(code, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(metric(t.ip, "pointsman_node_state").await, 1.0);
    // Drained, the node still serves the calls that reach it.
    assert_eq!(call(&t, "while-draining").await, (200, "primary".into()));
    assert_eq!(json(&get(t.ip, "/node").await.1)["answered_calls"], 1);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["status", "--admin", &admin(t.ip)])
        .output()
        .expect("run pointsman status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.starts_with("NODE 7  draining  up "), "{text}");
    assert!(
        text.lines().nth(1).is_some_and(|l| l.starts_with("NAME")),
        "{text}"
    );

    // A reload keeps the drain: it is the operator's, not the file's.
    assert_eq!(post(t.ip, "/reload").await.0, 200);
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(t.node.reload(&text).await, "{}", t.node.log());
    assert_eq!(get(t.ip, "/ready").await.0, 503);
    assert_eq!(json(&get(t.ip, "/node").await.1)["state"], "draining");

    let (code, body) = post(t.ip, "/node/resume").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "serving", "{body}");
    assert_eq!(get(t.ip, "/ready").await.0, 200);
    assert_eq!(metric(t.ip, "pointsman_node_state").await, 0.0);
    assert!(t.node.log().contains("node resumed"), "{}", t.node.log());
}

#[tokio::test]
async fn reload_reply_names_the_sections_that_change_only_on_restart() {
    let t = cast(Behaviour::answer(), "", "").await;
    let path = t.node.dir.join("pointsman.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    let (code, body) = post(t.ip, "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["restart_required"], serde_json::json!([]));
    let changed = good
        .replace("t1 = \"100ms\"", "t1 = \"200ms\"")
        .replace("workers = 2", "workers = 1")
        .replace(
            r#"destinations = ["primary", "secondary"]"#,
            r#"destinations = ["secondary"]"#,
        );
    std::fs::write(&path, changed).expect("write");
    let (code, body) = post(t.ip, "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["restart_required"],
        serde_json::json!(["node", "timers"]),
        "{body}"
    );
    // The routing took effect at once all the same.
    assert_eq!(call(&t, "after-reload").await, (200, "secondary".into()));
}

#[tokio::test]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    // The node's stderr is a file (see support): no terminal, so no escapes.
    let t = cast(Behaviour::answer(), "", "").await;
    assert_eq!(call(&t, "logged").await, (200, "primary".into()));
    let log = t.node.log();
    assert!(log.contains("pointsman running"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a log file:\n{log:?}"
    );
}

/// A carrier, pointsman with `[node] shutdown_grace = grace`, and a primary that plays
/// `primary`.
async fn stopping_cast(primary: Behaviour, grace: &str) -> Cast {
    let grace = grace.to_string();
    Cast::start(
        move |ip| {
            let mut c = node_section(ip).replace(
                "workers = 2",
                &format!("workers = 2\nshutdown_grace = \"{grace}\""),
            );
            c.push_str(&destination("primary", ip, PRIMARY_PORT, "2s"));
            c.push_str("probe = false\n");
            c.push_str("\n[[route]]\nname = \"default\"\ndestinations = [\"primary\"]\n");
            c
        },
        &[("primary", PRIMARY_PORT, Some(primary))],
    )
    .await
}

/// Sends the INVITE of `call_id` and waits until the carrier gets `code` for it.
async fn invite_until(t: &Cast, call_id: &str, code: u16) -> pointsman_sim::Entry {
    t.carrier
        .invite(&t.carrier.invite_spec(call_id))
        .await
        .expect("INVITE");
    wait_response(t, call_id, code).await
}

async fn wait_response(t: &Cast, call_id: &str, code: u16) -> pointsman_sim::Entry {
    t.journal
        .wait_for("carrier", WAIT, |s| {
            s.call_id == call_id && s.is_response(code, "INVITE")
        })
        .await
        .unwrap_or_else(|| panic!("{call_id}: no {code}\n{}", t.report()))
}

/// Waits until `/ready` answers `code`.
async fn wait_ready(t: &Cast, code: u16) {
    let deadline = Instant::now() + WAIT;
    while get(t.ip, "/ready").await.0 != code {
        assert!(
            Instant::now() < deadline,
            "/ready never answered {code}\n{}",
            t.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_refuses_new_calls_lets_a_ringing_call_complete_and_exits_0() {
    // It rings long enough for every check below to happen while it is still in setup.
    let mut t = stopping_cast(Behaviour::answer_after(Duration::from_secs(3)), "10s").await;
    invite_until(&t, "ringing", 180).await;
    t.node.signal(libc::SIGTERM);
    wait_ready(&t, 503).await;
    assert!(get(t.ip, "/ready").await.1.contains("stopping"));
    assert_eq!(json(&get(t.ip, "/node").await.1)["calls_in_setup"], 1);
    // A new call is refused at once, with a time to come back.
    let refused = invite_until(&t, "after-sigterm", 503).await;
    assert!(refused.header("Retry-After").is_some(), "{}", t.report());
    assert_eq!(invites_at(&t, "primary", "after-sigterm"), 0);
    // The ringing call is answered and ACKed end to end.
    wait_response(&t, "ringing", 200).await;
    t.journal
        .wait_for("primary", WAIT, |s| s.is("ACK") && s.call_id == "ringing")
        .await
        .unwrap_or_else(|| panic!("no ACK at the primary\n{}", t.report()));
    // No call in setup any more: the process ends, cleanly.
    let status = t.node.wait_exit(WAIT).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", t.report());
    let log = t.node.log();
    log_line(
        &log,
        "stopping: new calls get 503",
        &["signal=\"SIGTERM\"", "grace=10s"],
    );
    log_line(
        &log,
        "stopped: no call in setup",
        &["calls_in_setup=0", "answered_calls=1"],
    );
}

/// The log line that says `message`, which must have every one of `fields`.
#[track_caller]
fn log_line(log: &str, message: &str, fields: &[&str]) {
    let line = log
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in the log:\n{log}"));
    for field in fields {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
}

#[tokio::test]
async fn at_the_end_of_shutdown_grace_the_node_exits_0_and_logs_the_calls_it_left() {
    let mut t = stopping_cast(Behaviour::ring_forever(), "500ms").await;
    invite_until(&t, "never-answered", 180).await;
    t.node.signal(libc::SIGTERM);
    let status = t.node.wait_exit(WAIT).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", t.report());
    log_line(
        &t.node.log(),
        "stopped: node.shutdown_grace is over with calls still in setup",
        &["calls_in_setup=1", "answered_calls=0", "grace=500ms"],
    );
}

#[tokio::test]
async fn a_second_signal_during_the_grace_exits_at_once() {
    let mut t = stopping_cast(Behaviour::ring_forever(), "5min").await;
    invite_until(&t, "ringing", 180).await;
    t.node.signal(libc::SIGINT);
    wait_ready(&t, 503).await;
    assert!(t.node.alive(), "a call is in setup: the node waits");
    t.node.signal(libc::SIGTERM);
    let status = t.node.wait_exit(WAIT).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", t.report());
    let log = t.node.log();
    log_line(&log, "stopping: new calls get 503", &["signal=\"SIGINT\""]);
    log_line(
        &log,
        "stopped at once on a second signal",
        &["signal=\"SIGTERM\"", "calls_in_setup=1", "answered_calls=0"],
    );
}

/// Runs a second `pointsman run` on `config` (written to `dir`) and waits for it to exit: its
/// exit code and stderr, or a panic if it keeps running.
async fn second_node(dir: &std::path::Path, config: &str) -> (Option<i32>, String) {
    let path = dir.join("second.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["run", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the second pointsman");
    let status = support::wait_exit(&mut child, WAIT).await;
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("stderr");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(status.is_some(), "the second node kept running:\n{stderr}");
    (status.and_then(|s| s.code()), stderr)
}

#[tokio::test]
async fn a_second_node_on_the_same_address_refuses_to_start_and_the_first_keeps_serving() {
    let t = Cast::start(
        |ip| {
            let mut c = node_section(ip);
            c.push_str(&format!(
                "\n[[listen]]\ntransport = \"tcp\"\naddress = \"{ip}:{PROXY_PORT}\"\n"
            ));
            c.push_str(&destination("primary", ip, PRIMARY_PORT, "2s"));
            c.push_str("\n[[route]]\nname = \"default\"\ndestinations = [\"primary\"]\n");
            c
        },
        &[("primary", PRIMARY_PORT, Some(Behaviour::answer()))],
    )
    .await;
    let ip = t.ip;
    // Another id and no admin API: only the SIP address is shared.
    let second = |transport: &str| {
        format!(
            "[node]\nid = 8\nworkers = 2\n\n[[listen]]\ntransport = \"{transport}\"\n\
             address = \"{ip}:{PROXY_PORT}\"\n\n[admin]\nenabled = false\n{}\n\
             [[route]]\nname = \"default\"\ndestinations = [\"primary\"]\n",
            destination("primary", ip, PRIMARY_PORT, "2s")
        )
    };
    for transport in ["udp", "tcp"] {
        let (code, stderr) = second_node(&t.node.dir, &second(transport)).await;
        assert_eq!(code, Some(1), "{transport}: {stderr}");
        let name = format!("listen {transport}:{ip}:{PROXY_PORT}");
        assert!(stderr.contains(&name), "{transport}: {stderr}");
        assert!(
            stderr.to_lowercase().contains("address already in use"),
            "{transport}: {stderr}"
        );
    }
    // The first node has every datagram: each call of a series reaches it and is answered.
    for n in 0..8 {
        assert_eq!(
            call(&t, &format!("first-{n}")).await,
            (200, "primary".into())
        );
    }
}

#[tokio::test]
async fn metrics_after_a_scripted_set_of_calls_show_the_exact_counts() {
    // Passive health off: the 503s and the brownout must not take the primary out of routing.
    let t = cast(Behaviour::answer(), "", "\n[health]\npassive = false\n").await;
    for n in 0..6 {
        let id = format!("ok-{n}");
        assert_eq!(call(&t, &id).await, (200, "primary".into()));
        hang_up(&t, &id).await;
    }
    t.clouds[0].set_behaviour(Behaviour::reject(503));
    for n in 0..2 {
        let id = format!("503-{n}");
        assert_eq!(call(&t, &id).await, (200, "secondary".into()));
        hang_up(&t, &id).await;
    }
    t.clouds[0].set_behaviour(Behaviour::brownout(Duration::from_millis(700)));
    assert_eq!(call(&t, "brownout").await, (200, "secondary".into()));
    t.journal
        .wait_for("primary", WAIT, |s| s.is("BYE") && s.call_id == "brownout")
        .await
        .unwrap_or_else(|| panic!("no ghost teardown\n{}", t.report()));
    hang_up(&t, "brownout").await;
    t.clouds[0].set_behaviour(Behaviour::reject(486));
    assert_eq!(call(&t, "busy").await.0, 486);

    let (code, text) = get(t.ip, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        r#"pointsman_calls_total{route="default",outcome="answered"} 9"#,
        r#"pointsman_calls_total{route="default",outcome="busy"} 1"#,
        r#"pointsman_failovers_total{destination="primary",reason="code"} 2"#,
        r#"pointsman_failovers_total{destination="primary",reason="timeout"} 1"#,
        r#"pointsman_branch_attempts_total{destination="primary"} 10"#,
        r#"pointsman_branch_attempts_total{destination="secondary"} 3"#,
        "pointsman_ghost_calls_torn_down_total 1",
        "pointsman_cancels_sent_total 1",
        r#"pointsman_requests_total{method="INVITE"} 10"#,
        "pointsman_calls_in_progress 0",
        r#"pointsman_destination_state{destination="primary"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in /metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn status_command_shows_the_destinations_of_a_running_node() {
    let t = cast(Behaviour::answer(), FAST_PROBES, "").await;
    wait_state(&t, "primary", "up").await;
    assert_eq!(call(&t, "status-1").await, (200, "primary".into()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["status", "--admin", &admin(t.ip)])
        .output()
        .expect("run pointsman status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    // The node's line, then the destination table.
    assert!(table.starts_with("NODE 7  serving  up "), "{table}");
    let header = table.lines().nth(1).unwrap_or_default();
    for column in [
        "NAME",
        "ADDRESS",
        "STATE",
        "SINCE",
        "RTT",
        "CALLS NOW",
        "REASON",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let primary = table
        .lines()
        .find(|l| l.starts_with("primary"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(primary.contains(" up "), "{table}");
    assert!(
        primary.contains(&format!("{}:{PRIMARY_PORT}", t.ip)),
        "{table}"
    );
    println!("{table}");
}

#[tokio::test]
async fn admin_reload_applies_a_valid_file_and_refuses_a_broken_one() {
    let t = cast(Behaviour::answer(), "", "").await;
    let path = t.node.dir.join("pointsman.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    // Route calls to the secondary only.
    let secondary_only = good.replace(
        r#"destinations = ["primary", "secondary"]"#,
        r#"destinations = ["secondary"]"#,
    );
    std::fs::write(&path, &secondary_only).expect("write");
    let (code, body) = post(t.ip, "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(call(&t, "after-reload").await, (200, "secondary".into()));
    std::fs::write(
        &path,
        secondary_only.replace("secondary\"]", "secnodary\"]"),
    )
    .expect("write");
    let (code, body) = post(t.ip, "/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("secnodary"), "{body}");
    assert_eq!(call(&t, "after-refusal").await, (200, "secondary".into()));
}

/// `se.slice` of each thread of `pid` by name, from /proc (kernels with per-task slices show it).
fn thread_slices(pid: u32) -> Vec<(String, Option<u64>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let slice = std::fs::read_to_string(dir.join("sched"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|v| v.trim().parse().ok());
        out.push((name.trim().to_string(), slice));
    }
    out
}

#[tokio::test]
#[cfg_attr(
    not(kernel_shows_task_slice),
    ignore = "this kernel shows no per-task slice (se.slice in /proc/<pid>/sched: Linux 6.12+ with scheduler debug)"
)]
async fn workers_ask_the_kernel_for_the_configured_slice_and_other_threads_do_not() {
    let t = Cast::start(
        |ip| {
            let mut c = node_section(ip)
                .replace("workers = 2\n", "workers = 2\nscheduler_slice = \"2ms\"\n");
            c.push_str(&destination("primary", ip, PRIMARY_PORT, "300ms"));
            c.push_str("\n[[route]]\nname = \"default\"\ndestinations = [\"primary\"]\n");
            c
        },
        &[("primary", PRIMARY_PORT, Some(Behaviour::answer()))],
    )
    .await;
    let threads = thread_slices(t.node.pid());
    let workers: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("pointsman-w"))
        .collect();
    assert_eq!(workers.len(), 2, "{threads:?}");
    for (name, slice) in &workers {
        assert_eq!(
            *slice,
            Some(2_000_000),
            "{name}: {threads:?}\n{}",
            t.report()
        );
    }
    for (name, slice) in threads
        .iter()
        .filter(|(n, _)| !n.starts_with("pointsman-w"))
    {
        assert_ne!(
            *slice,
            Some(2_000_000),
            "{name} should keep the default slice"
        );
    }
}

/// The slice of each worker thread of `pid`, by name.
fn worker_slices(pid: u32) -> Vec<(String, Option<u64>)> {
    thread_slices(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with("pointsman-w"))
        .collect()
}

/// Polls `pid`'s workers until `done` holds for their slices, for up to `within`.
async fn wait_for_slices(
    pid: u32,
    within: Duration,
    done: impl Fn(&[(String, Option<u64>)]) -> bool,
) -> Vec<(String, Option<u64>)> {
    let deadline = Instant::now() + within;
    loop {
        let slices = worker_slices(pid);
        if done(&slices) || Instant::now() > deadline {
            return slices;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(kernel_shows_task_slice),
    ignore = "this kernel shows no per-task slice (se.slice in /proc/<pid>/sched: Linux 6.12+ with scheduler debug)"
)]
async fn by_default_a_worker_has_the_short_slice_while_light_and_the_kernels_while_flooded() {
    let t = cast(Behaviour::answer(), "", "").await;
    let pid = t.node.pid();
    let short = pointsman::sched::AUTO_SLICE.as_nanos() as u64;
    let idle = worker_slices(pid);
    assert_eq!(idle.len(), 2, "{idle:?}");
    assert!(
        idle.iter().all(|(_, s)| *s == Some(short)),
        "idle workers: {idle:?}"
    );
    // The kernel's default: what the node's other threads have.
    let kernels = thread_slices(pid)
        .into_iter()
        .find(|(name, _)| !name.starts_with("pointsman-w"))
        .and_then(|(_, s)| s)
        .expect("a thread other than the workers");
    assert_ne!(kernels, short);
    // One source, so one worker: far above the busy rate, for up to 3 s.
    let proxy = std::net::SocketAddr::new(t.ip, support::PROXY_PORT);
    let sock = std::net::UdpSocket::bind((t.ip, 0)).expect("flooder");
    let me = sock.local_addr().expect("addr");
    let options = format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-slice\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=s\r\nTo: <sip:{proxy}>\r\n\
         Call-ID: slice\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, sock) = (stop.clone(), sock.try_clone().expect("clone"));
        std::thread::spawn(move || {
            let batch: Vec<_> = (0..32).map(|_| (proxy, &options[..])).collect();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            let deadline = Instant::now() + Duration::from_secs(3);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let _ = pointsman::transport::udp::send_batch(fd, &batch);
                // About 32,000 datagrams a second: busy, without starving the machine.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let flooded = wait_for_slices(pid, Duration::from_secs(2), |w| {
        w.iter().any(|(_, s)| *s == Some(kernels))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().expect("flooder");
    assert!(
        flooded.iter().any(|(_, s)| *s == Some(kernels)),
        "no worker gave the short slice back under the flood: {flooded:?} (kernel's {kernels})\n{}",
        t.report()
    );
    // Quiet again: the next datagrams after a window of silence take the short slice back.
    tokio::time::sleep(pointsman::sched::AUTO_WINDOW * 2).await;
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    while sock.recv_from(&mut buf).is_ok() {}
    let calm = wait_for_slices(pid, Duration::from_secs(2), |w| {
        let _ = sock.send_to(b"\r\n\r\n", proxy);
        w.iter().all(|(_, s)| *s == Some(short))
    })
    .await;
    assert!(
        calm.iter().all(|(_, s)| *s == Some(short)),
        "after the flood: {calm:?}\n{}",
        t.report()
    );
    assert_eq!(call(&t, "after-the-flood").await, (200, "primary".into()));
}

/// The value of the unlabelled series `name` in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{text}"))
}

#[tokio::test]
async fn every_relayed_datagram_has_its_time_inside_the_node_in_the_transit_histogram() {
    let t = cast(Behaviour::answer(), "", "").await;
    let (_, before) = get(t.ip, "/metrics").await;
    let count_before = sample(&before, "pointsman_udp_transit_seconds_count");
    for n in 0..4 {
        let id = format!("transit-{n}");
        assert_eq!(call(&t, &id).await, (200, "primary".into()));
        hang_up(&t, &id).await;
    }
    // Each call: the INVITE, 180 and 200 relayed, the ACK, the BYE and its 200 relayed. A
    // worker records a batch's times after it has sent it, so the last one can land just
    // after the carrier saw the BYE's 200: read until all are there, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (text, count) = loop {
        let (code, text) = get(t.ip, "/metrics").await;
        assert_eq!(code, 200);
        let count = sample(&text, "pointsman_udp_transit_seconds_count") - count_before;
        if count >= 4.0 * 6.0 || Instant::now() > deadline {
            break (text, count);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(count >= 4.0 * 6.0, "{count} datagrams timed\n{text}");
    let sum = sample(&text, "pointsman_udp_transit_seconds_sum");
    assert!(sum > 0.0, "transit sum {sum}");
    // On loopback every one is far below the last bucket.
    let total = sample(&text, "pointsman_udp_transit_seconds_count");
    let in_last = sample(&text, r#"pointsman_udp_transit_seconds_bucket{le="0.25"}"#);
    assert_eq!(in_last, total, "{text}");
}

/// The series `series` (name and labels as exported), read until `done` holds on its value or
/// 5 s have passed: the last value read.
async fn wait_sample(ip: IpAddr, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, text) = get(ip, "/metrics").await;
        assert_eq!(code, 200);
        let value = sample(&text, series);
        if done(value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `pointsman log ARGS --admin ADDR`: its exit code, stdout and stderr.
fn log_command(admin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .arg("log")
        .args(args)
        .args(["--admin", admin])
        .env_remove("POINTSMAN_ADMIN_TOKEN")
        .output()
        .expect("run pointsman log");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_log_filter_changes_at_run_time_through_the_admin_api_and_the_log_command() {
    let ip = support::fresh_ip();
    let mut config = node_section(ip);
    config.push_str(&destination("primary", ip, PRIMARY_PORT, "300ms"));
    config
        .push_str("probe = false\n\n[[route]]\nname = \"default\"\ndestinations = [\"primary\"]\n");
    let node = support::Node::start_logging(&config, support::at(ip, PROXY_PORT), "info").await;
    let sock = tokio::net::UdpSocket::bind(support::at(ip, 0))
        .await
        .expect("bind");
    // A datagram that is not SIP: counted as malformed, and logged at debug only.
    let malformed = r#"pointsman_dropped_total{reason="malformed"}"#;
    let mut dropped = 0.0;
    let mut garbage = async || {
        sock.send_to(b"not SIP at all\r\n\r\n", support::at(ip, PROXY_PORT))
            .await
            .expect("send");
        let before = dropped;
        dropped = wait_sample(ip, malformed, |n| n > before).await;
        assert_eq!(dropped, before + 1.0, "{}", node.log());
    };
    const DEBUG_LINE: &str = "malformed message";
    let changed = |log: &str| log.matches("log level changed").count();

    let (code, body) = get(ip, "/log").await;
    assert_eq!(
        (code, json(&body)),
        (200, serde_json::json!({ "filter": "info" }))
    );
    garbage().await;
    assert!(!node.log().contains(DEBUG_LINE), "{}", node.log());

    // To debug through the API: the next one is logged.
    let addr = admin(ip);
    let reply = tokio::task::spawn_blocking(move || {
        pointsman::admin::http_request_with_body(
            &addr,
            "POST",
            "/log",
            None,
            Some(("text/plain", b"debug")),
            WAIT,
        )
    })
    .await
    .expect("join")
    .expect("POST /log");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        json(&reply.text()),
        serde_json::json!({ "filter": "debug", "previous": "info" })
    );
    let log = node.log();
    assert_eq!(changed(&log), 1, "{log}");
    log_line(
        &log,
        "log level changed",
        &["from=info", "to=debug", " INFO "],
    );
    garbage().await;
    let deadline = Instant::now() + WAIT;
    while !node.log().contains(DEBUG_LINE) {
        assert!(Instant::now() < deadline, "no debug line:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log_line(&node.log(), DEBUG_LINE, &[" DEBUG ", "from="]);

    // A bad filter: 400 with what is wrong, and nothing changes.
    let addr = admin(ip);
    let reply = tokio::task::spawn_blocking(move || {
        pointsman::admin::http_request_with_body(
            &addr,
            "POST",
            "/log",
            None,
            Some(("text/plain", b"info,pointsman=loud")),
            WAIT,
        )
    })
    .await
    .expect("join")
    .expect("POST /log");
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = json(&reply.text())["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.starts_with("invalid log filter \"info,pointsman=loud\": \"pointsman=loud\": "),
        "{error}"
    );
    assert_eq!(json(&get(ip, "/log").await.1)["filter"], "debug");
    assert_eq!(changed(&node.log()), 1, "{}", node.log());

    // The command: shows the filter, sets another, refuses a bad one.
    let admin_addr = admin(ip);
    assert_eq!(
        log_command(&admin_addr, &[]),
        (Some(0), "log filter: debug\n".into(), String::new())
    );
    assert_eq!(
        log_command(&admin_addr, &["pointsman=info,warn"]),
        (
            Some(0),
            "log filter: pointsman=info,warn (was debug)\n".into(),
            String::new()
        )
    );
    let (code, out, err) = log_command(&admin_addr, &["pointsman=info,wran"]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("answered 400: invalid log filter"), "{err}");
    let log = node.log();
    assert_eq!(changed(&log), 2, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("log level changed") && l.contains("to=pointsman=info,warn")),
        "{log}"
    );
    // The protocol crate's debug line is off again.
    let debug_lines = node.log().matches(DEBUG_LINE).count();
    garbage().await;
    assert_eq!(
        node.log().matches(DEBUG_LINE).count(),
        debug_lines,
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn metrics_show_the_build_uptime_process_figures_and_each_reload_result() {
    let t = cast(Behaviour::answer(), "", "").await;
    let (code, text) = get(t.ip, "/metrics").await;
    assert_eq!(code, 200);
    let build = format!(
        "pointsman_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), 1.0, "{text}");
    let uptime = sample(&text, "pointsman_uptime_seconds");
    assert!(uptime > 0.0 && uptime < 600.0, "{uptime}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = sample(&text, "process_start_time_seconds");
    assert!(
        start <= now && start > now - 600.0,
        "start {start}, now {now}"
    );
    let rss = sample(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6, "RSS {rss}");
    assert!(sample(&text, "process_virtual_memory_bytes") >= rss);
    assert!(sample(&text, "process_cpu_seconds_total") >= 0.0);
    let fds = sample(&text, "process_open_fds");
    assert!(fds >= 5.0, "{fds} open descriptors");
    assert!(sample(&text, "process_max_fds") >= fds);
    let (ok, refused) = (
        r#"pointsman_reloads_total{result="ok"}"#,
        r#"pointsman_reloads_total{result="refused"}"#,
    );
    assert_eq!(sample(&text, ok), 0.0);
    assert_eq!(sample(&text, refused), 0.0);
    assert_eq!(sample(&text, "pointsman_last_reload_success"), 1.0);
    let loaded = sample(&text, "pointsman_last_reload_timestamp_seconds");
    assert!(loaded >= start && loaded <= now, "{loaded}");
    // The uptime grows between scrapes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(metric(t.ip, "pointsman_uptime_seconds").await >= uptime + 1.0);

    // SIGHUP with a good file, then a broken one.
    let path = t.node.dir.join("pointsman.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    assert!(t.node.reload(&good).await, "{}", t.node.log());
    assert_eq!(wait_sample(t.ip, ok, |n| n >= 1.0).await, 1.0);
    assert_eq!(metric(t.ip, "pointsman_last_reload_success").await, 1.0);
    let reloaded = metric(t.ip, "pointsman_last_reload_timestamp_seconds").await;
    assert!(reloaded > loaded, "{reloaded} after {loaded}");
    let broken = good.replace(
        r#"destinations = ["primary", "secondary"]"#,
        "destinations = [",
    );
    assert!(!t.node.reload(&broken).await, "{}", t.node.log());
    assert_eq!(wait_sample(t.ip, refused, |n| n >= 1.0).await, 1.0);
    let text = get(t.ip, "/metrics").await.1;
    assert_eq!(sample(&text, "pointsman_last_reload_success"), 0.0);
    assert_eq!(sample(&text, ok), 1.0);
    assert!(sample(&text, "pointsman_last_reload_timestamp_seconds") >= reloaded);
    // POST /reload counts too, and a good file sets the result back.
    std::fs::write(&path, &good).expect("write");
    assert_eq!(post(t.ip, "/reload").await.0, 200);
    let text = get(t.ip, "/metrics").await.1;
    assert_eq!(sample(&text, ok), 2.0);
    assert_eq!(sample(&text, refused), 1.0);
    assert_eq!(sample(&text, "pointsman_last_reload_success"), 1.0);
}

/// Port of the third cloud of the DNS test.
const THIRD_PORT: u16 = 5100;

fn srv(priority: u16, port: u16, target: &str) -> Rec {
    Rec::Srv {
        priority,
        weight: 1,
        port,
        target: target.into(),
    }
}

#[tokio::test]
async fn a_destination_given_by_name_follows_its_srv_records_and_a_name_that_does_not_resolve_is_down_not_fatal(
) {
    let dns = DnsServer::start("127.0.0.1".parse().unwrap())
        .await
        .expect("DNS server");
    let dns_addr = dns.addr();
    let zone = &dns;
    let t = Cast::start(
        move |ip| {
            // Two SRV targets, the first rejecting; records that live 1 s.
            zone.set(
                "_sip._udp.cloud.test",
                1,
                vec![
                    srv(10, PRIMARY_PORT, "a.cloud.test"),
                    srv(20, SECONDARY_PORT, "b.cloud.test"),
                ],
            );
            for host in ["a.cloud.test", "b.cloud.test", "c.cloud.test"] {
                zone.set(host, 1, vec![Rec::Ip(ip)]);
            }
            let mut c = node_section(ip);
            c.push_str(&format!(
                "[dns]\nservers = [\"{dns_addr}\"]\ntimeout = \"300ms\"\nmin_ttl = \"200ms\"\n\
                 [[destination]]\nname = \"missing\"\naddress = \"nowhere.test\"\n\
                 [[destination]]\nname = \"cloud\"\naddress = \"cloud.test\"\n\
                 provisional_timeout = \"300ms\"\n{FAST_PROBES}\
                 [[route]]\nname = \"default\"\ndestinations = [\"missing\", \"cloud\"]\n"
            ));
            c
        },
        &[
            ("primary", PRIMARY_PORT, Some(Behaviour::reject(503))),
            ("secondary", SECONDARY_PORT, Some(Behaviour::answer())),
            ("third", THIRD_PORT, Some(Behaviour::answer())),
        ],
    )
    .await;
    // It started although "missing" does not resolve, and says so.
    assert!(t.node.log().contains("does not resolve"), "{}", t.report());
    let missing = state_of(t.ip, "missing").await;
    assert_eq!(missing.state.as_str(), "down", "{missing:?}");
    assert!(
        missing.reason.contains("DNS") && missing.reason.contains("NXDOMAIN"),
        "{missing:?}"
    );
    let a = format!("cloud@{}:{PRIMARY_PORT}", t.ip);
    let b = format!("cloud@{}:{SECONDARY_PORT}", t.ip);
    let c = format!("cloud@{}:{THIRD_PORT}", t.ip);
    wait_state(&t, &a, "up").await;
    wait_state(&t, &b, "up").await;
    let cloud = state_of(t.ip, "cloud").await;
    assert!(
        cloud.state.as_str() == "up" && cloud.reason.contains("2 of 2 targets"),
        "{cloud:?}"
    );
    // The SRV order: the priority-10 target first; its 503 moves the call to the next target.
    assert_eq!(call(&t, "dns-1").await, (200, "secondary".to_string()));
    assert_eq!(invites_at(&t, "primary", "dns-1"), 1, "{}", t.report());
    // The records change: only the third cloud now. No restart, no reload.
    dns.set(
        "_sip._udp.cloud.test",
        1,
        vec![srv(10, THIRD_PORT, "c.cloud.test")],
    );
    let deadline = Instant::now() + WAIT;
    while !destinations(t.ip).await.iter().any(|d| d.name == c) {
        assert!(
            Instant::now() < deadline,
            "{c} never appeared after its SRV record changed\n{}",
            t.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_state(&t, &c, "up").await;
    assert!(
        !destinations(t.ip)
            .await
            .iter()
            .any(|d| d.name == a || d.name == b),
        "the old targets are gone"
    );
    assert_eq!(call(&t, "dns-2").await, (200, "third".to_string()));
    assert_eq!(invites_at(&t, "primary", "dns-2"), 0);
    assert_eq!(invites_at(&t, "secondary", "dns-2"), 0);
    // Draining the name drains its targets, and a target found while it is drained.
    let (code, _) = post(t.ip, "/destinations/cloud/drain").await;
    assert_eq!(code, 200);
    let after = destinations(t.ip).await;
    let state = |name: &str| {
        after
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.state.as_str().to_string())
    };
    assert_eq!(state(&c).as_deref(), Some("draining"), "{after:#?}");
    assert_eq!(state("cloud").as_deref(), Some("draining"), "{after:#?}");
    dns.set(
        "_sip._udp.cloud.test",
        1,
        vec![
            srv(10, THIRD_PORT, "c.cloud.test"),
            srv(20, SECONDARY_PORT, "b.cloud.test"),
        ],
    );
    let deadline = Instant::now() + WAIT;
    let found = loop {
        if let Some(d) = destinations(t.ip).await.into_iter().find(|d| d.name == b) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "{b} never came back\n{}",
            t.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.state.as_str(), "draining", "{found:?}");
    let (code, _) = post(t.ip, "/destinations/cloud/enable").await;
    assert_eq!(code, 200);
    wait_state(&t, &c, "up").await;
    wait_state(&t, &b, "up").await;
    let metrics = support::metric_text(&admin(t.ip)).await;
    assert!(
        metrics.contains("pointsman_dns_targets{destination=\"cloud\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pointsman_dns_lookups_total{destination=\"missing\",result=\"failed\"}"),
        "{metrics}"
    );
    // A name's state is its targets': "missing" has none, so it is down in the metrics too.
    assert!(
        metrics.contains("pointsman_destination_state{destination=\"missing\"} 0"),
        "{metrics}"
    );
    assert!(
        dns.queries("_sip._udp.cloud.test") >= 3,
        "looked up again on its TTL"
    );
}
