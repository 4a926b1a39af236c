//! The admin HTTP API end to end: a real listener on 127.0.0.1 in front of a fake node, driven
//! over real HTTP/1.1 (pointsman's own small client, and raw sockets for what a client should
//! never send), plus the `pointsman status` command against it. Every endpoint, status code,
//! JSON shape and the bearer-token rules; `/metrics` from real pre-registered handles after a
//! scripted set of calls.

use metrics_exporter_prometheus::PrometheusHandle;
use pointsman::admin::{
    http_request, serve, ActionError, DestinationStatus, HttpReply, NodeControl, NodeStatus,
    Reloaded,
};
use pointsman::logging::{LogChange, LogError};
use pointsman_protocol::health::{AdminAction, Cap, State};
use pointsman_protocol::metrics::{FailoverReason, Metrics, NodeState};
use routing_rules::{DestId, RouteId};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A node with two destinations and real metrics.
struct FakeNode {
    dests: Mutex<Vec<DestinationStatus>>,
    draining: AtomicBool,
    reloads: AtomicUsize,
    reload_errors: Mutex<Vec<String>>,
    log: Mutex<String>,
    metrics: Metrics,
    scrape: PrometheusHandle,
}

fn dest(name: &str, address: &str, state: State) -> DestinationStatus {
    DestinationStatus {
        name: name.into(),
        address: address.into(),
        state,
        reason: "5 probes ok".into(),
        since_secs: 192,
        last_probe_rtt_ms: Some(0.8),
        calls_in_progress: 1,
        max_calls: None,
        max_cps: None,
        at_cap: None,
        capped_calls: 0,
        capped_cps: 0,
        calls: 10,
        failures: 3,
        probes_ok: 40,
        probes_failed: 3,
    }
}

impl FakeNode {
    fn new() -> Arc<FakeNode> {
        let (metrics, scrape) = pointsman::exporter::local(&["primary", "secondary"], &["default"]);
        Arc::new(FakeNode {
            dests: Mutex::new(vec![
                // At its max_calls: new calls skip it.
                DestinationStatus {
                    max_calls: Some(1),
                    max_cps: Some(2.5),
                    at_cap: Some(Cap::Calls),
                    capped_calls: 2,
                    ..dest("primary", "10.0.0.1:5060", State::Up)
                },
                DestinationStatus {
                    last_probe_rtt_ms: None,
                    reason: "3 probes failed (timeout)".into(),
                    since_secs: 7,
                    ..dest("secondary", "10.0.0.2:5060", State::Down)
                },
            ]),
            draining: AtomicBool::new(false),
            reloads: AtomicUsize::new(0),
            reload_errors: Mutex::new(Vec::new()),
            log: Mutex::new("info".into()),
            metrics,
            scrape,
        })
    }
}

impl NodeControl for FakeNode {
    fn destinations(&self) -> Vec<DestinationStatus> {
        self.dests.lock().unwrap().clone()
    }
    fn destination_action(
        &self,
        name: &str,
        action: AdminAction,
    ) -> Result<DestinationStatus, ActionError> {
        let mut dests = self.dests.lock().unwrap();
        let d = dests
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| ActionError::UnknownDestination(name.into()))?;
        if action == AdminAction::ForceUp && d.state == State::Maintenance {
            return Err(ActionError::Conflict(format!(
                "{name} is in maintenance: enable it before forcing it up"
            )));
        }
        d.state = match action {
            AdminAction::Drain => State::Draining,
            AdminAction::Maintenance => State::Maintenance,
            AdminAction::Enable => State::Probing,
            AdminAction::ForceUp => State::ForcedUp,
        };
        d.reason = format!("admin: {}", action.as_str());
        d.since_secs = 0;
        Ok(d.clone())
    }
    fn node(&self) -> NodeStatus {
        let draining = self.draining.load(Ordering::SeqCst);
        NodeStatus {
            id: 3,
            version: "0.9.0".into(),
            state: if draining {
                NodeState::Draining
            } else {
                NodeState::Serving
            },
            draining,
            stopping: false,
            uptime_secs: 3700,
            config_file: Some("/etc/pointsman/edge.toml".into()),
            calls_in_setup: 4,
            answered_calls: 12,
            peers: Vec::new(),
        }
    }
    fn drain_node(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    fn resume_node(&self) -> Result<(), ActionError> {
        self.draining.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn reload(&self) -> Result<Reloaded, Vec<String>> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        let errors = self.reload_errors.lock().unwrap().clone();
        if errors.is_empty() {
            Ok(Reloaded {
                summary: "reloaded: 2 destinations, 1 route".into(),
                restart_required: vec!["listen".into()],
            })
        } else {
            Err(errors)
        }
    }
    fn metrics(&self) -> String {
        self.scrape.render()
    }
    fn log_filter(&self) -> Result<String, LogError> {
        Ok(self.log.lock().unwrap().clone())
    }
    fn set_log_filter(&self, filter: &str) -> Result<LogChange, LogError> {
        let (filter, _) = pointsman::logging::parse(filter)?;
        let previous = std::mem::replace(&mut *self.log.lock().unwrap(), filter.clone());
        Ok(LogChange { filter, previous })
    }
}

/// Serves the API for `node` on a fresh 127.0.0.1 port, on a thread of its own.
fn start(node: Arc<FakeNode>, token: Option<&str>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let token = token.map(String::from);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, node, token).await.unwrap();
        });
    });
    addr
}

fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> HttpReply {
    http_request(&addr.to_string(), method, path, token, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn json_of(reply: &HttpReply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.text()))
}

/// Sends raw bytes and returns whatever comes back before the server closes.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The server may close before reading everything: a write error is an answer too.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn health_is_alive_and_ready_turns_503_after_node_drain_and_200_after_resume() {
    let node = FakeNode::new();
    let addr = start(node.clone(), None);
    let r = request(addr, "GET", "/health", None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = request(addr, "GET", "/ready", None);
    assert_eq!((r.status, json_of(&r)), (200, json!({ "ready": true })));
    let r = request(addr, "POST", "/node/drain", None);
    assert_eq!(
        (r.status, json_of(&r)),
        (
            200,
            json!({
                "id": 3, "version": "0.9.0", "state": "draining", "draining": true,
                "stopping": false, "uptime_secs": 3700,
                "config_file": "/etc/pointsman/edge.toml", "calls_in_setup": 4,
                "answered_calls": 12
            })
        )
    );
    let r = request(addr, "GET", "/ready", None);
    assert_eq!(
        (r.status, json_of(&r)),
        (503, json!({ "ready": false, "reason": "draining" }))
    );
    // A drained node is still alive.
    assert_eq!(request(addr, "GET", "/health", None).status, 200);
    let r = request(addr, "GET", "/node", None);
    assert_eq!((r.status, &json_of(&r)["state"]), (200, &json!("draining")));
    let r = request(addr, "POST", "/node/resume", None);
    assert_eq!((r.status, &json_of(&r)["state"]), (200, &json!("serving")));
    let r = request(addr, "GET", "/ready", None);
    assert_eq!((r.status, json_of(&r)), (200, json!({ "ready": true })));
}

#[test]
fn destinations_are_a_json_array_with_every_field() {
    let addr = start(FakeNode::new(), None);
    let r = request(addr, "GET", "/destinations", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r),
        json!([
            {
                "name": "primary", "address": "10.0.0.1:5060", "state": "up",
                "reason": "5 probes ok", "since_secs": 192, "last_probe_rtt_ms": 0.8,
                "calls_in_progress": 1, "max_calls": 1, "max_cps": 2.5, "at_cap": "calls",
                "capped_calls": 2, "capped_cps": 0, "calls": 10, "failures": 3,
                "probes_ok": 40, "probes_failed": 3
            },
            {
                "name": "secondary", "address": "10.0.0.2:5060", "state": "down",
                "reason": "3 probes failed (timeout)", "since_secs": 7,
                "last_probe_rtt_ms": null, "calls_in_progress": 1, "max_calls": null,
                "max_cps": null, "at_cap": null, "capped_calls": 0, "capped_cps": 0,
                "calls": 10, "failures": 3, "probes_ok": 40, "probes_failed": 3
            }
        ])
    );
    let r = request(addr, "GET", "/destinations/secondary", None);
    assert_eq!((r.status, &json_of(&r)["state"]), (200, &json!("down")));
}

#[test]
fn destination_actions_answer_the_new_status_or_404_400_409() {
    let node = FakeNode::new();
    let addr = start(node.clone(), None);
    for (action, state) in [
        ("drain", "draining"),
        ("enable", "probing"),
        ("force-up", "forced-up"),
        ("maintenance", "maintenance"),
    ] {
        let r = request(
            addr,
            "POST",
            &format!("/destinations/primary/{action}"),
            None,
        );
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        let status = json_of(&r);
        assert_eq!(
            (status["name"].clone(), status["state"].clone()),
            (json!("primary"), json!(state))
        );
        assert_eq!(node.destinations()[0].state.as_str(), state);
    }
    let r = request(addr, "POST", "/destinations/primary/force-up", None);
    assert_eq!(r.status, 409);
    assert_eq!(
        json_of(&r)["error"],
        "primary is in maintenance: enable it before forcing it up"
    );
    let r = request(addr, "POST", "/destinations/secondry/drain", None);
    assert_eq!(r.status, 404);
    assert_eq!(
        json_of(&r),
        json!({
            "error": "unknown destination \"secondry\": did you mean \"secondary\"?",
            "did_you_mean": "secondary"
        })
    );
    let r = request(addr, "POST", "/destinations/secondary/reboot", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        json_of(&r)["error"],
        "unknown action \"reboot\": use one of drain, maintenance, enable, force-up"
    );
    assert_eq!(
        node.destinations()[1].state,
        State::Down,
        "refused actions change nothing"
    );
}

#[test]
fn reload_answers_its_summary_or_422_with_the_config_errors() {
    let node = FakeNode::new();
    let addr = start(node.clone(), None);
    let r = request(addr, "POST", "/reload", None);
    assert_eq!(
        (r.status, json_of(&r)),
        (
            200,
            json!({
                "reloaded": true,
                "summary": "reloaded: 2 destinations, 1 route",
                "restart_required": ["listen"]
            })
        )
    );
    *node.reload_errors.lock().unwrap() =
        vec!["p.toml:12: route[0].destinations[1]: unknown destination \"edge-c\"".into()];
    let r = request(addr, "POST", "/reload", None);
    assert_eq!(
        (r.status, json_of(&r)),
        (
            422,
            json!({
                "reloaded": false,
                "errors": ["p.toml:12: route[0].destinations[1]: unknown destination \"edge-c\""]
            })
        )
    );
    assert_eq!(node.reloads.load(Ordering::SeqCst), 2);
    assert_eq!(request(addr, "GET", "/reload", None).status, 405);
    assert_eq!(
        node.reloads.load(Ordering::SeqCst),
        2,
        "a GET never reloads"
    );
}

#[test]
fn metrics_scraped_after_scripted_calls_show_the_exact_counts() {
    let node = FakeNode::new();
    let m = &node.metrics;
    // 10 calls: 3 fail over from the primary (2 timeouts, 1 transport error), one of them
    // leaves a ghost 200 behind; 10 answered.
    for i in 0..10 {
        m.branch_attempt(DestId(0));
        if i < 3 {
            let reason = if i < 2 {
                FailoverReason::Timeout
            } else {
                FailoverReason::Transport
            };
            m.failover(DestId(0), reason);
            m.cancel_sent();
            m.branch_attempt(DestId(1));
        }
        m.call_outcome(Some(RouteId(0)), 200, false);
    }
    m.ghost_torn_down();
    let addr = start(node.clone(), None);
    let r = request(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let lines: std::collections::HashSet<&str> = text.lines().collect();
    for want in [
        r#"pointsman_calls_total{route="default",outcome="answered"} 10"#,
        r#"pointsman_calls_total{route="default",outcome="failed"} 0"#,
        r#"pointsman_branch_attempts_total{destination="primary"} 10"#,
        r#"pointsman_branch_attempts_total{destination="secondary"} 3"#,
        r#"pointsman_failovers_total{destination="primary",reason="timeout"} 2"#,
        r#"pointsman_failovers_total{destination="primary",reason="transport"} 1"#,
        r#"pointsman_failovers_total{destination="primary",reason="code"} 0"#,
        "pointsman_cancels_sent_total 3",
        "pointsman_ghost_calls_torn_down_total 1",
        "# TYPE pointsman_post_dial_delay_seconds histogram",
    ] {
        assert!(lines.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn with_a_token_posts_need_it_and_gets_on_loopback_do_not() {
    let node = FakeNode::new();
    let addr = start(node.clone(), Some(TOKEN));
    assert_eq!(request(addr, "GET", "/destinations", None).status, 200);
    assert_eq!(request(addr, "GET", "/metrics", None).status, 200);
    for (path, token) in [
        ("/node/drain", None),
        ("/node/drain", Some("wrong-token-0123456789")),
        ("/node/resume", None),
        ("/reload", Some(&TOKEN[..TOKEN.len() - 1])),
        ("/destinations/primary/drain", None),
    ] {
        let r = request(addr, "POST", path, token);
        assert_eq!(r.status, 401, "{path} {token:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"pointsman\"")
        );
        assert!(json_of(&r)["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer <admin.token>"));
    }
    assert!(node.node().ready());
    assert_eq!(node.reloads.load(Ordering::SeqCst), 0);
    assert_eq!(node.destinations()[0].state, State::Up);
    let r = request(addr, "POST", "/destinations/primary/drain", Some(TOKEN));
    assert_eq!((r.status, &json_of(&r)["state"]), (200, &json!("draining")));
    assert_eq!(
        request(addr, "POST", "/node/drain", Some(TOKEN)).status,
        200
    );
    assert!(!node.node().ready());
}

#[test]
fn unknown_paths_and_methods_get_404_and_405() {
    let addr = start(FakeNode::new(), None);
    let r = request(addr, "GET", "/nope", None);
    assert_eq!(r.status, 404);
    assert!(json_of(&r)["error"]
        .as_str()
        .unwrap()
        .starts_with("no such endpoint \"/nope\""));
    let r = request(addr, "DELETE", "/destinations", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let r = request(addr, "PUT", "/node/drain", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

#[test]
fn log_filter_is_read_and_set_over_http_and_by_the_log_command() {
    let node = FakeNode::new();
    let addr = start(node.clone(), Some(TOKEN));
    let r = request(addr, "GET", "/log", None);
    assert_eq!((r.status, json_of(&r)), (200, json!({ "filter": "info" })));
    // As `curl -d level=debug` sends it: a form, and POSTs need the token.
    let form = "POST /log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n";
    let r = raw(addr, format!("{form}\r\nlevel=debug").as_bytes());
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    let r = raw(
        addr,
        format!("{form}Authorization: Bearer {TOKEN}\r\n\r\nlevel=debug").as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(
        r.ends_with(r#"{"filter":"debug","previous":"info"}"#),
        "{r}"
    );

    let log = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"));
        command
            .arg("log")
            .args(args)
            .args(["--admin", &addr.to_string()])
            .env_remove("POINTSMAN_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("POINTSMAN_ADMIN_TOKEN", token);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        log(&[], None),
        (Some(0), "log filter: debug\n".into(), "".into())
    );
    let (code, out, err) = log(&["pointsman=trace,warn"], None);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.starts_with(&format!(
            "pointsman log: admin API at {addr} refused the request (401)"
        )),
        "{err}"
    );
    assert_eq!(
        log(&["pointsman=trace,warn"], Some(TOKEN)),
        (
            Some(0),
            "log filter: pointsman=trace,warn (was debug)\n".into(),
            "".into()
        )
    );
    assert_eq!(
        log(&["pointsman=trace,warn", "--token", TOKEN], Some("wrong")),
        (
            Some(0),
            "log filter: pointsman=trace,warn (unchanged)\n".into(),
            "".into()
        )
    );
    let (code, out, err) = log(&["verbose"], Some(TOKEN));
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert_eq!(
        err,
        format!(
            "pointsman log: admin API at {addr} answered 400: invalid log filter \"verbose\": \
             \"verbose\" is not a level (trace, debug, info, warn, error, off); a target's level \
             is written TARGET=LEVEL\n"
        )
    );
    assert_eq!(*node.log.lock().unwrap(), "pointsman=trace,warn");
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_the_api_keeps_serving() {
    let addr = start(FakeNode::new(), None);
    let garbage = raw(addr, b"\x00\x01\x02 not http at all\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage:?}");
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(addr, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        addr,
        format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    // A body is never read: the answer comes anyway, and the connection closes.
    let answer = raw(
        addr,
        b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let answer = raw(addr, b"GET /health?x=%zz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    assert_eq!(request(addr, "GET", "/health", None).status, 200);
}

#[test]
fn many_clients_at_once_are_all_answered() {
    let addr = start(FakeNode::new(), None);
    let clients: Vec<_> = (0..64)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/destinations", None).status))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
}

#[test]
fn status_command_prints_the_node_line_and_the_table_of_a_running_node() {
    let addr = start(FakeNode::new(), Some(TOKEN));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["status", "--admin", &addr.to_string()])
        .env_remove("POINTSMAN_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Not a terminal: no colour.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\
NODE 3  serving  up 1h01m  calls in setup 4  answered 12  pointsman 0.9.0  config /etc/pointsman/edge.toml
NAME       ADDRESS        STATE  SINCE     RTT  CALLS NOW  MAX CPS  AT CAP  CALLS  FAILURES  CAPPED  REASON
primary    10.0.0.1:5060  up     3m12s  0.80ms        1/1      2.5  CALLS      10         3       2  5 probes ok
secondary  10.0.0.2:5060  down      7s       -          1        -  -          10         3       0  3 probes failed (timeout)
"
    );
}

#[test]
fn status_command_exits_1_with_a_clear_message_when_the_node_is_unreachable() {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
        .args(["status", "--admin", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "pointsman status: cannot reach the admin API at {addr}:"
        )),
        "{err}"
    );
    assert!(err.contains("is pointsman running"), "{err}");
}
