//! Validation and compilation: the operator's [`spec`](crate::spec) in, a [`Router`] out, or
//! every problem found, each with its key path (`group[2].members[1]`) and a message saying what
//! is wrong and what would be right. Warnings (a route that can never match, a group nothing
//! uses) do not stop compilation; they are kept on [`Router::warnings`].
//!
//! It must not: resolve names, read files, or stop at the first error.

use crate::check::{
    check_failover_code, check_host, check_name, closest, fmt_duration, parse_host_port,
};
use crate::hash::{fnv1a, mix};
use crate::matcher::NumberIndex;
use crate::number::{invalid_number_message, Number};
use crate::router::{
    Conditions, DestinationAttrs, Group, HeaderCondition, Member, RouteRules, Router, SurvivalRule,
    TierRef,
};
use crate::spec::{
    DestinationSpec, GroupSpec, HashOn, MatchSpec, RequestUriSpec, RouteSpec, Strategy,
    SurvivabilitySpec, TransportSpec,
};
use crate::{
    Caps, CodeSet, DestId, Destination, DestinationTls, GroupId, HealthSettings, Lookup,
    RequestUri, Route, RouteId, RuleError, RuleSet, DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_MEDIA_TIMEOUT, DEFAULT_PROBE_CODES, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_PROVISIONAL_TIMEOUT, DEFAULT_RECOVERY_THRESHOLD, DEFAULT_RETRY_CODES,
    DEFAULT_RING_TIMEOUT, MAX_MAX_CALLS, MAX_MAX_CPS, MAX_PROBE_INTERVAL, MAX_PROBE_TIMEOUT,
    MAX_PROVISIONAL_TIMEOUT, MAX_RING_TIMEOUT, MAX_THRESHOLD, MIN_MAX_CPS, MIN_PROBE_INTERVAL,
    MIN_PROBE_TIMEOUT,
};
use std::collections::HashMap;
use std::time::Duration;

/// Default destination `weight`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Default destination `priority`.
pub const DEFAULT_PRIORITY: u32 = 0;
/// Largest `survivability.retry_after` accepted.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Errors in the order found.
#[derive(Default)]
struct Errors(Vec<RuleError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(RuleError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A route's match conditions while compiling (numbers kept whole for the shadowing analysis).
#[derive(Default)]
struct RawConditions {
    present: bool,
    to: Vec<Number>,
    to_prefix: Vec<Number>,
    from_prefix: Vec<Number>,
    source: Vec<String>,
    header: Option<HeaderCondition>,
}

impl RawConditions {
    fn has_number(&self) -> bool {
        !self.to.is_empty() || !self.to_prefix.is_empty()
    }
}

impl Router {
    /// Validates and compiles. Returns every error found, not just the first.
    pub fn compile(
        destinations: &[DestinationSpec],
        groups: &[GroupSpec],
        routes: &[RouteSpec],
    ) -> Result<Router, Vec<RuleError>> {
        Router::compile_except(destinations, groups, routes, |_| false)
    }

    /// [`compile`](Self::compile), leaving out the errors `skip` names: for a caller that
    /// stands placeholders in for entries it could not read (and has said why), so the rest is
    /// still compiled and checked. A router compiled past skipped errors is for those checks,
    /// not for routing calls.
    pub fn compile_except(
        destinations: &[DestinationSpec],
        groups: &[GroupSpec],
        routes: &[RouteSpec],
        skip: impl Fn(&RuleError) -> bool,
    ) -> Result<Router, Vec<RuleError>> {
        let mut errors = Errors::default();
        let (dests, attrs, dest_ids) = compile_destinations(destinations, &mut errors);
        let (compiled_groups, group_ids) =
            compile_groups(groups, destinations, &dest_ids, &attrs, &mut errors);

        let mut flat_routes = Vec::with_capacity(routes.len());
        let mut route_rules = Vec::with_capacity(routes.len());
        let mut raw_conditions = Vec::with_capacity(routes.len());
        let mut route_names: HashMap<&str, usize> = HashMap::new();
        let names = Names {
            destinations,
            dest_ids: &dest_ids,
            groups,
            group_ids: &group_ids,
            compiled_groups: &compiled_groups,
        };
        for (r, spec) in routes.iter().enumerate() {
            let at = |key: &str| format!("route[{r}].{key}");
            if let Err(m) = check_name("route", &spec.name) {
                errors.push(at("name"), m);
            }
            if let Some(&first) = route_names.get(spec.name.as_str()) {
                if !spec.name.is_empty() {
                    errors.push(
                        at("name"),
                        format!(
                            "route name {:?} is already used by route[{first}]: give each route \
                             a unique name",
                            spec.name
                        ),
                    );
                }
            } else {
                route_names.insert(&spec.name, r);
            }
            let raw = compile_conditions(r, spec.conditions.as_ref(), &mut errors);
            let tiers = compile_tiers(r, spec, &names, &mut errors);
            let survivability = spec
                .survivability
                .as_ref()
                .and_then(|s| compile_survivability(r, spec, s, &tiers, &names, &mut errors));
            let flat = flatten(&tiers, &compiled_groups);

            let retry_codes = spec
                .retry_codes
                .clone()
                .unwrap_or_else(|| DEFAULT_RETRY_CODES.to_vec());
            check_codes(&mut errors, &at("retry_codes"), &retry_codes);
            let ringing_retry_codes = spec.ringing_retry_codes.clone().unwrap_or_default();
            check_codes(
                &mut errors,
                &at("ringing_retry_codes"),
                &ringing_retry_codes,
            );
            let ring_timeout = spec.ring_timeout.unwrap_or(DEFAULT_RING_TIMEOUT);
            check_ring_timeout(&mut errors, &at("ring_timeout"), ring_timeout);
            check_media_timeout(&mut errors, &at("media_timeout"), spec.media_timeout);

            flat_routes.push(Route {
                name: spec.name.clone(),
                destinations: flat,
                retry_codes: CodeSet(retry_codes),
                ringing_retry_codes: CodeSet(ringing_retry_codes),
                pass_503: spec.pass_503.unwrap_or(false),
                ring_timeout,
                media: spec.media.unwrap_or_default(),
                media_timeout: match spec.media_timeout {
                    Some(t) if t.is_zero() => None,
                    Some(t) => Some(t),
                    None => Some(DEFAULT_MEDIA_TIMEOUT),
                },
            });
            route_rules.push(RouteRules {
                conditions: Conditions {
                    to_count: raw.to.len(),
                    to_prefix: raw.to_prefix.iter().map(|n| n.as_str().into()).collect(),
                    from_prefix: raw.from_prefix.iter().map(|n| n.as_str().into()).collect(),
                    source: raw.source.clone(),
                    header: raw.header.clone(),
                },
                tiers,
                survivability,
            });
            raw_conditions.push(raw);
        }
        if routes.is_empty() {
            errors.push(
                "route",
                "no [[route]] table: every call needs a route; add one listing the destinations \
                 to try in order, e.g. [[route]] name = \"default\" destinations = [\"primary\"]",
            );
        }
        errors.0.retain(|e| !skip(e));
        if !errors.0.is_empty() {
            return Err(errors.0);
        }

        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        let mut numberless = Vec::new();
        for (r, raw) in raw_conditions.iter().enumerate() {
            let id = RouteId(r as u32);
            exact.extend(raw.to.iter().map(|n| (*n, id)));
            prefixes.extend(raw.to_prefix.iter().map(|n| (*n, id)));
            if !raw.has_number() {
                numberless.push(id);
            }
        }
        let mut router = Router {
            rules: RuleSet {
                destinations: dests,
                routes: flat_routes,
            },
            attrs,
            groups: compiled_groups,
            route_rules,
            warnings: Vec::new(),
            index: NumberIndex::build(exact, prefixes),
            targets: Vec::new(),
            target_of: Vec::new(),
            numberless,
        };
        router.warnings = warnings(&router, &raw_conditions, routes);
        Ok(router)
    }
}

/// Name lookups shared by the route checks.
struct Names<'a> {
    destinations: &'a [DestinationSpec],
    dest_ids: &'a HashMap<&'a str, DestId>,
    groups: &'a [GroupSpec],
    group_ids: &'a HashMap<&'a str, GroupId>,
    compiled_groups: &'a [Group],
}

type CompiledDestinations<'a> = (
    Vec<Destination>,
    Vec<DestinationAttrs>,
    HashMap<&'a str, DestId>,
);

fn compile_destinations<'a>(
    destinations: &'a [DestinationSpec],
    errors: &mut Errors,
) -> CompiledDestinations<'a> {
    // A name maps to its first definition; later duplicates are errors.
    let mut by_name: HashMap<&str, DestId> = HashMap::new();
    let mut compiled = Vec::with_capacity(destinations.len());
    let mut attrs = Vec::with_capacity(destinations.len());
    for (i, d) in destinations.iter().enumerate() {
        let at = |key: &str| format!("destination[{i}].{key}");
        if let Err(m) = check_name("destination", &d.name) {
            errors.push(at("name"), m);
        }
        if let Some(first) = by_name.get(d.name.as_str()) {
            if !d.name.is_empty() {
                errors.push(
                    at("name"),
                    format!(
                        "destination name {:?} is already used by destination[{}]: give each \
                         destination a unique name",
                        d.name, first.0
                    ),
                );
            }
        } else {
            by_name.insert(&d.name, DestId(i as u32));
        }
        let (host, port, lookup) = match destination_address(&d.address, d.transport) {
            Ok(found) => found,
            Err(m) => {
                errors.push(at("address"), m);
                (String::new(), 0, Lookup::Literal)
            }
        };
        let provisional_timeout = d.provisional_timeout.unwrap_or(DEFAULT_PROVISIONAL_TIMEOUT);
        if provisional_timeout.is_zero() {
            errors.push(
                at("provisional_timeout"),
                format!(
                    "provisional_timeout is 0s: every branch would fail at once; set the time \
                     to wait for a first 1xx, more than 0s and at most {} (default {})",
                    fmt_duration(MAX_PROVISIONAL_TIMEOUT),
                    fmt_duration(DEFAULT_PROVISIONAL_TIMEOUT)
                ),
            );
        } else if provisional_timeout > MAX_PROVISIONAL_TIMEOUT {
            errors.push(
                at("provisional_timeout"),
                format!(
                    "provisional_timeout {} is longer than {}: a destination that has not \
                     answered 1xx by then is dead; use a few seconds (default {})",
                    fmt_duration(provisional_timeout),
                    fmt_duration(MAX_PROVISIONAL_TIMEOUT),
                    fmt_duration(DEFAULT_PROVISIONAL_TIMEOUT)
                ),
            );
        }
        let mut seen_tags: HashMap<&str, usize> = HashMap::new();
        for (k, tag) in d.tags.iter().enumerate() {
            if let Err(m) = check_name("tag", tag) {
                errors.push(format!("destination[{i}].tags[{k}]"), m);
            } else if let Some(first) = seen_tags.insert(tag, k) {
                errors.push(
                    format!("destination[{i}].tags[{k}]"),
                    format!(
                        "tag {tag:?} is listed twice (also at destination[{i}].tags[{first}]): \
                         list each tag once"
                    ),
                );
            }
        }
        let health = compile_health(i, d, errors);
        let tls = compile_tls(i, d, &host, errors);
        check_media_timeout(errors, &at("media_timeout"), d.media_timeout);
        let request_uri = d
            .request_uri
            .as_ref()
            .and_then(|spec| compile_request_uri(&at("request_uri"), spec, errors));
        let caps = compile_caps(i, d, errors);
        compiled.push(Destination {
            name: d.name.clone(),
            host,
            port,
            lookup,
            transport: d.transport,
            tls,
            provisional_timeout,
            cancel_mode: d.cancel_mode,
            trusted: d.trusted.unwrap_or(true),
            health,
            media_timeout: d.media_timeout.map(|t| (!t.is_zero()).then_some(t)),
            request_uri,
            caps,
        });
        attrs.push(DestinationAttrs {
            weight: d.weight.unwrap_or(DEFAULT_WEIGHT),
            priority: d.priority.unwrap_or(DEFAULT_PRIORITY),
            tags: d.tags.clone(),
        });
    }
    (compiled, attrs, by_name)
}

/// A destination's capacity caps: `max_calls` in `1..=MAX_MAX_CALLS`, `max_cps` a finite number
/// in `MIN_MAX_CPS..=MAX_MAX_CPS`. 0 is refused with the way to take a destination out of
/// service instead (a cap of 0 would be a drain nobody sees in `status`). A bad cap is left out
/// of the result (with its error pushed).
fn compile_caps(i: usize, d: &DestinationSpec, errors: &mut Errors) -> Caps {
    let at = |key: &str| format!("destination[{i}].{key}");
    let out_of_service = |key: &str| {
        let name = if d.name.is_empty() { "NAME" } else { &d.name };
        format!(
            "{key} = 0 would send this destination no call at all: to take it out of service, \
             drain it (POST /destinations/{name}/drain: calls in progress finish) or put it in \
             maintenance (POST /destinations/{name}/maintenance), or remove it from its routes; \
             leave {key} out for no cap"
        )
    };
    let max_calls = match d.max_calls {
        Some(0) => {
            errors.push(at("max_calls"), out_of_service("max_calls"));
            None
        }
        Some(n) if n > MAX_MAX_CALLS => {
            errors.push(
                at("max_calls"),
                format!(
                    "max_calls = {n} is out of range: use 1..={MAX_MAX_CALLS} calls in progress \
                     at once (leave max_calls out for no cap)"
                ),
            );
            None
        }
        n => n,
    };
    let max_cps = match d.max_cps {
        Some(0.0) => {
            errors.push(at("max_cps"), out_of_service("max_cps"));
            None
        }
        Some(r) if !(MIN_MAX_CPS..=MAX_MAX_CPS).contains(&r) => {
            let what = if r.is_nan() {
                "is not a number".to_string()
            } else if r < 0.0 {
                "is negative".to_string()
            } else {
                "is out of range".to_string()
            };
            errors.push(
                at("max_cps"),
                format!(
                    "max_cps = {r} {what}: use {MIN_MAX_CPS} to {MAX_MAX_CPS} new calls a second \
                     (fractions allowed: 0.5 is one call every 2 s; leave max_cps out for no cap)"
                ),
            );
            None
        }
        r => r,
    };
    Caps { max_calls, max_cps }
}

/// A destination's `request_uri`: a host that is a DNS name or an IP address, a port other than
/// 0, a prefix of characters a telephone number or user part may hold, parameters of token
/// characters, each named once. `None` (with the errors pushed) when any part is wrong.
fn compile_request_uri(at: &str, spec: &RequestUriSpec, errors: &mut Errors) -> Option<RequestUri> {
    let before = errors.0.len();
    let host = match uri_host(&spec.host) {
        Ok(host) => host,
        Err(m) => {
            errors.push(format!("{at}.host"), m);
            String::new()
        }
    };
    if spec.port == Some(0) {
        errors.push(
            format!("{at}.port"),
            "port 0 is no SIP port: give the port the destination expects in its URI (e.g. \
             5061), or leave port out for none",
        );
    }
    let user_char = |c: char| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,?/#".contains(c);
    if let Some(prefix) = &spec.user_prefix {
        if prefix.is_empty() || !prefix.chars().all(user_char) {
            errors.push(
                format!("{at}.user_prefix"),
                format!(
                    "user_prefix {prefix:?} is not something a SIP user part can start with: use \
                     digits, letters and + - _ . ! ~ * ' ( ) & = $ , ? / # (e.g. \"+\" or \"0044\")"
                ),
            );
        }
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'%+`".contains(c);
    let value_char = |c: char| token_char(c) || "[]/:&+$".contains(c);
    let mut params: Vec<(String, Option<String>)> = Vec::with_capacity(spec.params.len());
    for (k, param) in spec.params.iter().enumerate() {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (param.as_str(), None),
        };
        let ok = !name.is_empty()
            && name.chars().all(token_char)
            && value.is_none_or(|v| !v.is_empty() && v.chars().all(value_char));
        if !ok {
            errors.push(
                format!("{at}.params[{k}]"),
                format!(
                    "{param:?} is not a URI parameter: write name or name=value, with letters, \
                     digits and - _ . ! ~ * ' % + (e.g. \"tgrp=tenant-1\" or \"transport=tls\")"
                ),
            );
        } else if let Some(first) = params
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            errors.push(
                format!("{at}.params[{k}]"),
                format!(
                    "parameter {name:?} is already given at {at}.params[{first}]: name each \
                     parameter once"
                ),
            );
        } else {
            params.push((name.to_string(), value.map(str::to_string)));
        }
    }
    (errors.0.len() == before).then(|| RequestUri {
        host,
        port: spec.port,
        user_prefix: spec.user_prefix.clone(),
        params,
    })
}

/// A Request-URI host as it goes in the URI: a DNS name, an IPv4 address, or an IPv6 address
/// (bracketed here, with or without brackets in the config).
fn uri_host(host: &str) -> Result<String, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{bare}]"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(host.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(host.to_string())
    } else if host.contains(':') && !host.starts_with('[') {
        Err(format!(
            "host {host:?} is not a DNS name or an IP address: give the port as port = …, not \
             after the host"
        ))
    } else {
        Err(format!(
            "host {host:?} is not a DNS name or an IP address: write the host the destination \
             expects in the Request-URI, e.g. \"tenant.byoc.example.com\""
        ))
    }
}

/// A destination's `address`: `host:port` (an IP, or a name whose A/AAAA records are looked up),
/// or a name alone, looked up as a SIP service (NAPTR, SRV, then A/AAAA at the transport's
/// default port: RFC 3263).
fn destination_address(
    address: &str,
    transport: TransportSpec,
) -> Result<(String, u16, Lookup), String> {
    let is_name = |host: &str| host.parse::<std::net::IpAddr>().is_err();
    let name_alone = !address.contains(':') && !address.is_empty();
    if name_alone && check_host(address).is_ok() && is_name(address) {
        let port = if transport == TransportSpec::Tls {
            5061
        } else {
            5060
        };
        return Ok((address.to_string(), port, Lookup::Service));
    }
    let (host, port) = parse_host_port(address)?;
    let lookup = if is_name(&host) {
        Lookup::Address
    } else {
        Lookup::Literal
    };
    Ok((host, port, lookup))
}

/// A destination's TLS keys: only with `transport = "tls"`; `client_cert` and `client_key`
/// together; `server_name` a plausible DNS name or IP. The files are checked by the loader.
fn compile_tls(
    i: usize,
    d: &DestinationSpec,
    host: &str,
    errors: &mut Errors,
) -> Option<DestinationTls> {
    let at = |key: &str| format!("destination[{i}].{key}");
    let keys = [
        ("ca", d.ca.as_ref()),
        ("client_cert", d.client_cert.as_ref()),
        ("client_key", d.client_key.as_ref()),
        ("server_name", d.server_name.as_ref()),
    ];
    if d.transport != TransportSpec::Tls {
        for (key, value) in keys {
            if value.is_some() {
                errors.push(
                    at(key),
                    format!(
                        "{key} applies only to TLS destinations, and this one uses transport = \"{}\": \
                         set transport = \"tls\", or remove {key}",
                        d.transport.as_str()
                    ),
                );
            }
        }
        return None;
    }
    for (key, value) in keys {
        if value.is_some_and(|v| v.trim().is_empty()) {
            errors.push(
                at(key),
                format!("{key} is empty: give a file path (or remove the key for its default)"),
            );
        }
    }
    match (&d.client_cert, &d.client_key) {
        (Some(_), None) => errors.push(
            at("client_key"),
            "client_cert is set without client_key: mutual TLS needs both the certificate \
             chain and its private key (PEM files)",
        ),
        (None, Some(_)) => errors.push(
            at("client_cert"),
            "client_key is set without client_cert: mutual TLS needs both the certificate \
             chain and its private key (PEM files)",
        ),
        _ => {}
    }
    let server_name = d.server_name.clone().unwrap_or_else(|| host.to_string());
    if let Some(name) = &d.server_name {
        let ok = !name.is_empty()
            && (name.parse::<std::net::IpAddr>().is_ok()
                || name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !ok {
            errors.push(
                at("server_name"),
                format!(
                    "server_name = {name:?} is neither a DNS name nor an IP address: write the \
                     name the destination's certificate carries, e.g. \"sbc.example.net\""
                ),
            );
        }
    }
    Some(DestinationTls {
        ca: d.ca.clone(),
        client_cert: d.client_cert.clone(),
        client_key: d.client_key.clone(),
        server_name,
    })
}

/// A destination's health keys: defaults, ranges, `probe_timeout < probe_interval`, and
/// `probe_codes` (final, not 503, each once, at least one).
fn compile_health(i: usize, d: &DestinationSpec, errors: &mut Errors) -> HealthSettings {
    let at = |key: &str| format!("destination[{i}].{key}");
    let duration_in = |errors: &mut Errors, key: &str, value: Duration, lo, hi, default| {
        let what = if value < lo {
            "too short"
        } else if value > hi {
            "too long"
        } else {
            return true;
        };
        errors.push(
            at(key),
            format!(
                "{key} = \"{}\" is {what}: use a duration from {} to {} (default {})",
                fmt_duration(value),
                fmt_duration(lo),
                fmt_duration(hi),
                fmt_duration(default)
            ),
        );
        false
    };
    let interval = d.probe_interval.unwrap_or(DEFAULT_PROBE_INTERVAL);
    let interval_ok = duration_in(
        errors,
        "probe_interval",
        interval,
        MIN_PROBE_INTERVAL,
        MAX_PROBE_INTERVAL,
        DEFAULT_PROBE_INTERVAL,
    );
    let timeout = d.probe_timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
    let timeout_ok = duration_in(
        errors,
        "probe_timeout",
        timeout,
        MIN_PROBE_TIMEOUT,
        MAX_PROBE_TIMEOUT,
        DEFAULT_PROBE_TIMEOUT,
    );
    // Compared only when both are in range, so one mistake gives one error.
    if interval_ok && timeout_ok && timeout >= interval {
        let shown = |set: bool, key: &str, v: Duration| {
            if set {
                format!("{key} = \"{}\"", fmt_duration(v))
            } else {
                format!("{key} (not set, default \"{}\")", fmt_duration(v))
            }
        };
        // Blame the key the operator wrote: the timeout, unless only the interval is set.
        let path = if d.probe_timeout.is_none() && d.probe_interval.is_some() {
            "probe_interval"
        } else {
            "probe_timeout"
        };
        errors.push(
            at(path),
            format!(
                "{} is not shorter than {}: a probe must time out before the next one is due; \
                 shorten probe_timeout or lengthen probe_interval",
                shown(d.probe_timeout.is_some(), "probe_timeout", timeout),
                shown(d.probe_interval.is_some(), "probe_interval", interval),
            ),
        );
    }
    let threshold = |errors: &mut Errors, key: &str, value: Option<u32>, default: u32| {
        let v = value.unwrap_or(default);
        if !(1..=MAX_THRESHOLD).contains(&v) {
            errors.push(
                at(key),
                format!(
                    "{key} = {v} is out of range: use 1..={MAX_THRESHOLD} consecutive results \
                     (default {default})"
                ),
            );
        }
        v
    };
    let failure_threshold = threshold(
        errors,
        "failure_threshold",
        d.failure_threshold,
        DEFAULT_FAILURE_THRESHOLD,
    );
    let recovery_threshold = threshold(
        errors,
        "recovery_threshold",
        d.recovery_threshold,
        DEFAULT_RECOVERY_THRESHOLD,
    );
    let codes = d
        .probe_codes
        .clone()
        .unwrap_or_else(|| DEFAULT_PROBE_CODES.to_vec());
    if codes.is_empty() {
        errors.push(
            at("probe_codes"),
            "probe_codes is empty: no reply would count as alive and the destination would \
             never be up; list the final codes that mean alive, e.g. [200] (the default)"
                .to_string(),
        );
    }
    for (k, &code) in codes.iter().enumerate() {
        let path = format!("destination[{i}].probe_codes[{k}]");
        const RIGHT: &str = "list final codes that mean the destination is alive, e.g. [200] \
                             or [200, 404, 405] for peers that refuse OPTIONS";
        let problem = match code {
            503 => Some(format!(
                "503 always counts as a failure (the destination is unavailable); remove it and \
                 {RIGHT}"
            )),
            100..=199 => Some(format!(
                "{code} is a provisional response (1xx): a probe waits for a final reply; {RIGHT}"
            )),
            200..=699 => None,
            _ => Some(format!(
                "{code} is not a SIP status code (100..=699); {RIGHT}"
            )),
        };
        if let Some(m) = problem {
            errors.push(path, m);
        } else if let Some(first) = codes[..k].iter().position(|&c| c == code) {
            errors.push(
                path,
                format!(
                    "{code} is listed twice (also at destination[{i}].probe_codes[{first}]): \
                     list each code once"
                ),
            );
        }
    }
    HealthSettings {
        probe: d.probe.unwrap_or(true),
        interval,
        timeout,
        failure_threshold,
        recovery_threshold,
        codes: CodeSet(codes),
    }
}

fn compile_groups<'a>(
    groups: &'a [GroupSpec],
    destinations: &[DestinationSpec],
    dest_ids: &HashMap<&str, DestId>,
    attrs: &[DestinationAttrs],
    errors: &mut Errors,
) -> (Vec<Group>, HashMap<&'a str, GroupId>) {
    let mut by_name: HashMap<&str, GroupId> = HashMap::new();
    let mut compiled = Vec::with_capacity(groups.len());
    for (g, spec) in groups.iter().enumerate() {
        let at = |key: &str| format!("group[{g}].{key}");
        let strategy = spec.strategy.as_str();
        if let Err(m) = check_name("group", &spec.name) {
            errors.push(at("name"), m);
        }
        if let Some(first) = by_name.get(spec.name.as_str()) {
            if !spec.name.is_empty() {
                errors.push(
                    at("name"),
                    format!(
                        "group name {:?} is already used by group[{}]: give each group a unique \
                         name",
                        spec.name, first.0
                    ),
                );
            }
        } else {
            by_name.insert(&spec.name, GroupId(g as u32));
        }
        if spec.hash_on.is_some() && spec.strategy != Strategy::Hash {
            errors.push(
                at("hash_on"),
                format!(
                    "hash_on only applies to strategy = \"hash\", and group {:?} is {strategy}: \
                     remove hash_on, or set strategy = \"hash\"",
                    spec.name
                ),
            );
        }
        if spec.members.is_empty() {
            let example = destinations.first().map_or("primary", |d| d.name.as_str());
            errors.push(
                at("members"),
                format!(
                    "group {:?} has no members: list at least one destination name, e.g. \
                     members = [{example:?}]",
                    spec.name
                ),
            );
        }
        let mut members = Vec::with_capacity(spec.members.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, m) in spec.members.iter().enumerate() {
            let path = format!("group[{g}].members[{k}]");
            if m.priority.is_some() && spec.strategy != Strategy::Priority {
                errors.push(
                    format!("{path}.priority"),
                    format!(
                        "priority only orders the members of a priority group, and group {:?} \
                         is {strategy}: remove it{}",
                        spec.name,
                        match spec.strategy {
                            Strategy::Weighted | Strategy::Hash =>
                                " (use weight to set this member's share)",
                            _ => "",
                        }
                    ),
                );
            }
            if m.weight.is_some() && spec.strategy == Strategy::Parallel {
                errors.push(
                    format!("{path}.weight"),
                    format!(
                        "group {:?} is parallel: every member gets each call at once, so weight \
                         has no effect; remove it",
                        spec.name
                    ),
                );
            }
            if let Some(first) = seen.insert(&m.name, k) {
                errors.push(
                    path,
                    format!(
                        "destination {:?} is listed twice in group {:?} (also at \
                         group[{g}].members[{first}]): list each member once",
                        m.name, spec.name
                    ),
                );
                continue;
            }
            match dest_ids.get(m.name.as_str()) {
                Some(&dest) => {
                    let a = &attrs[dest.0 as usize];
                    members.push(Member {
                        dest,
                        priority: m.priority.unwrap_or(a.priority),
                        weight: m.weight.unwrap_or(a.weight),
                        name_hash: mix(fnv1a(m.name.as_bytes())),
                    });
                }
                None => errors.push(path, unknown_destination(&m.name, destinations)),
            }
        }
        let weighs = matches!(spec.strategy, Strategy::Weighted | Strategy::Hash);
        if weighs && !members.is_empty() && members.iter().all(|m| m.weight == 0) {
            errors.push(
                at("members"),
                format!(
                    "every member of {strategy} group {:?} has weight 0, so no call could be \
                     placed: give at least one member a weight above 0 (weight 0 marks a \
                     standby member, tried after the others)",
                    spec.name
                ),
            );
        }
        let mut order: Vec<u32> = (0..members.len() as u32).collect();
        match spec.strategy {
            Strategy::Priority => order.sort_by_key(|&i| {
                let m = &members[i as usize];
                (m.priority, std::cmp::Reverse(m.weight), i)
            }),
            Strategy::Weighted => {
                order.sort_by_key(|&i| (std::cmp::Reverse(members[i as usize].weight), i))
            }
            Strategy::Hash | Strategy::Parallel => {}
        }
        compiled.push(Group {
            name: spec.name.clone(),
            strategy: spec.strategy,
            hash_on: spec.hash_on.unwrap_or(HashOn::CallId),
            members,
            order,
            salt: mix(fnv1a(spec.name.as_bytes()) ^ 0x5eed),
        });
    }
    (compiled, by_name)
}

fn compile_conditions(r: usize, spec: Option<&MatchSpec>, errors: &mut Errors) -> RawConditions {
    let Some(m) = spec else {
        return RawConditions::default();
    };
    let at = |key: &str| format!("route[{r}].match.{key}");
    let mut raw = RawConditions {
        present: true,
        ..RawConditions::default()
    };
    if m.to.is_empty()
        && m.to_prefix.is_empty()
        && m.from_prefix.is_empty()
        && m.source.is_empty()
        && m.header.is_none()
    {
        errors.push(
            format!("route[{r}].match"),
            "match has no condition: give at least one (to, to_prefix, from_prefix, source or \
             header), e.g. match = { to_prefix = [\"1555\"] }, or remove match to make a \
             default route that takes every call",
        );
    }
    let mut numbers = |key: &str, list: &[String], out: &mut Vec<Number>| {
        let mut seen: HashMap<u128, usize> = HashMap::new();
        for (k, text) in list.iter().enumerate() {
            let path = format!("{}[{k}]", at(key));
            match Number::parse(text) {
                Some(n) => {
                    if let Some(first) = seen.insert(n.key(), k) {
                        errors.push(
                            path,
                            format!(
                                "{text:?} is listed twice (also at {}[{first}], once \
                                 normalised to {}): list each number once",
                                at(key),
                                n.as_str()
                            ),
                        );
                    } else {
                        out.push(n);
                    }
                }
                None => errors.push(path, invalid_number_message(key, text)),
            }
        }
    };
    numbers("to", &m.to, &mut raw.to);
    numbers("to_prefix", &m.to_prefix, &mut raw.to_prefix);
    numbers("from_prefix", &m.from_prefix, &mut raw.from_prefix);
    for (k, s) in m.source.iter().enumerate() {
        let path = format!("{}[{k}]", at("source"));
        if s.trim().is_empty() {
            errors.push(
                path,
                "source is empty: write the name of a [[listen]] table (its name, or \
                 \"udp:127.0.0.1:5060\" for one without a name)",
            );
        } else if let Some(first) = raw.source.iter().position(|x| x == s) {
            errors.push(
                path,
                format!(
                    "listener {s:?} is listed twice (also at {}[{first}]): list each once",
                    at("source")
                ),
            );
        } else {
            raw.source.push(s.clone());
        }
    }
    if let Some(h) = &m.header {
        let is_token = |c: char| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c);
        if h.name.is_empty() || !h.name.chars().all(is_token) {
            errors.push(
                at("header.name"),
                format!(
                    "header name {:?} is not a SIP header name: use letters, digits and '-', \
                     e.g. \"X-Tenant\"",
                    h.name
                ),
            );
        }
        let value = h.value.as_ref().map(|v| v.trim().to_string());
        if value.as_deref() == Some("") {
            errors.push(
                at("header.value"),
                "value is empty: to require only that the header is present, leave value out",
            );
        }
        raw.header = Some(HeaderCondition {
            name: h.name.clone(),
            value,
        });
    }
    raw
}

fn compile_tiers(
    r: usize,
    spec: &RouteSpec,
    names: &Names<'_>,
    errors: &mut Errors,
) -> Vec<TierRef> {
    let at = |key: &str| format!("route[{r}].{key}");
    let mut tiers = Vec::new();
    match (&spec.destinations, &spec.tiers) {
        (Some(_), Some(_)) => errors.push(
            at("tiers"),
            format!(
                "route {:?} has both destinations and tiers: keep one; tiers = [...] lists \
                 groups tried in order, destinations = [...] lists destinations tried in order",
                spec.name
            ),
        ),
        (None, None) => {
            let example = names
                .groups
                .first()
                .map(|g| format!("tiers = [{:?}]", g.name))
                .or_else(|| {
                    names
                        .destinations
                        .first()
                        .map(|d| format!("destinations = [{:?}]", d.name))
                })
                .unwrap_or_else(|| "destinations = [\"primary\"]".into());
            errors.push(
                at("tiers"),
                format!(
                    "route {:?} says nowhere to send its calls: add tiers (groups tried in \
                     order) or destinations (destinations tried in order), e.g. {example}",
                    spec.name
                ),
            );
        }
        (Some(list), None) => {
            if list.is_empty() {
                let example = names
                    .destinations
                    .first()
                    .map_or("primary", |d| d.name.as_str());
                errors.push(
                    at("destinations"),
                    format!(
                        "route {:?} lists no destinations: list at least one destination name, \
                         tried in order, e.g. destinations = [{example:?}]",
                        spec.name
                    ),
                );
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (k, name) in list.iter().enumerate() {
                let path = format!("route[{r}].destinations[{k}]");
                if let Some(&first) = seen.get(name.as_str()) {
                    errors.push(
                        path,
                        format!(
                            "destination {name:?} is listed twice in route {:?} (also at \
                             route[{r}].destinations[{first}]): list each destination once",
                            spec.name
                        ),
                    );
                    continue;
                }
                seen.insert(name, k);
                match names.dest_ids.get(name.as_str()) {
                    Some(&d) => tiers.push(TierRef::Destination(d)),
                    None => errors.push(path, unknown_destination(name, names.destinations)),
                }
            }
        }
        (None, Some(list)) => {
            if list.is_empty() {
                let example = names.groups.first().map_or("site-a", |g| g.name.as_str());
                errors.push(
                    at("tiers"),
                    format!(
                        "route {:?} lists no tiers: list the groups to try, in order, e.g. \
                         tiers = [{example:?}]",
                        spec.name
                    ),
                );
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let mut earlier: Vec<DestId> = Vec::new();
            for (k, name) in list.iter().enumerate() {
                let path = format!("route[{r}].tiers[{k}]");
                if let Some(&first) = seen.get(name.as_str()) {
                    errors.push(
                        path,
                        format!(
                            "group {name:?} is listed twice in route {:?} (also at \
                             route[{r}].tiers[{first}]): list each tier once",
                            spec.name
                        ),
                    );
                    continue;
                }
                seen.insert(name, k);
                let Some(&g) = names.group_ids.get(name.as_str()) else {
                    errors.push(path, unknown_group(name, names));
                    continue;
                };
                let group = &names.compiled_groups[g.0 as usize];
                if !group.members.is_empty()
                    && group.members.iter().all(|m| earlier.contains(&m.dest))
                {
                    errors.push(
                        path,
                        format!(
                            "tier {name:?} can never be tried in route {:?}: each of its members \
                             is already in an earlier tier, and a call tries a destination at \
                             most once; remove it from tiers, or give the group other members",
                            spec.name
                        ),
                    );
                }
                earlier.extend(group.members.iter().map(|m| m.dest));
                tiers.push(TierRef::Group(g));
            }
        }
    }
    tiers
}

fn compile_survivability(
    r: usize,
    route: &RouteSpec,
    s: &SurvivabilitySpec,
    tiers: &[TierRef],
    names: &Names<'_>,
    errors: &mut Errors,
) -> Option<SurvivalRule> {
    let at = |key: &str| format!("route[{r}].survivability.{key}");
    const FORMS: &str =
        "survivability = { group = \"lifeboat\" } or { reject = 503, retry_after = \"30s\" }";
    if s.retry_after.is_some() && s.reject.is_none() {
        errors.push(
            at("retry_after"),
            format!(
                "retry_after goes with reject (the Retry-After of the rejection): write {FORMS}"
            ),
        );
    }
    match (&s.group, s.reject) {
        (Some(_), Some(_)) => {
            errors.push(
                format!("route[{r}].survivability"),
                format!(
                    "survivability has both group and reject: when every tier is down a call \
                     either goes to a group or is rejected; keep one: {FORMS}"
                ),
            );
            None
        }
        (None, None) => {
            errors.push(
                format!("route[{r}].survivability"),
                format!("survivability says neither where to send calls nor how to reject them: write {FORMS}"),
            );
            None
        }
        (Some(name), None) => {
            let Some(&g) = names.group_ids.get(name.as_str()) else {
                errors.push(at("group"), unknown_group(name, names));
                return None;
            };
            let in_tiers = |d: DestId| {
                tiers.iter().any(|t| match *t {
                    TierRef::Destination(x) => x == d,
                    TierRef::Group(tg) => names.compiled_groups[tg.0 as usize]
                        .members
                        .iter()
                        .any(|m| m.dest == d),
                })
            };
            let group = &names.compiled_groups[g.0 as usize];
            if !group.members.is_empty() && group.members.iter().all(|m| in_tiers(m.dest)) {
                errors.push(
                    at("group"),
                    format!(
                        "survivability group {name:?} has no member outside the tiers of route \
                         {:?}: it applies when every tier is down, and then its members are down \
                         too; use a group of other destinations (e.g. a lifeboat), or \
                         {{ reject = 503, retry_after = \"30s\" }}",
                        route.name
                    ),
                );
            }
            Some(SurvivalRule::Group(g))
        }
        (None, Some(code)) => {
            if !(400..=699).contains(&code) {
                errors.push(
                    at("reject"),
                    format!(
                        "reject = {code} is not a rejection: use a 4xx, 5xx or 6xx code, usually \
                         503 (the carrier tries another route) or 480"
                    ),
                );
            }
            if let Some(d) = s.retry_after {
                if d.is_zero() || d.subsec_nanos() != 0 || d > MAX_RETRY_AFTER {
                    errors.push(
                        at("retry_after"),
                        format!(
                            "retry_after = \"{}\" is not a Retry-After: use whole seconds from \
                             1s to {}, e.g. \"30s\"",
                            fmt_duration(d),
                            fmt_duration(MAX_RETRY_AFTER)
                        ),
                    );
                }
            }
            Some(SurvivalRule::Reject {
                code,
                retry_after: s.retry_after,
            })
        }
    }
}

/// The flat try-order of a route's tiers with everything up, each destination once.
fn flatten(tiers: &[TierRef], groups: &[Group]) -> Vec<DestId> {
    let mut out: Vec<DestId> = Vec::new();
    for t in tiers {
        match *t {
            TierRef::Destination(d) => {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            TierRef::Group(g) => {
                for m in groups[g.0 as usize].ordered_members() {
                    if !out.contains(&m.dest) {
                        out.push(m.dest);
                    }
                }
            }
        }
    }
    out
}

fn check_ring_timeout(errors: &mut Errors, path: &str, ring_timeout: Duration) {
    if ring_timeout.is_zero() {
        errors.push(
            path,
            format!(
                "ring_timeout is 0s: every call would end as soon as it rings; set how long a \
                 call may ring, more than 0s and at most {} (default {})",
                fmt_duration(MAX_RING_TIMEOUT),
                fmt_duration(DEFAULT_RING_TIMEOUT)
            ),
        );
    } else if ring_timeout > MAX_RING_TIMEOUT {
        errors.push(
            path,
            format!(
                "ring_timeout {} is longer than {}: use the longest time a call may ring, in \
                 minutes (default {})",
                fmt_duration(ring_timeout),
                fmt_duration(MAX_RING_TIMEOUT),
                fmt_duration(DEFAULT_RING_TIMEOUT)
            ),
        );
    }
}

/// A `media_timeout`: `"0s"` (off), or from 1 s to a day. A shorter one would end calls on a
/// network hiccup; a longer one is no check.
fn check_media_timeout(errors: &mut Errors, path: &str, timeout: Option<Duration>) {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(24 * 3600);
    let Some(t) = timeout.filter(|t| !t.is_zero()) else {
        return;
    };
    if t < MIN || t > MAX {
        errors.push(
            path,
            format!(
                "media_timeout {} is {}: use a duration from {} to {} (default {}), or \"0s\" \
                 to turn the check off",
                fmt_duration(t),
                if t < MIN { "too short" } else { "too long" },
                fmt_duration(MIN),
                fmt_duration(MAX),
                fmt_duration(DEFAULT_MEDIA_TIMEOUT)
            ),
        );
    }
}

/// Checks a list of failover codes; errors name the index of each bad or repeated code.
fn check_codes(errors: &mut Errors, path: &str, codes: &[u16]) {
    for (i, &code) in codes.iter().enumerate() {
        if let Err(m) = check_failover_code(code) {
            errors.push(format!("{path}[{i}]"), m);
        } else if let Some(first) = codes[..i].iter().position(|&c| c == code) {
            errors.push(
                format!("{path}[{i}]"),
                format!("{code} is listed twice (also at {path}[{first}]): list each code once"),
            );
        }
    }
}

/// "known: "a", "b", and 3 more".
fn known_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    let total = unique.len();
    let mut known: Vec<String> = unique
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect();
    if total > SHOWN {
        known.push(format!("and {} more", total - SHOWN));
    }
    known.join(", ")
}

/// The message for a reference to a destination that does not exist.
fn unknown_destination(name: &str, destinations: &[DestinationSpec]) -> String {
    let names = || destinations.iter().map(|d| d.name.as_str());
    if destinations.is_empty() {
        return format!(
            "unknown destination {name:?}: there is no [[destination]] table; add one with \
             name = {name:?} and its address"
        );
    }
    if let Some(near) = closest(name, names()) {
        return format!("unknown destination {name:?}: did you mean {near:?}?");
    }
    format!(
        "unknown destination {name:?}: no [[destination]] has that name (known: {})",
        known_list(names())
    )
}

/// The message for a reference to a group that does not exist.
fn unknown_group(name: &str, names: &Names<'_>) -> String {
    let groups = || names.groups.iter().map(|g| g.name.as_str());
    if names.dest_ids.contains_key(name) {
        return format!(
            "{name:?} is a destination, not a group: tiers and survivability name groups; add \
             [[group]] name = {name:?} members = [{name:?}], or list destinations with \
             destinations = [...]"
        );
    }
    if names.groups.is_empty() {
        return format!(
            "unknown group {name:?}: there is no [[group]] table; add one with name = {name:?} \
             and its members"
        );
    }
    if let Some(near) = closest(name, groups()) {
        return format!("unknown group {name:?}: did you mean {near:?}?");
    }
    format!(
        "unknown group {name:?}: no [[group]] has that name (known: {})",
        known_list(groups())
    )
}

// ---- warnings ------------------------------------------------------------------------------

/// Routes that can never match, hot-hot routes whose media is not relayed, groups no route
/// uses, destinations nothing uses.
fn warnings(router: &Router, raw: &[RawConditions], specs: &[RouteSpec]) -> Vec<RuleError> {
    let mut out = Vec::new();
    out.extend(unrelayed_hot_hot(router, specs));
    for (j, rj) in raw.iter().enumerate() {
        if let Some(i) = shadowing_route(router, raw, j) {
            let (ni, nj) = (&specs[i].name, &specs[j].name);
            let why = if raw[i].present {
                "its conditions take every call this route's would"
            } else {
                "is a default route (no match), which takes every call"
            };
            out.push(RuleError {
                path: if rj.present {
                    format!("route[{j}].match")
                } else {
                    format!("route[{j}].name")
                },
                message: format!(
                    "route {nj:?} can never match: route {ni:?} (route[{i}]) comes before it \
                     and {why}; move route {nj:?} above route {ni:?}, narrow route {ni:?}, or \
                     remove route {nj:?}"
                ),
            });
        }
    }
    let mut group_used = vec![false; router.groups.len()];
    let mut dest_used = vec![false; router.rules.destinations.len()];
    for rr in &router.route_rules {
        let survival = match rr.survivability {
            Some(SurvivalRule::Group(g)) => Some(TierRef::Group(g)),
            _ => None,
        };
        for t in rr.tiers.iter().copied().chain(survival) {
            match t {
                TierRef::Destination(d) => dest_used[d.0 as usize] = true,
                TierRef::Group(g) => {
                    group_used[g.0 as usize] = true;
                    for m in &router.groups[g.0 as usize].members {
                        dest_used[m.dest.0 as usize] = true;
                    }
                }
            }
        }
    }
    for (g, used) in group_used.iter().enumerate() {
        if !used {
            out.push(RuleError {
                path: format!("group[{g}].name"),
                message: format!(
                    "group {:?} is not used by any route: name it in a route's tiers or \
                     survivability, or remove it",
                    router.groups[g].name
                ),
            });
        }
    }
    for (d, used) in dest_used.iter().enumerate() {
        if !used {
            out.push(RuleError {
                path: format!("destination[{d}].name"),
                message: format!(
                    "destination {:?} gets no calls: no route or group names it; add it to a \
                     group or a route, or remove it",
                    router.rules.destinations[d].name
                ),
            });
        }
    }
    out
}

/// Routes with a parallel tier (or a parallel survivability group) whose media is not relayed.
/// An explicit `media = "off"` is the operator's word that the clouds play no early media (or
/// that what the phone follows is fine): no warning then.
fn unrelayed_hot_hot(router: &Router, specs: &[RouteSpec]) -> Vec<RuleError> {
    let parallel = |t: TierRef| match t {
        TierRef::Group(g) => router
            .groups
            .get(g.0 as usize)
            .filter(|g| g.strategy == Strategy::Parallel)
            .map(|g| g.name.clone()),
        TierRef::Destination(_) => None,
    };
    let mut out = Vec::new();
    for (i, (spec, rr)) in specs.iter().zip(&router.route_rules).enumerate() {
        if spec.media.is_some() {
            continue;
        }
        let in_tiers = rr.tiers.iter().copied().find_map(parallel);
        let in_survival = match rr.survivability {
            Some(SurvivalRule::Group(g)) => parallel(TierRef::Group(g)),
            _ => None,
        };
        let (key, group) = match (in_tiers, in_survival) {
            (Some(g), _) => ("tiers", g),
            (None, Some(g)) => ("survivability", g),
            (None, None) => continue,
        };
        out.push(RuleError {
            path: format!("route[{i}].{key}"),
            message: format!(
                "route {:?} forks calls to the parallel group {group:?} but does not relay their \
                 media: hot-hot early media needs media = \"relay\": without it the carrier \
                 hears whichever cloud its phone follows and nothing switches when it fails; set \
                 media = \"relay\" (with a [media] section), or media = \"off\" if these \
                 clouds play no early media",
                spec.name
            ),
        });
    }
    out
}

/// The first route before `j` that takes every call `j` would, if any.
fn shadowing_route(router: &Router, raw: &[RawConditions], j: usize) -> Option<usize> {
    let rj = &raw[j];
    let mut candidates: Vec<RouteId> = router
        .numberless
        .iter()
        .copied()
        .take_while(|r| (r.0 as usize) < j)
        .collect();
    // A route that covers j's numbers covers its first one: look only at those.
    if let Some(first) = rj.to.first() {
        candidates.extend_from_slice(router.index.exact(first));
        router
            .index
            .prefixes_of(first.as_bytes(), |_, rs| candidates.extend_from_slice(rs));
    } else if let Some(first) = rj.to_prefix.first() {
        router
            .index
            .prefixes_of(first.as_bytes(), |_, rs| candidates.extend_from_slice(rs));
    }
    candidates.retain(|r| (r.0 as usize) < j);
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .map(|r| r.0 as usize)
        .find(|&i| covers(router, RouteId(i as u32), &raw[i], rj))
}

/// Whether every call that satisfies `j`'s conditions satisfies `i`'s.
fn covers(router: &Router, i_id: RouteId, i: &RawConditions, j: &RawConditions) -> bool {
    let prefix_covered =
        |p: &[u8], prefixes: &[Number]| prefixes.iter().any(|q| p.starts_with(q.as_bytes()));
    if i.has_number() {
        if !j.has_number() {
            return false;
        }
        let exact_ok = j.to.iter().all(|n| {
            router.index.exact(n).binary_search(&i_id).is_ok()
                || prefix_covered(n.as_bytes(), &i.to_prefix)
        });
        if !exact_ok
            || !j
                .to_prefix
                .iter()
                .all(|p| prefix_covered(p.as_bytes(), &i.to_prefix))
        {
            return false;
        }
    }
    if !i.from_prefix.is_empty()
        && (j.from_prefix.is_empty()
            || !j
                .from_prefix
                .iter()
                .all(|p| prefix_covered(p.as_bytes(), &i.from_prefix)))
    {
        return false;
    }
    if !i.source.is_empty()
        && (j.source.is_empty() || !j.source.iter().all(|s| i.source.contains(s)))
    {
        return false;
    }
    if let Some(hi) = &i.header {
        match &j.header {
            Some(hj) if hj.name.eq_ignore_ascii_case(&hi.name) => {
                if hi.value.is_some() && hi.value != hj.value {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}
