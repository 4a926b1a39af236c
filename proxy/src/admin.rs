//! The admin HTTP API: `/health`, `/ready`, `/node` and its drain and resume,
//! `/destinations` and the actions on them, `/calls` (listed, shown, ended), `/reload`, `/log`
//! (the log filter, read and changed), `/metrics`; and the client side that `pointsman status`,
//! `pointsman calls` and `pointsman log` use.
//!
//! It owns the HTTP surface only. What it shows and what its actions do belong to the running
//! node, reached through the [`NodeControl`] trait (the server implements it; tests use a fake).
//! [`spawn`] binds first, so a port in use is an error at start, then serves on a thread of its
//! own with a current-thread tokio runtime, so a slow admin client never touches a SIP worker.
//!
//! Security: bound to loopback by default (`[admin] listen`). With a token, every POST needs
//! `Authorization: Bearer <token>` (compared in constant time) and answers 401 without it; on a
//! non-loopback address every request needs it, and [`serve`] refuses to start without a token
//! there (the config says so first). Requests are bounded: headers at [`MAX_HEADER_BYTES`],
//! bodies are read only for `POST /log` and only up to [`MAX_BODY_BYTES`], one request per
//! connection, [`MAX_CONNECTIONS`] at once, each done within [`REQUEST_TIMEOUT`]. Nothing a
//! client sends can make it panic.
//!
//! It must not: block on the SIP path, hold node state of its own, or log the token.

use crate::logging::{LogChange, LogError};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use pointsman_protocol::health::{AdminAction, Cap, State};
use pointsman_protocol::metrics::NodeState;
pub use pointsman_protocol::{CallFilter, CallStage, CallSummary};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Largest request head (request line and headers) read, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most admin connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Largest request body read (`POST /log`'s filter), in bytes; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A connection must send its request and get its answer within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Content-Type` of `GET /metrics`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin API needs from the running node. Every method is called on the admin thread
/// and must return quickly (no waiting on a SIP worker).
pub trait NodeControl: Send + Sync + 'static {
    /// Every configured destination, in config order.
    fn destinations(&self) -> Vec<DestinationStatus>;
    /// Applies `action` to the destination called `name` and returns its new status.
    fn destination_action(
        &self,
        name: &str,
        action: AdminAction,
    ) -> Result<DestinationStatus, ActionError>;
    /// The node itself: its state, version, uptime and calls.
    fn node(&self) -> NodeStatus;
    /// Takes the whole node out of service: `/ready` turns false, calls keep being served.
    /// Idempotent.
    fn drain_node(&self);
    /// Undoes [`drain_node`](Self::drain_node); idempotent. Refused (conflict) while the
    /// process is stopping: nothing brings that back.
    fn resume_node(&self) -> Result<(), ActionError>;
    /// Reloads the config file (as SIGHUP does): what it did, or every config error.
    fn reload(&self) -> Result<Reloaded, Vec<String>>;
    /// The Prometheus text exposition of every metric.
    fn metrics(&self) -> String;
    /// The process's log filter in force (`GET /log`).
    fn log_filter(&self) -> Result<String, LogError>;
    /// Replaces the process's log filter (`POST /log`): the change, or why it was refused (the
    /// filter in force stays).
    fn set_log_filter(&self, filter: &str) -> Result<LogChange, LogError>;
    /// Whether HEP capture is on; `None` without a `[hep]` section.
    fn hep(&self) -> Option<bool> {
        None
    }
    /// Turns HEP capture on or off; `None` without a `[hep]` section.
    fn set_hep(&self, _on: bool) -> Option<bool> {
        None
    }
    /// This node's calls in setup and answered (`GET /calls`), and those of a pair's peer
    /// that is down, held here as its replicas (with their `owner`).
    fn calls(&self) -> Vec<CallSummary> {
        Vec::new()
    }
    /// Ends the call `call_id` (`POST /calls/ID/end`): CANCEL and 480 in setup, BYE both ways
    /// answered. What was ended; empty when there is no such call (or it ended meanwhile).
    /// The core decides at once; what it sends goes out through a worker.
    fn end_call(&self, _call_id: &str) -> Result<Vec<CallSummary>, ActionError> {
        Ok(Vec::new())
    }
}

/// One destination as `GET /destinations` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    /// `host:port` as configured.
    pub address: String,
    /// `up`, `down`, `probing`, `draining`, `maintenance` or `forced-up`.
    pub state: State,
    /// Why it is in this state, e.g. `3 probes failed (timeout)` or `admin: maintenance`.
    pub reason: String,
    /// Seconds in this state.
    pub since_secs: u64,
    /// Round-trip time of the last successful probe, in milliseconds.
    pub last_probe_rtt_ms: Option<f64>,
    /// Calls in progress: INVITE branches sent to it that have not ended, answered calls
    /// until their BYE (what `max_calls` caps).
    pub calls_in_progress: u64,
    /// `max_calls`: at most this many calls in progress (`null`: no cap).
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// `max_cps`: at most this many new calls a second (`null`: no cap).
    #[serde(default)]
    pub max_cps: Option<f64>,
    /// The cap it is at now, `"calls"` or `"cps"`: new calls skip it (to the next member or
    /// tier) until it is under again; `null`: under its caps. Not a state: its health is
    /// `state`.
    #[serde(default)]
    pub at_cap: Option<Cap>,
    /// New calls that skipped it at its `max_calls`, and at its `max_cps`.
    #[serde(default)]
    pub capped_calls: u64,
    #[serde(default)]
    pub capped_cps: u64,
    /// Calls sent to it since start (branches).
    pub calls: u64,
    /// Branches that failed (timeout, transport error, retryable code).
    pub failures: u64,
    pub probes_ok: u64,
    pub probes_failed: u64,
}

/// The node as `GET /node` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `[node] id`.
    pub id: u16,
    /// pointsman's version.
    pub version: String,
    /// `serving`, `draining` (after `POST /node/drain`) or `stopping` (after SIGTERM).
    pub state: NodeState,
    pub draining: bool,
    pub stopping: bool,
    pub uptime_secs: u64,
    /// The config file it runs on and reloads.
    pub config_file: Option<String>,
    /// Calls whose caller has no final answer yet.
    pub calls_in_setup: u64,
    /// Answered calls whose BYE has not passed yet.
    pub answered_calls: u64,
    /// The other nodes of the pair (`[cluster] peers`) and whether the node link to each is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerStatus>,
}

/// One peer of the node link, as `GET /node` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its `[node] id`.
    pub id: u16,
    /// Its link address.
    pub address: String,
    pub up: bool,
    /// Call states meant for it were dropped (its link was down or its queue full) since it last
    /// got this node's snapshot: its replicas of this node's calls are not all current.
    #[serde(default)]
    pub unsynced: bool,
    /// The peer's address the link runs over now, when up: its `address`, or its `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl NodeStatus {
    /// What `/ready` says: only a serving node is ready.
    pub fn ready(&self) -> bool {
        self.state == NodeState::Serving
    }
}

/// What a reload that succeeded did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// e.g. `3 destinations, 2 routes`.
    pub summary: String,
    /// Sections that changed in the file but take effect only on restart (`listen`, `node`,
    /// `timers`, `limits`, `tcp`, `health`, `guard`, `tls.handshake_timeout`, `admin`).
    pub restart_required: Vec<String>,
}

/// Why a destination action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No destination has this name (404; the API adds a did-you-mean).
    #[error("unknown destination {0:?}")]
    UnknownDestination(String),
    /// The action cannot apply in the destination's current state (409); the text says why
    /// and what to do.
    #[error("{0}")]
    Conflict(String),
}

/// A small response, built by [`Api::respond`] without I/O.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    /// Extra header (`Allow` for 405, `WWW-Authenticate` for 401).
    header: Option<(hyper::header::HeaderName, &'static str)>,
}

impl Reply {
    fn json(status: StatusCode, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
            header: None,
        }
    }
    fn error(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            serde_json::json!({ "error": message.into() }).to_string(),
        )
    }
    fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
            header: None,
        }
    }
    fn with(mut self, name: hyper::header::HeaderName, value: &'static str) -> Reply {
        self.header = Some((name, value));
        self
    }
}

/// A request's body, as far as the API reads one (`POST /log` only).
#[derive(Clone, Copy, Debug)]
enum Body<'a> {
    /// Not read, or none sent.
    Empty,
    /// Its bytes and its `Content-Type`.
    Read {
        content_type: Option<&'a [u8]>,
        bytes: &'a [u8],
    },
    /// Longer than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The connection failed while it was read.
    Unreadable,
}

/// The routing and auth policy, independent of the transport.
struct Api {
    control: Arc<dyn NodeControl>,
    token: Option<String>,
    /// GETs need no token (the API is bound to loopback).
    open_reads: bool,
}

/// The path without its query or fragment and without a trailing `/`, and its segments.
fn route(path: &str) -> (&str, Vec<&str>) {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    (path, path.split('/').skip(1).collect())
}

/// Whether the API reads the body of this request: only `POST /log` has one.
fn reads_body(method: &Method, path: &str) -> bool {
    *method == Method::POST && route(path).1 == ["log"]
}

impl Api {
    /// [`respond_to`](Self::respond_to) a request without a body.
    #[cfg(test)]
    fn respond(&self, method: &Method, path: &str, authorization: Option<&[u8]>) -> Reply {
        self.respond_to(method, path, authorization, Body::Empty)
    }

    fn respond_to(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
        body: Body<'_>,
    ) -> Reply {
        let needs_token = match &self.token {
            Some(_) if *method == Method::GET || *method == Method::HEAD => !self.open_reads,
            Some(_) => true,
            None => false,
        };
        if needs_token && !self.authorized(authorization) {
            return Reply::error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send the header \
                 \"Authorization: Bearer <admin.token>\"",
            )
            .with(WWW_AUTHENTICATE, "Bearer realm=\"pointsman\"");
        }
        let path_and_query = path;
        let (path, segments) = route(path);
        let get = *method == Method::GET;
        let post = *method == Method::POST;
        match segments.as_slice() {
            ["health"] if get => Reply::text(StatusCode::OK, "text/plain", "ok\n".into()),
            ["ready"] if get => self.ready(),
            ["metrics"] if get => Reply::text(
                StatusCode::OK,
                PROMETHEUS_CONTENT_TYPE,
                self.control.metrics(),
            ),
            ["destinations"] if get => self.destinations(),
            ["destinations", name] if get => self.destination(name),
            ["destinations", name, action] if post => self.action(name, action),
            ["node"] if get => to_json(StatusCode::OK, &self.control.node()),
            ["node", "drain"] if post => {
                self.control.drain_node();
                to_json(StatusCode::OK, &self.control.node())
            }
            ["node", "resume"] if post => match self.control.resume_node() {
                Ok(()) => to_json(StatusCode::OK, &self.control.node()),
                Err(e) => Reply::error(StatusCode::CONFLICT, e.to_string()),
            },
            ["calls"] if get => self.calls(raw_query(path_and_query)),
            ["calls", id] if get => self.call(id),
            ["calls", id, "end"] if post => self.end_call(id),
            ["hep"] if get => self.hep_reply(self.control.hep()),
            ["hep", switch @ ("on" | "off")] if post => {
                let on = *switch == "on";
                let reply = self.control.set_hep(on).map(|_| on);
                self.hep_reply(reply)
            }
            ["reload"] if post => match self.control.reload() {
                Ok(done) => Reply::json(
                    StatusCode::OK,
                    serde_json::json!({
                        "reloaded": true,
                        "summary": done.summary,
                        "restart_required": done.restart_required,
                    })
                    .to_string(),
                ),
                Err(errors) => Reply::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "reloaded": false, "errors": errors }).to_string(),
                ),
            },
            ["log"] if get => match self.control.log_filter() {
                Ok(filter) => Reply::json(
                    StatusCode::OK,
                    serde_json::json!({ "filter": filter }).to_string(),
                ),
                Err(e) => log_error(e),
            },
            ["log"] if post => self.set_log_filter(body),
            ["log"] => Self::not_allowed("GET, POST"),
            ["health"]
            | ["ready"]
            | ["metrics"]
            | ["node"]
            | ["destinations"]
            | ["destinations", _]
            | ["calls"]
            | ["calls", _]
            | ["hep"] => Self::not_allowed("GET"),
            ["destinations", _, _]
            | ["calls", _, "end"]
            | ["node", "drain" | "resume"]
            | ["reload"]
            | ["hep", "on" | "off"] => Self::not_allowed("POST"),
            _ => Reply::error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint {path:?}: use GET /health, /ready, /node, /destinations, \
                     /calls, /calls/CALL-ID, /log, /metrics, /hep, or POST \
                     /destinations/NAME/ACTION, /calls/CALL-ID/end, /node/drain, /node/resume, \
                     /reload, /log, /hep/on, /hep/off"
                ),
            ),
        }
    }

    /// `GET /calls?route=&destination=&number=&min_age=`: the node's calls, oldest first,
    /// those the filters given match.
    fn calls(&self, query: &str) -> Reply {
        let filter = match call_filter(query) {
            Ok(filter) => filter,
            Err(why) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        let calls: Vec<CallSummary> = self
            .control
            .calls()
            .into_iter()
            .filter(|c| filter.matches(c))
            .collect();
        to_json(StatusCode::OK, &calls)
    }

    /// `GET /calls/CALL-ID`: one call (the first, for a Call-ID forked into two dialogs).
    fn call(&self, id: &str) -> Reply {
        let id = match decode_segment(id) {
            Ok(id) => id,
            Err(why) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        match self.control.calls().into_iter().find(|c| c.call_id == id) {
            Some(call) => to_json(StatusCode::OK, &call),
            None => unknown_call(&id),
        }
    }

    /// `POST /calls/CALL-ID/end`: `{"ended": [the calls as they were]}`, or 404.
    fn end_call(&self, id: &str) -> Reply {
        let id = match decode_segment(id) {
            Ok(id) => id,
            Err(why) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        match self.control.end_call(&id) {
            Ok(ended) if ended.is_empty() => unknown_call(&id),
            Ok(ended) => to_json(StatusCode::OK, &serde_json::json!({ "ended": ended })),
            Err(ActionError::Conflict(why)) => Reply::error(StatusCode::CONFLICT, why),
            Err(ActionError::UnknownDestination(_)) => unknown_call(&id),
        }
    }

    /// `{"enabled": bool}`, or 404 when the node has no `[hep]` section.
    fn hep_reply(&self, enabled: Option<bool>) -> Reply {
        match enabled {
            Some(on) => Reply::json(
                StatusCode::OK,
                serde_json::json!({ "enabled": on }).to_string(),
            ),
            None => Reply::error(
                StatusCode::NOT_FOUND,
                "HEP capture is not configured: add a [hep] section with the collector's \
                 address and restart"
                    .to_string(),
            ),
        }
    }

    /// `POST /log`: the body names the new filter (see [`log_filter_of`]).
    fn set_log_filter(&self, body: Body<'_>) -> Reply {
        let (content_type, bytes) = match body {
            Body::Read {
                content_type,
                bytes,
            } => (content_type, bytes),
            Body::Empty => (None, &[][..]),
            Body::TooLarge => {
                return Reply::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is longer than {MAX_BODY_BYTES} bytes: send a log filter"),
                )
            }
            Body::Unreadable => {
                return Reply::error(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        };
        let filter = match log_filter_of(content_type, bytes) {
            Ok(filter) => filter,
            Err(why) => return Reply::error(StatusCode::BAD_REQUEST, why),
        };
        match self.control.set_log_filter(&filter) {
            Ok(change) => to_json(StatusCode::OK, &change),
            Err(e) => log_error(e),
        }
    }

    fn not_allowed(allow: &'static str) -> Reply {
        Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this endpoint takes {allow} only"),
        )
        .with(ALLOW, allow)
    }

    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let (Some(token), Some(value)) = (&self.token, authorization) else {
            return false;
        };
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ")
            && constant_time_eq(value[7..].trim_ascii(), token.as_bytes())
    }

    fn ready(&self) -> Reply {
        let node = self.control.node();
        if node.ready() {
            Reply::json(StatusCode::OK, r#"{"ready":true}"#.into())
        } else {
            Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "ready": false, "reason": node.state }).to_string(),
            )
        }
    }

    fn destinations(&self) -> Reply {
        to_json(StatusCode::OK, &self.control.destinations())
    }

    fn destination(&self, name: &str) -> Reply {
        match self
            .control
            .destinations()
            .into_iter()
            .find(|d| d.name == name)
        {
            Some(d) => to_json(StatusCode::OK, &d),
            None => self.unknown_destination(name),
        }
    }

    fn action(&self, name: &str, action: &str) -> Reply {
        let Some(action) = action.parse::<AdminAction>().ok() else {
            let known: Vec<&str> = AdminAction::ALL.map(|a| a.as_str()).to_vec();
            let hint = routing_rules::check::closest(action, known.iter().copied())
                .map(|near| format!(" (did you mean {near:?}?)"))
                .unwrap_or_default();
            return Reply::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown action {action:?}{hint}: use one of {}",
                    known.join(", ")
                ),
            );
        };
        match self.control.destination_action(name, action) {
            Ok(status) => to_json(StatusCode::OK, &status),
            Err(ActionError::UnknownDestination(name)) => self.unknown_destination(&name),
            Err(ActionError::Conflict(why)) => Reply::error(StatusCode::CONFLICT, why),
        }
    }

    fn unknown_destination(&self, name: &str) -> Reply {
        let known: Vec<String> = self
            .control
            .destinations()
            .into_iter()
            .map(|d| d.name)
            .collect();
        let near = routing_rules::check::closest(name, known.iter().map(String::as_str));
        let message = match near {
            Some(near) => format!("unknown destination {name:?}: did you mean {near:?}?"),
            None => format!(
                "unknown destination {name:?}: GET /destinations lists them ({})",
                known.join(", ")
            ),
        };
        Reply::json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": message, "did_you_mean": near }).to_string(),
        )
    }
}

/// A log filter refused (400: the filter in force stays) or not changeable here (409).
fn log_error(e: LogError) -> Reply {
    let status = match e {
        LogError::Invalid(_) => StatusCode::BAD_REQUEST,
        LogError::Unavailable => StatusCode::CONFLICT,
    };
    Reply::error(status, e.to_string())
}

/// The log filter a `POST /log` body names. The body is the filter itself (`debug`,
/// `pointsman_protocol=debug,info`), or a form field `level=` or `filter=` holding it; with the
/// `Content-Type` of a form (`curl -d`, `--data-urlencode`) the field is percent-decoded, and a
/// form without such a field is the filter as a whole.
fn log_filter_of(content_type: Option<&[u8]>, bytes: &[u8]) -> Result<String, String> {
    const FIELDS: [&str; 2] = ["level", "filter"];
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "the body is not UTF-8: send a log filter such as debug".to_string())?
        .trim();
    let form = content_type.is_some_and(|t| {
        t.get(..33)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"application/x-www-form-urlencoded"))
    });
    if !form {
        let field = FIELDS
            .iter()
            .find_map(|f| text.strip_prefix(f)?.strip_prefix('='));
        return Ok(field.unwrap_or(text).to_string());
    }
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if FIELDS.contains(&percent_decode(name)?.as_str()) {
            return percent_decode(value);
        }
    }
    percent_decode(text)
}

/// 404 for a Call-ID this node has no call of.
fn unknown_call(id: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        format!(
            "no call {:?} on this node (it ended, or another node has it): GET /calls lists them",
            printable(id)
        ),
    )
}

/// The query of a request target (after `?`, before `#`); empty without one.
fn raw_query(path: &str) -> &str {
    let path = path.split('#').next().unwrap_or_default();
    path.split_once('?').map_or("", |(_, q)| q)
}

/// A path segment, `%XX` decoded (a Call-ID may hold `/`, `?` or `@`); `+` stays a `+`.
fn decode_segment(segment: &str) -> Result<String, String> {
    percent_decode(&segment.replace('+', "%2B"))
}

/// The filters of `GET /calls`: `route`, `destination`, `number` and `min_age` (seconds);
/// another key, or a `min_age` that is not a number, is an error.
fn call_filter(query: &str) -> Result<CallFilter, String> {
    let mut filter = CallFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_segment(value)?;
        if value.is_empty() {
            continue;
        }
        match key {
            "route" => filter.route = Some(value),
            "destination" => filter.destination = Some(value),
            "number" => filter.number = Some(value),
            "min_age" => {
                filter.min_age_secs =
                    Some(value.parse().map_err(|_| {
                        format!("min_age must be a number of seconds, not {value:?}")
                    })?)
            }
            other => {
                return Err(format!(
                    "unknown filter {other:?}: use route, destination, number, min_age"
                ))
            }
        }
    }
    Ok(filter)
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte.
fn percent_decode(text: &str) -> Result<String, String> {
    let bad = || format!("bad percent-encoding in the body: {text:?}");
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn to_json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_string(value) {
        Ok(body) => Reply::json(status, body),
        Err(e) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        ),
    }
}

/// Equal contents, in a time that depends on `given`'s length only.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &b) in given.iter().enumerate() {
        let e = if expected.is_empty() {
            0
        } else {
            expected[i % expected.len()]
        };
        diff |= b ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// Whether the API bound to `addr` keeps GETs open (a loopback address).
fn loopback(addr: SocketAddr) -> bool {
    crate::config::is_loopback(addr.ip())
}

/// Serves the admin API on `listener` until the process ends. `token`: see the module docs.
/// Fails at once (`InvalidInput`) when the listener is not on loopback and there is no token;
/// accept errors (e.g. out of file descriptors) are logged and retried.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn NodeControl>,
    token: Option<String>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let open_reads = loopback(local);
    if !open_reads && token.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the admin API on {local} is not on loopback and has no token: set admin.token"
            ),
        ));
    }
    let api = Arc::new(Api {
        control,
        token,
        open_reads,
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(()); // never closed
        };
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move {
                    let (head, body) = req.into_parts();
                    let read = if reads_body(&head.method, head.uri.path()) {
                        Some(read_body(body).await)
                    } else {
                        None
                    };
                    let body = match &read {
                        None => Body::Empty,
                        Some(Ok(bytes)) => Body::Read {
                            content_type: head.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
                            bytes,
                        },
                        Some(Err(body)) => *body,
                    };
                    // With its query: `GET /calls` takes its filters there.
                    let target = head
                        .uri
                        .path_and_query()
                        .map_or_else(|| head.uri.path(), |pq| pq.as_str());
                    let reply = api.respond_to(
                        &head.method,
                        target,
                        head.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes),
                        body,
                    );
                    Ok::<_, Infallible>(into_response(reply))
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.keep_alive(false)
                .max_buf_size(MAX_HEADER_BYTES)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "admin: connection error"),
                Err(_) => tracing::debug!("admin: connection timed out"),
            }
            drop(permit);
        });
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`]: its bytes, or why not ([`Body::TooLarge`],
/// [`Body::Unreadable`]).
async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, Body<'static>> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Body::TooLarge),
        Err(_) => Err(Body::Unreadable),
    }
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if let Some((name, value)) = reply.header {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Binds `addr` (so a port in use is an error now), then serves the admin API on a thread of its
/// own ("admin") with a current-thread tokio runtime, until the process ends.
pub fn spawn(
    addr: SocketAddr,
    control: Arc<dyn NodeControl>,
    token: Option<String>,
) -> io::Result<std::thread::JoinHandle<()>> {
    if !loopback(addr) && token.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the admin API on {addr} is not on loopback and has no token: set admin.token"),
        ));
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the admin API to {addr}: {e} (set [admin] listen)"),
        )
    })?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, control, token).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin API stopped");
                }
            })
        })
}

// ---------------------------------------------------------------------------------------------
// Client side: `pointsman status` and `pointsman log`.

/// A failed admin request from the command line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {addr}: {source} (is pointsman running, and is [admin] listen this address?)")]
    Unreachable { addr: String, source: io::Error },
    #[error("admin API at {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("admin API at {addr} answered something that is not HTTP: {what}")]
    BadResponse { addr: String, what: String },
    #[error("admin API at {addr} refused the request (401): pass --token or set POINTSMAN_ADMIN_TOKEN to its [admin] token")]
    Unauthorized { addr: String },
    #[error(
        "the token has a space, a control or a non-ASCII character: pass the [admin] token exactly"
    )]
    BadToken,
    #[error("admin API at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
}

/// One HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Largest answer [`http_request`] reads.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// A blocking HTTP/1.1 request with `Connection: close`: `addr` is `host:port` (an `http://`
/// prefix and trailing `/` are ignored); `token` is sent as a bearer token. Any status is `Ok`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<HttpReply, ClientError> {
    http_request_with_body(addr, method, path, token, None, timeout)
}

/// [`http_request`] with a body: `(content type, bytes)`.
pub fn http_request_with_body(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<HttpReply, ClientError> {
    let host = addr
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let unreachable = |source| ClientError::Unreachable {
        addr: host.to_string(),
        source,
    };
    let io_err = |source| ClientError::Io {
        addr: host.to_string(),
        source,
    };
    if token.is_some_and(|t| t.bytes().any(|b| !b.is_ascii_graphic())) {
        return Err(ClientError::BadToken);
    }
    let targets: Vec<SocketAddr> = host.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    let mut stream = None;
    for target in targets {
        match TcpStream::connect_timeout(&target, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let (content_type, bytes) = body.unwrap_or(("", &[]));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\
         Content-Length: {}\r\n",
        bytes.len()
    );
    if body.is_some() {
        let content_type: String = content_type.chars().filter(|c| !c.is_control()).collect();
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    if let Some(t) = token {
        let _ = write!(head, "Authorization: Bearer {t}\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(bytes);
    stream.write_all(&request).map_err(io_err)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_REPLY_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io_err)?;
    let bad = |what: &str| ClientError::BadResponse {
        addr: host.to_string(),
        what: what.to_string(),
    };
    if raw.len() > MAX_REPLY_BYTES {
        return Err(bad("the answer is larger than 16 MiB"));
    }
    parse_reply(&raw).map_err(bad)
}

/// Parses a whole HTTP/1.1 answer read until the connection closed.
fn parse_reply(raw: &[u8]) -> Result<HttpReply, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err("no HTTP/1.x status line");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..=999).contains(s))
        .ok_or("bad status code")?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a header line has no colon")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut body = raw[end + 4..].to_vec();
    let reply = |body| HttpReply {
        status,
        headers: headers.clone(),
        body,
    };
    let chunked = reply(Vec::new())
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    } else if let Some(len) = reply(Vec::new()).header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if body.len() < len {
            return Err("the body is shorter than its Content-Length");
        }
        body.truncate(len);
    }
    Ok(reply(body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `GET /destinations` from a running node.
pub fn fetch_destinations(
    addr: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Vec<DestinationStatus>, ClientError> {
    fetch_json(
        addr,
        "/destinations",
        "the destination list",
        token,
        timeout,
    )
}

/// `GET /node` from a running node.
pub fn fetch_node(
    addr: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<NodeStatus, ClientError> {
    fetch_json(addr, "/node", "the node status", token, timeout)
}

/// `GET /calls` from a running node, with `filter` as its query.
pub fn fetch_calls(
    addr: &str,
    filter: &CallFilter,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Vec<CallSummary>, ClientError> {
    let mut query = Vec::new();
    for (key, value) in [
        ("route", filter.route.clone()),
        ("destination", filter.destination.clone()),
        ("number", filter.number.clone()),
        ("min_age", filter.min_age_secs.map(|s| s.to_string())),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode_segment(&value)));
        }
    }
    let path = if query.is_empty() {
        "/calls".to_string()
    } else {
        format!("/calls?{}", query.join("&"))
    };
    fetch_json(addr, &path, "the call list", token, timeout)
}

/// `POST /calls/CALL-ID/end` to a running node: the calls it ended.
pub fn end_call(
    addr: &str,
    call_id: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Vec<CallSummary>, ClientError> {
    #[derive(Deserialize)]
    struct Ended {
        ended: Vec<CallSummary>,
    }
    let path = format!("/calls/{}/end", encode_segment(call_id));
    let reply = http_request(addr, "POST", &path, token, timeout)?;
    json_reply::<Ended>(addr, reply, "the ended call").map(|e| e.ended)
}

/// `text` as one path segment or query value: every byte but letters, digits and `-._~@:`
/// as `%XX`.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET /log` from a running node: its log filter.
pub fn fetch_log_filter(
    addr: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<String, ClientError> {
    #[derive(Deserialize)]
    struct Filter {
        filter: String,
    }
    let reply = http_request(addr, "GET", "/log", token, timeout)?;
    json_reply::<Filter>(addr, reply, "the log filter").map(|f| f.filter)
}

/// `POST /log` to a running node: sets its log filter to `filter` (a level or directives).
pub fn set_log_filter(
    addr: &str,
    token: Option<&str>,
    filter: &str,
    timeout: Duration,
) -> Result<LogChange, ClientError> {
    let body = ("text/plain; charset=utf-8", filter.as_bytes());
    let reply = http_request_with_body(addr, "POST", "/log", token, Some(body), timeout)?;
    json_reply(addr, reply, "the log filter change")
}

/// `GET /hep`, or `POST /hep/on` / `/hep/off` with `switch`, to a running node: whether HEP
/// capture is on now.
pub fn hep_capture(
    addr: &str,
    token: Option<&str>,
    switch: Option<bool>,
    timeout: Duration,
) -> Result<bool, ClientError> {
    #[derive(Deserialize)]
    struct Capture {
        enabled: bool,
    }
    let (method, path) = match switch {
        None => ("GET", "/hep"),
        Some(true) => ("POST", "/hep/on"),
        Some(false) => ("POST", "/hep/off"),
    };
    let reply = http_request(addr, method, path, token, timeout)?;
    json_reply::<Capture>(addr, reply, "the HEP capture switch").map(|c| c.enabled)
}

/// `GET path`, its 200 body decoded as `T` (`what` names it in errors).
fn fetch_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    what: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<T, ClientError> {
    let reply = http_request(addr, "GET", path, token, timeout)?;
    json_reply(addr, reply, what)
}

/// A 200 reply's body decoded as `T` (`what` names it in errors), or the error it stands for:
/// for another status, the API's `error` message when it sent one, else the body's start.
fn json_reply<T: serde::de::DeserializeOwned>(
    addr: &str,
    reply: HttpReply,
    what: &str,
) -> Result<T, ClientError> {
    let host = addr.to_string();
    match reply.status {
        200 => serde_json::from_slice(&reply.body).map_err(|e| ClientError::BadResponse {
            addr: host,
            what: format!("{what} is not the JSON expected: {e}"),
        }),
        401 => Err(ClientError::Unauthorized { addr: host }),
        status => {
            let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(String::from))
                .unwrap_or_else(|| reply.text());
            Err(ClientError::Status {
                addr: host,
                status,
                body: message.trim().chars().take(500).collect(),
            })
        }
    }
}

/// The node line `pointsman status` prints above the destination table; `colour`: colour the
/// state word (for a terminal).
pub fn render_node(node: &NodeStatus, colour: bool) -> String {
    let state = node.state.as_str().to_string();
    let state = match (colour, state_colour(&state)) {
        (true, Some(code)) => format!("\x1b[{code}m{state}\x1b[0m"),
        _ => state,
    };
    let config = node
        .config_file
        .as_deref()
        .map(|f| format!("  config {}", printable(f)))
        .unwrap_or_default();
    let peers: Vec<String> = node
        .peers
        .iter()
        .map(|p| {
            let link = if p.up { "up" } else { "DOWN" };
            let sync = if p.unsynced { " UNSYNCED" } else { "" };
            // On its backup path: the first one is cut, and one more cut loses the peer.
            let backup = match &p.via {
                Some(via) if *via != p.address => " ON BACKUP PATH",
                _ => "",
            };
            format!("{} {link}{backup}{sync}", p.id)
        })
        .collect();
    let peers = if peers.is_empty() {
        String::new()
    } else {
        format!("  peers {}", peers.join(", "))
    };
    format!(
        "NODE {id}  {state}  up {up}  calls in setup {setup}  answered {answered}{peers}  pointsman {version}{config}\n",
        id = node.id,
        up = human_secs(node.uptime_secs),
        setup = node.calls_in_setup,
        answered = node.answered_calls,
        version = printable(&node.version),
    )
}

/// The `pointsman status` table: one line per destination, columns aligned; `colour`: colour
/// the state words with ANSI escapes (for a terminal). Text from the node is stripped of
/// control characters.
///
/// `CALLS NOW` shows `n/max_calls` when the destination has a `max_calls`, `MAX CPS` its
/// `max_cps` (`-`: none), `AT CAP` whether it is at a cap now (`CALLS`, `CPS`; `no`; `-`
/// without caps), `CAPPED` the new calls that skipped it at a cap.
pub fn render_status(destinations: &[DestinationStatus], colour: bool) -> String {
    const HEADER: [&str; 12] = [
        "NAME",
        "ADDRESS",
        "STATE",
        "SINCE",
        "RTT",
        "CALLS NOW",
        "MAX CPS",
        "AT CAP",
        "CALLS",
        "FAILURES",
        "CAPPED",
        "REASON",
    ];
    // Right-aligned columns: the numbers.
    const RIGHT: [bool; 12] = [
        false, false, false, true, true, true, true, false, true, true, true, false,
    ];
    const STATE: usize = 2;
    const AT_CAP: usize = 7;
    let rows: Vec<[String; 12]> = destinations
        .iter()
        .map(|d| {
            let at_cap = match (d.at_cap, d.max_calls.is_some() || d.max_cps.is_some()) {
                (Some(Cap::Calls), _) => "CALLS",
                (Some(Cap::Cps), _) => "CPS",
                (None, true) => "no",
                (None, false) => "-",
            };
            [
                printable(&d.name),
                printable(&d.address),
                d.state.as_str().to_string(),
                human_secs(d.since_secs),
                d.last_probe_rtt_ms.map_or_else(|| "-".into(), human_ms),
                match d.max_calls {
                    Some(max) => format!("{}/{max}", d.calls_in_progress),
                    None => d.calls_in_progress.to_string(),
                },
                d.max_cps.map_or_else(|| "-".into(), |r| r.to_string()),
                at_cap.to_string(),
                d.calls.to_string(),
                d.failures.to_string(),
                (d.capped_calls + d.capped_cps).to_string(),
                printable(&d.reason),
            ]
        })
        .collect();
    let paint = |i: usize, cell: &str| match i {
        _ if !colour => None,
        STATE => state_colour(cell),
        AT_CAP if matches!(cell, "CALLS" | "CPS") => Some("33"),
        _ => None,
    };
    aligned_table(HEADER, RIGHT, &rows, paint, "(no destinations)")
}

/// A table as the CLI prints it: the header, then one line per row, columns two spaces apart
/// and as wide as their widest cell, `right` ones right-aligned, no trailing spaces; `empty`
/// under the header when there is no row. `paint` gives a row cell's ANSI SGR colour code.
fn aligned_table<const N: usize>(
    header: [&str; N],
    right: [bool; N],
    rows: &[[String; N]],
    paint: impl Fn(usize, &str) -> Option<&'static str>,
    empty: &str,
) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N], is_header: bool| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            let shown = match paint(i, cell).filter(|_| !is_header) {
                Some(code) => format!("\x1b[{code}m{cell}\x1b[0m"),
                None => (*cell).to_string(),
            };
            if right[i] {
                text.push_str(&pad);
                text.push_str(&shown);
            } else {
                text.push_str(&shown);
                text.push_str(&pad);
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header, true);
    for row in rows {
        line(row.each_ref().map(String::as_str), false);
    }
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    out
}

/// The `pointsman calls` table: one line per call (Call-ID, state, age, route, destination,
/// caller, dialled number), columns aligned; text from the node stripped of control characters.
/// A call in setup shows where its current branch stands: `setup (ringing)`.
pub fn render_calls(calls: &[CallSummary]) -> String {
    const HEADER: [&str; 7] = [
        "CALL-ID",
        "STATE",
        "AGE",
        "ROUTE",
        "DESTINATION",
        "FROM",
        "TO",
    ];
    let dash = |s: &Option<String>| s.as_deref().map_or_else(|| "-".to_string(), printable);
    let rows: Vec<[String; 7]> = calls
        .iter()
        .map(|c| {
            let mut state = match (&c.state, &c.branch) {
                (CallStage::Setup, Some(branch)) => format!("setup ({})", printable(branch)),
                (state, _) => state.as_str().to_string(),
            };
            if let Some(owner) = c.owner {
                state.push_str(&format!(", node {owner}'s (down)"));
            }
            [
                printable(&c.call_id),
                state,
                human_secs(c.age_secs),
                dash(&c.route),
                dash(&c.destination),
                dash(&c.from),
                dash(&c.to),
            ]
        })
        .collect();
    // The age is a number: right-aligned.
    let right = [false, false, true, false, false, false, false];
    aligned_table(HEADER, right, &rows, |_, _| None, "(no calls)")
}

/// The ANSI SGR code for a state word.
fn state_colour(state: &str) -> Option<&'static str> {
    Some(match state {
        "up" | "serving" => "32",
        "forced-up" => "36",
        "probing" | "draining" => "33",
        "maintenance" => "35",
        "down" | "stopping" => "1;31",
        _ => return None,
    })
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `45s`, `3m12s`, `2h05m`, `3d04h`.
fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `0.35ms`, `1.25ms`, `12.5ms`, `150ms`, `1.25s`.
fn human_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    const TOKEN: &str = "0123456789abcdef0123";

    fn status(name: &str, state: State) -> DestinationStatus {
        DestinationStatus {
            name: name.into(),
            address: format!("{name}.example:5060"),
            state,
            reason: "3 probes ok".into(),
            since_secs: 192,
            last_probe_rtt_ms: Some(1.25),
            calls_in_progress: 2,
            max_calls: None,
            max_cps: None,
            at_cap: None,
            capped_calls: 0,
            capped_cps: 0,
            calls: 10,
            failures: 1,
            probes_ok: 20,
            probes_failed: 0,
        }
    }

    /// A node with two destinations whose actions set the state word.
    struct Fake {
        dests: Mutex<Vec<DestinationStatus>>,
        draining: AtomicBool,
        stopping: AtomicBool,
        reload_errors: Mutex<Vec<String>>,
        log: Mutex<String>,
        calls: Mutex<Vec<CallSummary>>,
    }

    impl Fake {
        fn new() -> Arc<Fake> {
            Arc::new(Fake {
                dests: Mutex::new(vec![
                    status("primary", State::Up),
                    status("secondary", State::Down),
                ]),
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                reload_errors: Mutex::new(Vec::new()),
                log: Mutex::new("info".into()),
                calls: Mutex::new(call_rows()),
            })
        }
    }

    impl NodeControl for Fake {
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
            if d.state == State::Maintenance && action == AdminAction::ForceUp {
                return Err(ActionError::Conflict(
                    "primary is in maintenance: enable it first".into(),
                ));
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
            let (draining, stopping) = (
                self.draining.load(Ordering::SeqCst),
                self.stopping.load(Ordering::SeqCst),
            );
            NodeStatus {
                id: 7,
                version: "1.2.3".into(),
                state: match (draining, stopping) {
                    (_, true) => NodeState::Stopping,
                    (true, false) => NodeState::Draining,
                    (false, false) => NodeState::Serving,
                },
                draining,
                stopping,
                uptime_secs: 192,
                config_file: Some("/etc/pointsman.toml".into()),
                calls_in_setup: 2,
                answered_calls: 5,
                peers: Vec::new(),
            }
        }
        fn drain_node(&self) {
            self.draining.store(true, Ordering::SeqCst);
        }
        fn resume_node(&self) -> Result<(), ActionError> {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(ActionError::Conflict("the node is stopping".into()));
            }
            self.draining.store(false, Ordering::SeqCst);
            Ok(())
        }
        fn reload(&self) -> Result<Reloaded, Vec<String>> {
            let errors = self.reload_errors.lock().unwrap().clone();
            if errors.is_empty() {
                Ok(Reloaded {
                    summary: "2 destinations, 1 route".into(),
                    restart_required: vec!["listen".into(), "timers".into()],
                })
            } else {
                Err(errors)
            }
        }
        fn metrics(&self) -> String {
            "pointsman_cancels_sent_total 3\n".into()
        }
        fn log_filter(&self) -> Result<String, LogError> {
            Ok(self.log.lock().unwrap().clone())
        }
        fn set_log_filter(&self, filter: &str) -> Result<LogChange, LogError> {
            let (filter, _) = crate::logging::parse(filter)?;
            let previous = std::mem::replace(&mut *self.log.lock().unwrap(), filter.clone());
            Ok(LogChange { filter, previous })
        }
        fn calls(&self) -> Vec<CallSummary> {
            self.calls.lock().unwrap().clone()
        }
        fn end_call(&self, call_id: &str) -> Result<Vec<CallSummary>, ActionError> {
            let mut calls = self.calls.lock().unwrap();
            let (ended, kept) = calls.drain(..).partition(|c| c.call_id == call_id);
            *calls = kept;
            Ok(ended)
        }
    }

    /// A ringing call and an answered one (whose Call-ID needs encoding in a path).
    fn call_rows() -> Vec<CallSummary> {
        vec![
            CallSummary {
                call_id: "a84b4c76e66710@pc33/x".into(),
                state: CallStage::Answered,
                route: Some("uk".into()),
                destination: Some("primary".into()),
                branch: None,
                tried: Vec::new(),
                from: Some("+442079460000".into()),
                to: Some("+15551234".into()),
                age_secs: 3725,
                owner: None,
            },
            CallSummary {
                call_id: "ring-1".into(),
                state: CallStage::Setup,
                route: Some("default".into()),
                destination: Some("secondary".into()),
                branch: Some("ringing".into()),
                tried: vec!["primary".into(), "secondary".into()],
                from: None,
                to: Some("+15559999".into()),
                age_secs: 12,
                owner: Some(1),
            },
        ]
    }

    fn call_ids(reply: &Reply) -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        json(reply)
            .as_array()
            .expect("an array")
            .iter()
            .map(|c| c["call_id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn calls_are_listed_and_filtered_by_route_destination_number_and_age() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        assert_eq!(
            call_ids(&get(&a, "/calls")),
            ["a84b4c76e66710@pc33/x", "ring-1"]
        );
        let all = json(&get(&a, "/calls/"));
        assert_eq!(all[1]["state"], "setup");
        assert_eq!(all[1]["branch"], "ringing");
        assert_eq!(all[1]["tried"], serde_json::json!(["primary", "secondary"]));
        assert_eq!(all[0]["state"], "answered");
        assert_eq!(call_ids(&get(&a, "/calls?route=default")), ["ring-1"]);
        assert_eq!(
            call_ids(&get(&a, "/calls?destination=primary")),
            ["a84b4c76e66710@pc33/x"]
        );
        assert_eq!(
            call_ids(&get(&a, "/calls?number=%2B1+555+9999")),
            ["ring-1"]
        );
        assert_eq!(
            call_ids(&get(&a, "/calls?number=2079460000")),
            ["a84b4c76e66710@pc33/x"]
        );
        assert_eq!(
            call_ids(&get(&a, "/calls?min_age=60&route=")),
            ["a84b4c76e66710@pc33/x"]
        );
        assert!(call_ids(&get(&a, "/calls?min_age=60&route=default")).is_empty());
        let r = get(&a, "/calls?min_age=soon");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            json(&r)["error"].as_str().unwrap().contains("min_age"),
            "{r:?}"
        );
        let r = get(&a, "/calls?caller=1");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            json(&r)["error"]
                .as_str()
                .unwrap()
                .contains("unknown filter"),
            "{r:?}"
        );
    }

    #[test]
    fn one_call_is_shown_and_ended_by_its_encoded_call_id_and_then_it_is_not_found() {
        let fake = Fake::new();
        let a = api(&fake, Some(TOKEN), true);
        let path = format!("/calls/{}", encode_segment("a84b4c76e66710@pc33/x"));
        assert_eq!(path, "/calls/a84b4c76e66710@pc33%2Fx");
        let r = get(&a, &path);
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(json(&r)["route"], "uk");
        assert_eq!(get(&a, "/calls/nope").status, StatusCode::NOT_FOUND);
        // Ending is a POST: the token, like every POST.
        let end = format!("{path}/end");
        assert_eq!(post(&a, &end).status, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&a, &end).status, StatusCode::METHOD_NOT_ALLOWED);
        let auth = format!("Bearer {TOKEN}");
        let r = a.respond(&Method::POST, &end, Some(auth.as_bytes()));
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(json(&r)["ended"][0]["call_id"], "a84b4c76e66710@pc33/x");
        let r = a.respond(&Method::POST, &end, Some(auth.as_bytes()));
        assert_eq!(r.status, StatusCode::NOT_FOUND, "ended already: {r:?}");
        assert!(
            json(&r)["error"].as_str().unwrap().contains("no call"),
            "{r:?}"
        );
        assert_eq!(get(&a, &path).status, StatusCode::NOT_FOUND);
        let r = a.respond(&Method::POST, "/calls", Some(auth.as_bytes()));
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn calls_table_is_aligned() {
        let expected = "\
CALL-ID                STATE                               AGE  ROUTE    DESTINATION  FROM           TO
a84b4c76e66710@pc33/x  answered                          1h02m  uk       primary      +442079460000  +15551234
ring-1                 setup (ringing), node 1's (down)    12s  default  secondary    -              +15559999
";
        assert_eq!(render_calls(&call_rows()), expected);
        assert_eq!(
            render_calls(&[]),
            "CALL-ID  STATE  AGE  ROUTE  DESTINATION  FROM  TO\n(no calls)\n"
        );
    }

    fn api(fake: &Arc<Fake>, token: Option<&str>, open_reads: bool) -> Api {
        Api {
            control: fake.clone(),
            token: token.map(String::from),
            open_reads,
        }
    }

    fn get(api: &Api, path: &str) -> Reply {
        api.respond(&Method::GET, path, None)
    }

    fn post(api: &Api, path: &str) -> Reply {
        api.respond(&Method::POST, path, None)
    }

    fn json(reply: &Reply) -> serde_json::Value {
        assert_eq!(reply.content_type, "application/json", "{reply:?}");
        serde_json::from_str(&reply.body).expect("JSON body")
    }

    /// The JSON carries the same state words as `as_str` (logs, metrics docs, `status`), both
    /// ways.
    #[test]
    fn states_serialise_as_their_names() {
        for s in State::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
        }
        for s in [NodeState::Serving, NodeState::Draining, NodeState::Stopping] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), s);
        }
    }

    #[test]
    fn health_answers_ok_as_text() {
        let r = get(&api(&Fake::new(), None, true), "/health");
        assert_eq!(
            (r.status, r.content_type, r.body.as_str()),
            (StatusCode::OK, "text/plain", "ok\n")
        );
    }

    #[test]
    fn node_drain_and_resume_answer_200_with_the_node_and_turn_ready_off_and_on() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        let r = get(&a, "/ready");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(json(&r), serde_json::json!({ "ready": true }));
        let r = post(&a, "/node/drain");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "id": 7, "version": "1.2.3", "state": "draining", "draining": true,
                "stopping": false, "uptime_secs": 192, "config_file": "/etc/pointsman.toml",
                "calls_in_setup": 2, "answered_calls": 5
            })
        );
        let r = get(&a, "/ready");
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json(&r),
            serde_json::json!({ "ready": false, "reason": "draining" })
        );
        assert_eq!(json(&get(&a, "/node"))["state"], "draining");
        let r = post(&a, "/node/resume");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(json(&r)["state"], "serving");
        assert_eq!(json(&r)["draining"], false);
        assert_eq!(get(&a, "/ready").status, StatusCode::OK);
    }

    #[test]
    fn a_stopping_node_is_not_ready_and_cannot_resume() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        fake.stopping.store(true, Ordering::SeqCst);
        let r = get(&a, "/ready");
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json(&r),
            serde_json::json!({ "ready": false, "reason": "stopping" })
        );
        let r = post(&a, "/node/resume");
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(json(&r)["error"], "the node is stopping");
    }

    #[test]
    fn destinations_are_a_json_array_of_every_field() {
        let fake = Fake::new();
        let r = get(&api(&fake, None, true), "/destinations/");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            json(&r)[0],
            serde_json::json!({
                "name": "primary", "address": "primary.example:5060", "state": "up",
                "reason": "3 probes ok", "since_secs": 192, "last_probe_rtt_ms": 1.25,
                "calls_in_progress": 2, "max_calls": null, "max_cps": null, "at_cap": null,
                "capped_calls": 0, "capped_cps": 0, "calls": 10, "failures": 1, "probes_ok": 20,
                "probes_failed": 0
            })
        );
        let back: Vec<DestinationStatus> = serde_json::from_str(&r.body).unwrap();
        assert_eq!(back, fake.destinations());
        // A destination at its cap says which one; a node without caps (an older one) still
        // reads.
        let capped = DestinationStatus {
            max_calls: Some(2),
            max_cps: Some(2.5),
            at_cap: Some(Cap::Cps),
            capped_cps: 3,
            ..status("primary", State::Up)
        };
        let text = serde_json::to_value(&capped).unwrap();
        assert_eq!(
            (&text["max_calls"], &text["max_cps"], &text["at_cap"]),
            (
                &serde_json::json!(2),
                &serde_json::json!(2.5),
                &serde_json::json!("cps")
            )
        );
        let mut old = json(&r)[0].clone();
        for key in [
            "max_calls",
            "max_cps",
            "at_cap",
            "capped_calls",
            "capped_cps",
        ] {
            old.as_object_mut().unwrap().remove(key);
        }
        let read: DestinationStatus = serde_json::from_value(old).unwrap();
        assert_eq!(read, fake.destinations()[0]);
        let one = get(&api(&fake, None, true), "/destinations/secondary?x=1");
        assert_eq!(json(&one)["state"], "down");
    }

    #[test]
    fn each_action_returns_the_new_status() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        for (action, state) in [
            ("drain", "draining"),
            ("enable", "probing"),
            ("force-up", "forced-up"),
            ("maintenance", "maintenance"),
        ] {
            let r = post(&a, &format!("/destinations/secondary/{action}"));
            assert_eq!(r.status, StatusCode::OK, "{action}: {r:?}");
            assert_eq!(json(&r)["state"], state);
            assert_eq!(json(&r)["name"], "secondary");
        }
        let r = post(&a, "/destinations/secondary/force-up");
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            json(&r)["error"],
            "primary is in maintenance: enable it first"
        );
    }

    #[test]
    fn unknown_destination_is_404_with_did_you_mean() {
        let a = api(&Fake::new(), None, true);
        let r = post(&a, "/destinations/primray/drain");
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "error": "unknown destination \"primray\": did you mean \"primary\"?",
                "did_you_mean": "primary"
            })
        );
        let r = get(&a, "/destinations/zzz");
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "error": "unknown destination \"zzz\": GET /destinations lists them \
                          (primary, secondary)",
                "did_you_mean": null
            })
        );
    }

    #[test]
    fn unknown_action_is_400_and_names_the_actions() {
        let fake = Fake::new();
        let r = post(&api(&fake, None, true), "/destinations/primary/force_up");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&r)["error"],
            "unknown action \"force_up\" (did you mean \"force-up\"?): use one of drain, \
             maintenance, enable, force-up"
        );
        assert_eq!(fake.destinations()[0].state, State::Up, "nothing changed");
    }

    #[test]
    fn reload_answers_the_summary_or_422_with_every_error() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        let r = post(&a, "/reload");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "reloaded": true,
                "summary": "2 destinations, 1 route",
                "restart_required": ["listen", "timers"]
            })
        );
        *fake.reload_errors.lock().unwrap() = vec![
            "a.toml:3: listen[0].address: bad".into(),
            "a.toml:9: route: x".into(),
        ];
        let r = post(&a, "/reload");
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "reloaded": false,
                "errors": ["a.toml:3: listen[0].address: bad", "a.toml:9: route: x"]
            })
        );
    }

    fn post_log(api: &Api, content_type: Option<&str>, body: &str) -> Reply {
        api.respond_to(
            &Method::POST,
            "/log",
            None,
            Body::Read {
                content_type: content_type.map(str::as_bytes),
                bytes: body.as_bytes(),
            },
        )
    }

    #[test]
    fn log_shows_the_filter_and_a_post_replaces_it() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        let r = get(&a, "/log");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(json(&r), serde_json::json!({ "filter": "info" }));
        let r = post_log(&a, Some("text/plain"), "debug\n");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(
            json(&r),
            serde_json::json!({ "filter": "debug", "previous": "info" })
        );
        assert_eq!(json(&get(&a, "/log/"))["filter"], "debug");
        let r = post_log(&a, None, "level=pointsman_protocol=debug, info");
        assert_eq!(
            json(&r),
            serde_json::json!({ "filter": "pointsman_protocol=debug,info", "previous": "debug" })
        );
    }

    #[test]
    fn a_log_body_is_the_filter_or_a_form_field_holding_it() {
        let form = Some(&b"application/x-www-form-urlencoded"[..]);
        for (content_type, body, filter) in [
            (None, &b" debug "[..], "debug"),
            (None, b"level=warn", "warn"),
            (None, b"filter=a=debug,info", "a=debug,info"),
            (
                Some(&b"text/plain"[..]),
                b"pointsman=debug,info",
                "pointsman=debug,info",
            ),
            // curl -d 'level=debug'
            (form, b"level=debug", "debug"),
            // curl --data-urlencode 'level=pointsman=debug,info'
            (
                form,
                b"level=pointsman%3Ddebug%2Cinfo",
                "pointsman=debug,info",
            ),
            (form, b"x=1&filter=pointsman%3dtrace", "pointsman=trace"),
            // curl -d 'pointsman=debug,info': no level field, the whole body.
            (form, b"pointsman=debug,info", "pointsman=debug,info"),
            (
                Some(b"Application/X-WWW-Form-Urlencoded; charset=utf-8"),
                b"level=a%3Ddebug+",
                "a=debug ",
            ),
        ] {
            assert_eq!(
                log_filter_of(content_type, body).as_deref(),
                Ok(filter),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for (content_type, body) in [
            (None, &b"\xff\xfe"[..]),
            (form, b"level=%zz"),
            (form, b"level=%4"),
            (form, b"level=%ff"),
        ] {
            assert!(log_filter_of(content_type, body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn a_bad_log_filter_is_400_and_changes_nothing() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        for (body, error) in [
            (
                "debgu",
                "invalid log filter \"debgu\": \"debgu\" is not a level (trace, debug, info, \
                 warn, error, off); a target's level is written TARGET=LEVEL",
            ),
            (
                "",
                "no filter given: send a level (trace, debug, info, warn, error, off) or \
                 directives such as pointsman_protocol=debug,info",
            ),
        ] {
            let r = post_log(&a, None, body);
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}");
            assert_eq!(json(&r)["error"], error);
        }
        let r = post_log(&a, None, "info,pointsman=loud");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let e = json(&r)["error"].as_str().unwrap().to_string();
        assert!(e.contains("\"pointsman=loud\""), "{e}");
        assert_eq!(post(&a, "/log").status, StatusCode::BAD_REQUEST, "no body");
        let r = a.respond_to(&Method::POST, "/log", None, Body::TooLarge);
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json(&get(&a, "/log"))["filter"], "info", "nothing changed");
        let r = a.respond(&Method::PUT, "/log", None);
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header, Some((ALLOW, "GET, POST")));
    }

    #[test]
    fn with_a_token_setting_the_log_filter_needs_it() {
        let fake = Fake::new();
        let a = api(&fake, Some(TOKEN), true);
        assert_eq!(get(&a, "/log").status, StatusCode::OK);
        let body = Body::Read {
            content_type: None,
            bytes: b"debug",
        };
        let r = a.respond_to(&Method::POST, "/log", None, body);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(json(&get(&a, "/log"))["filter"], "info");
        let auth = format!("Bearer {TOKEN}");
        let r = a.respond_to(&Method::POST, "/log", Some(auth.as_bytes()), body);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(json(&get(&a, "/log"))["filter"], "debug");
    }

    #[test]
    fn only_post_log_has_its_body_read() {
        assert!(reads_body(&Method::POST, "/log"));
        assert!(reads_body(&Method::POST, "/log/?x"));
        for (method, path) in [
            (Method::GET, "/log"),
            (Method::PUT, "/log"),
            (Method::POST, "/reload"),
            (Method::POST, "/log/x"),
            (Method::POST, "//log"),
        ] {
            assert!(!reads_body(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn log_over_real_http_with_the_client_functions() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let fake = Fake::new();
        spawn(port, fake.clone(), Some(TOKEN.into())).expect("spawn");
        let (addr, t) = (port.to_string(), Duration::from_secs(5));
        assert_eq!(fetch_log_filter(&addr, None, t).unwrap(), "info");
        let e = set_log_filter(&addr, None, "debug", t).unwrap_err();
        assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
        let change = set_log_filter(&addr, Some(TOKEN), "pointsman=debug,info", t).unwrap();
        assert_eq!(
            change,
            LogChange {
                filter: "pointsman=debug,info".into(),
                previous: "info".into()
            }
        );
        let e = set_log_filter(&addr, Some(TOKEN), "loud", t).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "admin API at {addr} answered 400: invalid log filter \"loud\": \"loud\" is \
                 not a level (trace, debug, info, warn, error, off); a target's level is written \
                 TARGET=LEVEL"
            )
        );
        // A body past the limit: 413, and the API still serves.
        let big = "a".repeat(MAX_BODY_BYTES + 1);
        let r = http_request_with_body(
            &addr,
            "POST",
            "/log",
            Some(TOKEN),
            Some(("text/plain", big.as_bytes())),
            t,
        )
        .unwrap();
        assert_eq!(r.status, 413, "{}", r.text());
        assert_eq!(
            fetch_log_filter(&addr, None, t).unwrap(),
            "pointsman=debug,info"
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let r = get(&api(&Fake::new(), None, true), "/metrics");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(r.body, "pointsman_cancels_sent_total 3\n");
    }

    #[test]
    fn wrong_method_is_405_with_allow_and_unknown_path_404() {
        let a = api(&Fake::new(), None, true);
        let r = post(&a, "/health");
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header, Some((ALLOW, "GET")));
        let r = get(&a, "/reload");
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header, Some((ALLOW, "POST")));
        let r = a.respond(&Method::DELETE, "/destinations/primary/drain", None);
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(get(&a, "/node/resume").header, Some((ALLOW, "POST")));
        assert_eq!(post(&a, "/node").header, Some((ALLOW, "GET")));
        for path in [
            "/",
            "",
            "/nope",
            "/destinations/a/b/c",
            "//health",
            "/node/x",
            "*",
        ] {
            assert_eq!(get(&a, path).status, StatusCode::NOT_FOUND, "{path:?}");
        }
    }

    #[test]
    fn with_a_token_on_loopback_posts_need_it_and_gets_do_not() {
        let fake = Fake::new();
        let a = api(&fake, Some(TOKEN), true);
        assert_eq!(get(&a, "/destinations").status, StatusCode::OK);
        let r = post(&a, "/node/drain");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.header,
            Some((WWW_AUTHENTICATE, "Bearer realm=\"pointsman\""))
        );
        assert!(fake.node().ready(), "refused request had no effect");
        for wrong in [
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[1..]),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
            "Bearer ".into(),
            "Bearer".into(),
            String::new(),
        ] {
            let r = a.respond(&Method::POST, "/node/drain", Some(wrong.as_bytes()));
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        }
        let r = a.respond(&Method::POST, "/node/drain", Some(b"\xff\x00\x01"));
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let right = format!("bearer  {TOKEN}");
        let r = a.respond(&Method::POST, "/node/drain", Some(right.as_bytes()));
        assert_eq!(r.status, StatusCode::OK, "drained: {r:?}");
        assert!(!fake.node().ready());
    }

    #[test]
    fn off_loopback_every_request_needs_the_token() {
        let a = api(&Fake::new(), Some(TOKEN), false);
        for path in ["/health", "/ready", "/destinations", "/metrics", "/nope"] {
            assert_eq!(get(&a, path).status, StatusCode::UNAUTHORIZED, "{path}");
        }
        let auth = format!("Bearer {TOKEN}");
        let r = a.respond(&Method::GET, "/metrics", Some(auth.as_bytes()));
        assert_eq!(r.status, StatusCode::OK);
    }

    #[test]
    fn without_a_token_on_loopback_everything_is_open() {
        let fake = Fake::new();
        let a = api(&fake, None, true);
        assert_eq!(
            post(&a, "/destinations/primary/drain").status,
            StatusCode::OK
        );
        // A header sent anyway is ignored.
        let r = a.respond(&Method::POST, "/reload", Some(b"Bearer whatever"));
        assert_eq!(r.status, StatusCode::OK);
    }

    #[test]
    fn token_comparison_needs_the_exact_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcabc", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abc", b""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn spawn_refuses_a_public_address_without_a_token() {
        let e = spawn("0.0.0.0:0".parse().unwrap(), Fake::new(), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("set admin.token"), "{e}");
    }

    #[test]
    fn spawn_reports_a_port_in_use_at_once() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = spawn(addr, Fake::new(), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e
            .to_string()
            .contains(&format!("cannot bind the admin API to {addr}")));
    }

    #[test]
    fn status_over_real_http_on_a_spawned_api() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let fake = Fake::new();
        spawn(port, fake.clone(), Some(TOKEN.into())).expect("spawn");
        let addr = format!("http://{port}/");
        let t = Duration::from_secs(5);
        let list = fetch_destinations(&addr, None, t).expect("GET /destinations");
        assert_eq!(list, fake.destinations());
        let r = http_request(&addr, "POST", "/node/drain", None, t).unwrap();
        assert_eq!(r.status, 401);
        let r = http_request(&addr, "POST", "/node/drain", Some(TOKEN), t).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let node = fetch_node(&addr, None, t).expect("GET /node");
        assert_eq!(node, fake.node());
        assert_eq!(node.state, NodeState::Draining);
    }

    #[test]
    fn status_of_an_unreachable_node_says_so() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let e = fetch_destinations(&port.to_string(), None, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with(&format!("cannot reach the admin API at {port}")));
    }

    #[test]
    fn a_token_that_would_break_the_request_is_refused_before_connecting() {
        let e = http_request(
            "127.0.0.1:9",
            "GET",
            "/",
            Some("abc\r\nX-Evil: 1"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::BadToken), "{e:?}");
    }

    #[test]
    fn replies_parse_with_content_length_chunked_or_until_close() {
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokEXTRA").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"ok"[..], Some("b"))
        );
        let r = parse_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_reply(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn table_rows() -> Vec<DestinationStatus> {
        vec![
            DestinationStatus {
                max_calls: Some(2),
                max_cps: Some(2.5),
                at_cap: Some(Cap::Calls),
                capped_calls: 4,
                capped_cps: 1,
                ..status("primary", State::Up)
            },
            DestinationStatus {
                name: "lifeboat-ivr".into(),
                address: "[2001:db8::7]:5061".into(),
                state: State::Maintenance,
                reason: "admin: maintenance\x1b[2J".into(),
                since_secs: 90_061,
                last_probe_rtt_ms: None,
                calls_in_progress: 0,
                max_calls: None,
                max_cps: None,
                at_cap: None,
                capped_calls: 0,
                capped_cps: 0,
                calls: 12_345,
                failures: 67,
                probes_ok: 0,
                probes_failed: 0,
            },
            DestinationStatus {
                state: State::Down,
                reason: "3 probes failed (timeout)".into(),
                since_secs: 7,
                last_probe_rtt_ms: Some(250.4),
                max_cps: Some(20.0),
                ..status("edge-b", State::Down)
            },
        ]
    }

    #[test]
    fn status_node_line_shows_state_calls_uptime_version_and_config() {
        let fake = Fake::new();
        assert_eq!(
            render_node(&fake.node(), false),
            "NODE 7  serving  up 3m12s  calls in setup 2  answered 5  pointsman 1.2.3  \
             config /etc/pointsman.toml\n"
        );
        fake.drain_node();
        let coloured = render_node(&fake.node(), true);
        assert!(
            coloured.starts_with("NODE 7  \x1b[33mdraining\x1b[0m  up 3m12s"),
            "{coloured:?}"
        );
    }

    #[test]
    fn status_node_line_shows_each_peer_of_the_node_link() {
        let mut node = Fake::new().node();
        node.peers = vec![
            PeerStatus {
                id: 2,
                address: "198.51.100.2:5800".into(),
                up: true,
                unsynced: false,
                via: Some("198.51.100.2:5800".into()),
            },
            PeerStatus {
                id: 3,
                address: "198.51.100.3:5800".into(),
                up: false,
                unsynced: true,
                via: None,
            },
        ];
        let line = render_node(&node, false);
        assert!(
            line.contains("answered 5  peers 2 up, 3 DOWN UNSYNCED  pointsman"),
            "{line:?}"
        );
        node.peers[0].via = Some("203.0.113.2:5800".into());
        let line = render_node(&node, false);
        assert!(
            line.contains("peers 2 up ON BACKUP PATH, 3 DOWN UNSYNCED"),
            "{line:?}"
        );
    }

    #[test]
    fn status_table_is_aligned_without_colour() {
        let expected = "\
NAME          ADDRESS               STATE        SINCE     RTT  CALLS NOW  MAX CPS  AT CAP  CALLS  FAILURES  CAPPED  REASON
primary       primary.example:5060  up           3m12s  1.25ms        2/2      2.5  CALLS      10         1       5  3 probes ok
lifeboat-ivr  [2001:db8::7]:5061    maintenance  1d01h       -          0        -  -       12345        67       0  admin: maintenance?[2J
edge-b        edge-b.example:5060   down            7s   250ms          2       20  no         10         1       0  3 probes failed (timeout)
";
        assert_eq!(render_status(&table_rows(), false), expected);
        assert_eq!(
            render_status(&[], false),
            "NAME  ADDRESS  STATE  SINCE  RTT  CALLS NOW  MAX CPS  AT CAP  CALLS  FAILURES  CAPPED  \
             REASON\n\
             (no destinations)\n"
        );
    }

    #[test]
    fn status_table_colours_only_the_state_words() {
        let text = render_status(&table_rows()[..1], true);
        assert_eq!(
            text.lines().nth(1),
            Some(
                "primary  primary.example:5060  \x1b[32mup\x1b[0m     3m12s  1.25ms        2/2      \
                 2.5  \x1b[33mCALLS\x1b[0m      10         1       5  3 probes ok"
            )
        );
        let plain = render_status(&table_rows(), false);
        let coloured = render_status(&table_rows(), true);
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[35m", "")
            .replace("\x1b[1;31m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        // The three state words and the one cap reached; "no" and "-" stay plain.
        assert_eq!(coloured.matches("\x1b[0m").count(), 4);
    }

    #[test]
    fn durations_and_rtts_are_humanised() {
        let secs: Vec<String> = [0, 59, 60, 192, 3599, 3600, 7260, 86_399, 86_400, 90_061]
            .into_iter()
            .map(human_secs)
            .collect();
        assert_eq!(
            secs,
            [
                "0s", "59s", "1m00s", "3m12s", "59m59s", "1h00m", "2h01m", "23h59m", "1d00h",
                "1d01h"
            ]
        );
        let ms: Vec<String> = [0.35, 1.25, 12.0, 150.2, 1250.0, -1.0, f64::NAN]
            .into_iter()
            .map(human_ms)
            .collect();
        assert_eq!(
            ms,
            ["0.35ms", "1.25ms", "12.0ms", "150ms", "1.25s", "-", "-"]
        );
    }
}
