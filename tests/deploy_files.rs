//! The files an operator deploys beside pointsman (deploy/): the Grafana dashboard, the
//! Prometheus alerting rules and the systemd unit. A dashboard or an alert over a metric that
//! does not exist shows nothing and never fires, so every metric, label and label value they
//! name is checked against what a running pair of nodes really exports on `GET /metrics`.
//! Where they are installed (.ci/run installs promtool), `promtool check rules` checks the
//! rules' syntax and templates, `promtool test rules` that each alert fires on the series it
//! watches and not on others, and `systemd-analyze verify` and `security` the unit; where they
//! are not, the test says so on a line of its own.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::certs::Ca;
use support::*;

const LINK_PORT: u16 = 5800;

fn deploy_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(relative)
}

/// A line on the test's stderr that the test harness does not capture: a check skipped, for
/// the CI log.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("deploy_files: {line}\n").as_bytes());
}

fn read(relative: &str) -> String {
    let path = deploy_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// What a running node exports.

/// The series of one `GET /metrics`: metric name (as exported: `_bucket`, `_sum` and `_count`
/// for a histogram) → the label sets of its series.
struct Scrape {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(end);
            let mut labels = BTreeMap::new();
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.rfind('}').expect("a series' labels end with }");
                let mut chars = inner[..close].chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    if key.is_empty() {
                        break;
                    }
                    assert_eq!(chars.next(), Some('"'), "label value in {line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next()),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').trim().to_string(), value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
            }
            series.entry(name.to_string()).or_default().push(labels);
        }
        Scrape { series }
    }

    fn has(&self, name: &str) -> bool {
        self.series.contains_key(name)
    }

    /// The label names any series of `name` has.
    fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|l| l.keys().cloned())
            .collect()
    }

    /// The values label `label` takes across the series of `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get(label).cloned())
            .collect()
    }

    /// The base names (a histogram's without its suffixes), for a failure message.
    fn base_names(&self) -> BTreeSet<String> {
        self.series
            .keys()
            .map(|n| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        let base = n.strip_suffix(s)?;
                        self.has(&format!("{base}_bucket"))
                            .then(|| base.to_string())
                    })
                    .unwrap_or_else(|| n.clone())
            })
            .collect()
    }
}

/// Node `i` (id `i + 1`) of a pair on `ips`, its link's PEM files in `dir`: two destinations
/// (nothing listens there; probes off) on one route.
fn pair_config(i: usize, ips: &[IpAddr; 2], dir: &Path) -> String {
    let ip = ips[i];
    format!(
        r#"[node]
id = {id}
workers = 1

[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"

[admin]
listen = "{ip}:{ADMIN_PORT}"

[cluster]
listen = "{ip}:{LINK_PORT}"
peers = [{{ id = {peer}, address = "{peer_ip}:{LINK_PORT}" }}]
cert = "{dir}/node-{i}.pem"
key = "{dir}/node-{i}.key"
ca = "{dir}/ca.pem"

[[destination]]
name = "primary"
address = "{ip}:{PRIMARY_PORT}"
probe = false

[[destination]]
name = "secondary"
address = "{ip}:{SECONDARY_PORT}"
probe = false

[[route]]
name = "default"
destinations = ["primary", "secondary"]
"#,
        id = i + 1,
        peer = 2 - i,
        peer_ip = ips[1 - i],
        dir = dir.display(),
    )
}

/// What node 1 of a linked pair exports once its link is up: every series of a node, those of
/// a pair included. Taken once for the whole test binary; the nodes are stopped right after.
async fn scrape() -> &'static Scrape {
    static SCRAPE: tokio::sync::OnceCell<Scrape> = tokio::sync::OnceCell::const_new();
    SCRAPE
        .get_or_init(|| async {
            let ips = [fresh_ip(), fresh_ip()];
            let dir = std::env::temp_dir().join(format!(
                "pointsman-deploy-{}-{}",
                std::process::id(),
                ips[0]
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = Ca::new("deploy files ca");
            std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
            for (i, ip) in ips.iter().enumerate() {
                let node = ca.node(*ip);
                std::fs::write(dir.join(format!("node-{i}.pem")), node.cert).unwrap();
                std::fs::write(dir.join(format!("node-{i}.key")), node.key).unwrap();
            }
            let node_1 = Node::start(&pair_config(0, &ips, &dir), at(ips[0], PROXY_PORT)).await;
            let node_2 = Node::start(&pair_config(1, &ips, &dir), at(ips[1], PROXY_PORT)).await;
            let admin = format!("{}:{ADMIN_PORT}", ips[0]);
            let deadline = Instant::now() + Duration::from_secs(10);
            let text = loop {
                let text = metric_text(&admin).await;
                if text.lines().any(|l| l == "pointsman_link_up{peer=\"2\"} 1") {
                    break text;
                }
                assert!(
                    Instant::now() < deadline,
                    "the pair's link never came up:\n--- node 1 ---\n{}\n--- node 2 ---\n{}",
                    node_1.log(),
                    node_2.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            drop((node_1, node_2));
            let _ = std::fs::remove_dir_all(&dir);
            Scrape::parse(&text)
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// PromQL, as far as the checks need it: the metric selectors of an expression and the label
// names it groups by.

/// A metric selector: `name{label op "value", ...}`.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`.
    grouping: Vec<String>,
}

/// PromQL's functions and aggregation operators: a name followed by `(` must be one.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "delta",
    "deriv",
    "floor",
    "group",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "stddev",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "vector",
];

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Whether `rest` starts with `by` or `without` (an aggregation's grouping before its
/// argument).
fn next_word_is_grouping(rest: &[char]) -> bool {
    let word: String = rest.iter().take_while(|&&c| is_ident(c)).collect();
    word == "by" || word == "without"
}

fn parse_query(expr: &str) -> Query {
    let chars: Vec<char> = expr.chars().collect();
    let mut q = Query::default();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        let mut s = String::new();
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            if let Some(&c) = chars.get(*i) {
                s.push(c);
            }
            *i += 1;
        }
        assert!(*i < chars.len(), "unterminated string in {expr}");
        *i += 1;
        s
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            string(&mut i);
        } else if c == '[' {
            // A range or a subquery: durations and Grafana's interval variables.
            let close = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .unwrap_or_else(|| panic!("unclosed [ in {expr}"));
            i += close + 1;
        } else if c == '$' {
            // A Grafana variable outside a string (e.g. in a range: handled above).
            i += 1;
            ident(&mut i);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.99`, `1e3`, `5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            panic!("a selector without a metric name in {expr}");
        } else if is_ident_start(c) {
            let word = ident(&mut i);
            skip_space(&mut i);
            let next = chars.get(i).copied();
            if GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    let close = chars[i..]
                        .iter()
                        .position(|&c| c == ')')
                        .unwrap_or_else(|| panic!("unclosed {word}( in {expr}"));
                    let list: String = chars[i + 1..i + close].iter().collect();
                    q.grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty()),
                    );
                    i += close + 1;
                }
            } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            } else if next == Some('(') || next_word_is_grouping(&chars[i..]) {
                // A function, or an aggregation: `sum(...)`, `sum by (label) (...)`.
                assert!(
                    FUNCTIONS.contains(&word.as_str()),
                    "{word}( is not a PromQL function in {expr}"
                );
            } else {
                let mut selector = Selector {
                    name: word,
                    matchers: Vec::new(),
                };
                if next == Some('{') {
                    i += 1;
                    loop {
                        skip_space(&mut i);
                        match chars.get(i) {
                            Some('}') => {
                                i += 1;
                                break;
                            }
                            Some(',') => {
                                i += 1;
                                continue;
                            }
                            Some(_) => {}
                            None => panic!("unclosed {{ in {expr}"),
                        }
                        let label = ident(&mut i);
                        assert!(!label.is_empty(), "a label name expected in {expr}");
                        skip_space(&mut i);
                        let op_start = i;
                        while i < chars.len() && "=!~".contains(chars[i]) {
                            i += 1;
                        }
                        let op: String = chars[op_start..i].iter().collect();
                        assert!(
                            ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                            "matcher operator {op:?} in {expr}"
                        );
                        skip_space(&mut i);
                        assert!(
                            matches!(chars.get(i), Some('"' | '\'' | '`')),
                            "a quoted label value expected in {expr}"
                        );
                        let value = string(&mut i);
                        selector.matchers.push((label, op, value));
                    }
                }
                q.selectors.push(selector);
            }
        } else {
            i += 1;
        }
    }
    q
}

#[test]
fn the_promql_reader_finds_selectors_and_grouping_labels() {
    let q = parse_query(
        r#"histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~"$job", x="y"}[$__rate_interval])))
           / on (instance) group_left sum(b) > bool 0.5 and c offset 5m"#,
    );
    let names: Vec<&str> = q.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(q.grouping, ["le", "instance", "instance"]);
    assert_eq!(
        q.selectors[0].matchers,
        [
            ("job".to_string(), "=~".to_string(), "$job".to_string()),
            ("x".to_string(), "=".to_string(), "y".to_string())
        ]
    );
}

/// Labels Prometheus adds to every scraped series: a query may group or match on them though
/// the node does not export them.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Checks one query against the scrape: every metric exists (or is in `extra`), every equality
/// matcher's label value exists on it, every grouping label exists on one of its metrics.
/// Returns the label names its result can carry (for legends and alert templates), or the
/// problems found.
fn check_query(
    expr: &str,
    scrape: &Scrape,
    extra: &[&str],
) -> Result<BTreeSet<String>, Vec<String>> {
    let q = parse_query(expr);
    let mut problems = Vec::new();
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    if q.selectors.is_empty() {
        problems.push(format!("no metric in {expr}"));
    }
    for s in &q.selectors {
        if extra.contains(&s.name.as_str()) {
            continue;
        }
        if !scrape.has(&s.name) {
            problems.push(format!(
                "{} is not a metric a running node exports (in {expr})",
                s.name
            ));
            continue;
        }
        let names = scrape.label_names(&s.name);
        labels.extend(names.iter().cloned());
        for (label, op, value) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !names.contains(label) {
                problems.push(format!("{} has no label {label} (in {expr})", s.name));
            } else if op == "=" && !value.contains('$') {
                let values = scrape.label_values(&s.name, label);
                if !values.contains(value) {
                    problems.push(format!(
                        "{}{{{label}=\"{value}\"}} matches no series: {label} is one of {values:?}",
                        s.name
                    ));
                }
            }
        }
    }
    for g in &q.grouping {
        if !labels.contains(g) {
            problems.push(format!(
                "grouping label {g} is on none of the metrics of {expr}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(labels)
    } else {
        Err(problems)
    }
}

/// The names inside `{{ }}` of a Grafana legend (`{{destination}}`) or an alert template
/// (`{{ $labels.destination }}`: `prefix` = `$labels.`).
fn template_labels(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + end].trim();
        rest = &rest[start + end + 2..];
        if prefix.is_empty() {
            out.push(inner.to_string());
        } else {
            let mut from = inner;
            while let Some(at) = from.find(prefix) {
                let name: String = from[at + prefix.len()..]
                    .chars()
                    .take_while(|&c| is_ident(c))
                    .collect();
                from = &from[at + prefix.len()..];
                out.push(name);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The dashboard.

/// Every panel, rows' nested panels included.
fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        all_panels(&p["panels"], out);
    }
}

/// The value → text of a panel's value mappings.
fn mappings(panel: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in panel["fieldConfig"]["defaults"]["mappings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if m["type"] == "value" {
            for (value, o) in m["options"].as_object().into_iter().flatten() {
                out.insert(
                    value.clone(),
                    o["text"].as_str().unwrap_or_default().to_string(),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn the_grafana_dashboard_shows_only_metrics_a_running_node_exports() {
    let text = read("grafana/pointsman.json");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let scrape = scrape().await;
    let mut problems = Vec::new();

    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(
        dash["__inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the dashboard asks for its Prometheus data source as the DS_PROMETHEUS input"
    );
    let ds_ok = |ds: &Value| ds["type"] == "prometheus" && ds["uid"] == "${DS_PROMETHEUS}";

    // The template variables: label_values(METRIC{...}, LABEL).
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("?");
        if !ds_ok(&v["datasource"]) {
            problems.push(format!(
                "variable {name}: data source is not ${{DS_PROMETHEUS}}"
            ));
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: {query} is not label_values(...)"));
        let (selector, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
        match check_query(selector, scrape, &[]) {
            Ok(labels) if labels.contains(label.trim()) => {}
            Ok(_) => problems.push(format!("variable {name}: no label {label} on {selector}")),
            Err(p) => problems.extend(p),
        }
    }

    let mut panels = Vec::new();
    all_panels(&dash["panels"], &mut panels);
    let mut ids = HashSet::new();
    let mut used = BTreeSet::new();
    let mut cells: HashMap<(u64, u64), String> = HashMap::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        if !ids.insert(p["id"].as_u64().expect("every panel has an id")) {
            problems.push(format!("{title}: panel id used twice"));
        }
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        if w == 0 || h == 0 || x + w > 24 {
            problems.push(format!("{title}: gridPos {g} is off the 24 columns"));
        }
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    problems.push(format!("{title} overlaps {other}"));
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        if !ds_ok(&p["datasource"]) {
            problems.push(format!("{title}: data source is not ${{DS_PROMETHEUS}}"));
        }
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        if unit.is_empty() {
            problems.push(format!("{title}: no unit"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        let mut metrics = BTreeSet::new();
        for t in &targets {
            if !ds_ok(&t["datasource"]) {
                problems.push(format!(
                    "{title}: a query's data source is not ${{DS_PROMETHEUS}}"
                ));
            }
            let expr = t["expr"].as_str().expect("every query has an expr");
            match check_query(expr, scrape, &[]) {
                Ok(labels) => {
                    let legend = t["legendFormat"].as_str().unwrap_or_default();
                    for l in template_labels(legend, "") {
                        if !labels.contains(&l) {
                            problems.push(format!(
                                "{title}: legend {{{{{l}}}}} is not a label of {expr}"
                            ));
                        }
                    }
                }
                Err(p) => problems.extend(p.into_iter().map(|p| format!("{title}: {p}"))),
            }
            let q = parse_query(expr);
            metrics.extend(q.selectors.into_iter().map(|s| s.name));
            if expr.trim_start().starts_with("histogram_quantile(") {
                if unit != "s" {
                    problems.push(format!(
                        "{title}: a quantile of seconds in unit {unit:?}, not s"
                    ));
                }
            } else if expr.contains("rate(") && !expr.contains('/') && unit != "ops" {
                problems.push(format!("{title}: a rate in unit {unit:?}, not ops"));
            }
        }
        // The states' gauges show their names, as the code names them.
        let expected = if metrics.contains("pointsman_destination_state") {
            Some(
                pointsman_protocol::health::State::ALL
                    .iter()
                    .map(|s| (s.as_u8().to_string(), s.as_str().to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        } else if metrics.contains("pointsman_node_state") {
            use pointsman_protocol::metrics::NodeState;
            Some(
                [
                    NodeState::Serving,
                    NodeState::Draining,
                    NodeState::Stopping,
                    NodeState::Syncing,
                ]
                .iter()
                .map(|s| (s.code().to_string(), s.as_str().to_string()))
                .collect(),
            )
        } else {
            None
        };
        if let Some(expected) = expected {
            if mappings(p) != expected {
                problems.push(format!(
                    "{title}: value mappings {:?}, the code's states are {expected:?}",
                    mappings(p)
                ));
            }
        }
        used.extend(metrics);
    }
    // What the dashboard is for (issue 19): each of these has a panel.
    for needed in [
        "pointsman_calls_total",
        "pointsman_failovers_total",
        "pointsman_destination_state",
        "pointsman_post_dial_delay_seconds_bucket",
        "pointsman_ghost_calls_torn_down_total",
        "pointsman_dropped_total",
        "pointsman_udp_transit_seconds_bucket",
        "pointsman_calls_in_progress",
        "pointsman_node_state",
        "pointsman_link_up",
        "pointsman_cluster_adopted_total",
        "pointsman_cluster_takeover_seconds_bucket",
    ] {
        if !used.contains(needed) {
            problems.push(format!("no panel shows {needed}"));
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/grafana/pointsman.json:\n  {}\nmetrics a node exports: {:?}",
        problems.join("\n  "),
        scrape.base_names()
    );
}

// ---------------------------------------------------------------------------------------------
// The alerting rules.

/// A Prometheus duration (`30s`, `1m`, `1h30m`).
fn prometheus_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => {
                total += Duration::from_millis(n);
                rest = &rest[unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "y" => 31_536_000,
            _ => return None,
        };
        total += Duration::from_secs(n * secs);
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn alert_rules() -> Value {
    let text = read("prometheus/pointsman-alerts.yml");
    serde_norway::from_str(&text).expect("the alert rules are valid YAML")
}

#[tokio::test]
async fn the_alert_rules_watch_only_metrics_a_running_node_exports() {
    let rules = alert_rules();
    let scrape = scrape().await;
    let mut problems = Vec::new();
    let mut alerts: BTreeMap<String, Value> = BTreeMap::new();
    let groups = rules["groups"].as_array().expect("groups: a list");
    assert!(!groups.is_empty(), "no group");
    let mut group_names = HashSet::new();
    for group in groups {
        let gname = group["name"].as_str().expect("every group has a name");
        assert!(group_names.insert(gname), "group {gname} twice");
        for rule in group["rules"].as_array().expect("rules: a list") {
            let name = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("{gname}: a rule without alert: {rule}"))
                .to_string();
            let expr = rule["expr"].as_str().unwrap_or_default();
            let labels = match check_query(expr, scrape, &["up"]) {
                Ok(labels) => labels,
                Err(p) => {
                    problems.extend(p.into_iter().map(|p| format!("{name}: {p}")));
                    BTreeSet::new()
                }
            };
            for s in parse_query(expr)
                .selectors
                .iter()
                .filter(|s| s.name == "up")
            {
                if !s
                    .matchers
                    .iter()
                    .any(|m| m == &("job".into(), "=".into(), "pointsman".into()))
                {
                    problems.push(format!("{name}: up without job=\"pointsman\""));
                }
            }
            if rule["for"].as_str().and_then(prometheus_duration).is_none() {
                problems.push(format!("{name}: for: {} is not a duration", rule["for"]));
            }
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            if !["critical", "warning", "info"].contains(&severity) {
                problems.push(format!("{name}: severity {severity:?}"));
            }
            for key in ["summary", "description"] {
                let text = rule["annotations"][key].as_str().unwrap_or_default();
                if text.trim().is_empty() {
                    problems.push(format!("{name}: no {key}"));
                }
                if !labels.is_empty() {
                    for l in template_labels(text, "$labels.") {
                        if !labels.contains(&l) {
                            problems.push(format!(
                                "{name}: {key} names $labels.{l}, not a label of {expr}"
                            ));
                        }
                    }
                }
                // A rule whose alerts keep the destination label says which destination.
                let grouping = parse_query(expr).grouping;
                if labels.contains("destination")
                    && (grouping.is_empty() || grouping.iter().any(|g| g == "destination"))
                    && !text.contains("{{ $labels.destination }}")
                {
                    problems.push(format!(
                        "{name}: {key} does not name {{{{ $labels.destination }}}}"
                    ));
                }
            }
            if alerts.insert(name.clone(), rule.clone()).is_some() {
                problems.push(format!("{name} twice"));
            }
        }
    }
    for needed in [
        "PointsmanDestinationDown",
        "PointsmanFailoverRateHigh",
        "PointsmanDestinationAtCap",
        "PointsmanGhostCalls",
        "PointsmanOverloadShedding",
        "PointsmanLinkDown",
        "PointsmanNodeStuckSyncing",
        "PointsmanTargetDown",
    ] {
        if !alerts.contains_key(needed) {
            problems.push(format!("no alert {needed}"));
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/prometheus/pointsman-alerts.yml:\n  {}\nmetrics a node exports: {:?}",
        problems.join("\n  "),
        scrape.base_names()
    );

    // The waits that the code bounds: an alert must not fire on what the node does by design.
    let for_of = |name: &str| prometheus_duration(alerts[name]["for"].as_str().unwrap()).unwrap();
    let longest_sync = pointsman::cluster::sync_bound(pointsman::config::MAX_DEAD_AFTER);
    assert!(
        for_of("PointsmanNodeStuckSyncing") > longest_sync,
        "a node may sync for {longest_sync:?}"
    );
    assert!(
        for_of("PointsmanNodeStuckStopping") > pointsman::config::MAX_SHUTDOWN_GRACE,
        "a node may stop for up to the longest shutdown_grace"
    );
    assert!(
        for_of("PointsmanLinkDown") > pointsman::config::MAX_DEAD_AFTER,
        "a link is declared dead after up to the longest dead_after"
    );
    assert!(alerts["PointsmanOverloadShedding"]["expr"]
        .as_str()
        .unwrap()
        .contains(r#"pointsman_dropped_total{reason="overload"}"#));
    assert!(alerts["PointsmanDestinationDown"]["expr"]
        .as_str()
        .unwrap()
        .contains("pointsman_destination_state == 0"));
}

/// `promtool test rules` input: series that must fire each alert named in issue 19 (with the
/// labels it must carry) and series that must not. Run on the rules without their annotations
/// (promtool would compare their rendered text too).
const PROMTOOL_TESTS: &str = r#"rule_files: [rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'pointsman_destination_state{job="pointsman",instance="a:9060",destination="primary"}'
        values: '1 1 0x20'
      - series: 'pointsman_destination_state{job="pointsman",instance="a:9060",destination="secondary"}'
        values: '1x22'
      - series: 'pointsman_destination_state{job="pointsman",instance="b:9060",destination="primary"}'
        values: '0x22'
      - series: 'pointsman_destination_state{job="pointsman",instance="b:9060",destination="secondary"}'
        values: '3x22'
      - series: 'pointsman_destination_state{job="pointsman",instance="c:9060",destination="primary"}'
        values: '0x22'
      - series: 'pointsman_destination_state{job="pointsman",instance="c:9060",destination="secondary"}'
        values: '5x22'
    alert_rule_test:
      - eval_time: 1m
        alertname: PointsmanDestinationDown
        exp_alerts:
          - exp_labels: {severity: warning, job: pointsman, instance: "b:9060", destination: primary}
          - exp_labels: {severity: warning, job: pointsman, instance: "c:9060", destination: primary}
      - eval_time: 2m
        alertname: PointsmanDestinationDown
        exp_alerts:
          - exp_labels: {severity: warning, job: pointsman, instance: "a:9060", destination: primary}
          - exp_labels: {severity: warning, job: pointsman, instance: "b:9060", destination: primary}
          - exp_labels: {severity: warning, job: pointsman, instance: "c:9060", destination: primary}
      - eval_time: 2m
        alertname: PointsmanNoDestinationTakesCalls
        exp_alerts:
          - exp_labels: {severity: critical, job: pointsman, instance: "b:9060"}
  - interval: 15s
    input_series:
      - series: 'pointsman_failovers_total{job="pointsman",instance="a:9060",destination="primary",reason="timeout"}'
        values: '0+2x60'
      - series: 'pointsman_failovers_total{job="pointsman",instance="a:9060",destination="primary",reason="code"}'
        values: '0x60'
      - series: 'pointsman_branch_attempts_total{job="pointsman",instance="a:9060",destination="primary"}'
        values: '0+10x60'
      - series: 'pointsman_failovers_total{job="pointsman",instance="a:9060",destination="secondary",reason="timeout"}'
        values: '0+1x60'
      - series: 'pointsman_branch_attempts_total{job="pointsman",instance="a:9060",destination="secondary"}'
        values: '0+20x60'
      - series: 'pointsman_destination_capped_total{job="pointsman",instance="a:9060",destination="byoc",cap="calls"}'
        values: '0+3x60'
      - series: 'pointsman_destination_capped_total{job="pointsman",instance="a:9060",destination="byoc",cap="cps"}'
        values: '0 5 5x59'
    alert_rule_test:
      - eval_time: 9m
        alertname: PointsmanDestinationAtCap
        exp_alerts: []
      - eval_time: 12m
        alertname: PointsmanDestinationAtCap
        exp_alerts:
          - exp_labels: {severity: warning, job: pointsman, instance: "a:9060", destination: byoc, cap: calls}
      - eval_time: 4m
        alertname: PointsmanFailoverRateHigh
        exp_alerts: []
      - eval_time: 12m
        alertname: PointsmanFailoverRateHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: pointsman, instance: "a:9060", destination: primary}
  - interval: 15s
    input_series:
      - series: 'pointsman_ghost_calls_torn_down_total{job="pointsman",instance="a:9060"}'
        values: '0 0 1 2 3 4 5 5x40'
      - series: 'pointsman_ghost_calls_torn_down_total{job="pointsman",instance="b:9060"}'
        values: '0 0 1 1x40'
      - series: 'pointsman_dropped_total{job="pointsman",instance="a:9060",reason="overload"}'
        values: '0x4 0+5x40'
      - series: 'pointsman_dropped_total{job="pointsman",instance="b:9060",reason="overload"}'
        values: '0x44'
      - series: 'pointsman_dropped_total{job="pointsman",instance="b:9060",reason="stray"}'
        values: '0+5x44'
    alert_rule_test:
      - eval_time: 5m
        alertname: PointsmanGhostCalls
        exp_alerts:
          - exp_labels: {severity: warning, job: pointsman, instance: "a:9060"}
      - eval_time: 5m
        alertname: PointsmanOverloadShedding
        exp_alerts:
          - exp_labels: {severity: critical, job: pointsman, instance: "a:9060"}
  - interval: 15s
    input_series:
      - series: 'pointsman_link_up{job="pointsman",instance="a:9060",peer="2"}'
        values: '1 1 0x20'
      - series: 'pointsman_link_up{job="pointsman",instance="b:9060",peer="1"}'
        values: '1x22'
      - series: 'pointsman_node_state{job="pointsman",instance="a:9060"}'
        values: '3x22'
      - series: 'pointsman_node_state{job="pointsman",instance="b:9060"}'
        values: '0x22'
      - series: 'up{job="pointsman",instance="a:9060"}'
        values: '0x22'
      - series: 'up{job="pointsman",instance="b:9060"}'
        values: '1x22'
    alert_rule_test:
      - eval_time: 1m30s
        alertname: PointsmanLinkDown
        exp_alerts:
          - exp_labels: {severity: critical, job: pointsman, instance: "a:9060", peer: "2"}
      - eval_time: 3m
        alertname: PointsmanNodeStuckSyncing
        exp_alerts:
          - exp_labels: {severity: critical, job: pointsman, instance: "a:9060"}
      - eval_time: 2m
        alertname: PointsmanTargetDown
        exp_alerts:
          - exp_labels: {severity: critical, job: pointsman, instance: "a:9060"}
"#;

#[test]
fn promtool_accepts_the_alert_rules_and_they_fire_on_what_they_watch() {
    let run = |args: &[&str], dir: &Path| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| e.kind())?;
        assert!(
            out.status.success(),
            "promtool {args:?} in {}:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok::<(), std::io::ErrorKind>(())
    };
    let deploy = deploy_file("prometheus");
    match run(&["check", "rules", "pointsman-alerts.yml"], &deploy) {
        Ok(()) => {}
        Err(std::io::ErrorKind::NotFound) => {
            say("SKIPPED: promtool is not installed (Debian package prometheus): `promtool check rules` and `promtool test rules` not run");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    }
    let mut rules = alert_rules();
    for group in rules["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = std::env::temp_dir().join(format!("pointsman-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rules.yml"),
        serde_norway::to_string(&rules).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("tests.yml"), PROMTOOL_TESTS).unwrap();
    run(&["test", "rules", "tests.yml"], &dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_prometheus_duration_reader() {
    assert_eq!(prometheus_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(
        prometheus_duration("1h30m"),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(prometheus_duration("0m"), Some(Duration::ZERO));
    assert_eq!(
        prometheus_duration("500ms"),
        Some(Duration::from_millis(500))
    );
    assert_eq!(prometheus_duration("5 minutes"), None);
    assert_eq!(prometheus_duration(""), None);
}

// ---------------------------------------------------------------------------------------------
// The systemd unit.

/// The unit's `[Section]` → key → values in file order (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        assert!(!section.is_empty(), "{key} outside a section");
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

/// A systemd time span (`40s`, `1min 30s`, a bare number of seconds).
fn systemd_timespan(text: &str) -> Option<Duration> {
    let text: String = text.split_whitespace().collect();
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Some(Duration::from_secs(text.parse().ok()?));
    }
    prometheus_duration(&text.replace("min", "m").replace("sec", "s"))
}

/// The command line of a unit's `Exec*=` value, its prefixes (`-`, `@`, `+`, ...) left out.
fn command_line(value: &str) -> Vec<String> {
    value
        .trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .map(String::from)
        .collect()
}

const UNIT_BINARY: &str = "/usr/local/bin/pointsman";
const UNIT_CONFIG: &str = "/etc/pointsman/pointsman.toml";

#[test]
fn the_systemd_unit_runs_the_real_command_line_hardened() {
    let unit = parse_unit(&read("systemd/pointsman.service"));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([v]) => v.as_str(),
            other => panic!("[Service] {key}: one value expected, got {other:?}"),
        }
    };
    let words = |key: &str| -> BTreeSet<String> {
        service
            .get(key)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split_whitespace().map(String::from))
            .collect()
    };

    // The command line: the cargo binary `pointsman` (proxy/Cargo.toml), `run --config`.
    assert_eq!(
        command_line(one("ExecStart")),
        [UNIT_BINARY, "run", "--config", UNIT_CONFIG]
    );
    let reload: Vec<Vec<String>> = service["ExecReload"]
        .iter()
        .map(|v| command_line(v))
        .collect();
    assert_eq!(
        reload.last().unwrap(),
        &["/bin/kill", "-HUP", "$MAINPID"],
        "reload is SIGHUP to the node"
    );
    // Every `pointsman check` the unit runs, run on a config of ours with this build.
    let ip = fresh_ip();
    let dir = std::env::temp_dir().join(format!("pointsman-unit-{}-{ip}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pointsman.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}\n[[route]]\nname = \"default\"\ndestinations = [\"cloud\"]\n",
            node_section(ip),
            destination("cloud", ip, PRIMARY_PORT, "1s")
        ),
    )
    .unwrap();
    let checks = service
        .get("ExecStartPre")
        .into_iter()
        .flatten()
        .chain(&service["ExecReload"])
        .map(|v| command_line(v))
        .filter(|c| c[0] == UNIT_BINARY);
    let mut checked = 0;
    for c in checks {
        assert_eq!(c[1..], ["check", "--config", UNIT_CONFIG]);
        let out = Command::new(env!("CARGO_BIN_EXE_pointsman-node"))
            .args(&c[1..c.len() - 1])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c:?} on a valid config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "the unit checks the config before it starts");
    // A stop is a drain of up to shutdown_grace; systemd must not SIGKILL the node in it.
    assert_eq!(one("KillSignal"), "SIGTERM");
    let timeout = systemd_timespan(one("TimeoutStopSec")).expect("TimeoutStopSec");
    assert!(
        timeout >= pointsman::config::DEFAULT_SHUTDOWN_GRACE + Duration::from_secs(5),
        "TimeoutStopSec {timeout:?} leaves no margin over the default shutdown_grace"
    );

    // The hardening.
    for (key, value) in [
        ("User", "pointsman"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ConfigurationDirectory", "pointsman"),
        ("MemoryDenyWriteExecute", "yes"),
        ("Restart", "on-failure"),
        ("SystemCallArchitectures", "native"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}");
    }
    let caps: BTreeSet<String> = ["CAP_NET_BIND_SERVICE", "CAP_SYS_NICE"]
        .map(String::from)
        .into();
    assert_eq!(words("AmbientCapabilities"), caps);
    assert_eq!(words("CapabilityBoundingSet"), caps);
    let families = words("RestrictAddressFamilies");
    for needed in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.contains(needed),
            "RestrictAddressFamilies lacks {needed}"
        );
    }
    assert!(
        families
            .iter()
            .all(|f| ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"].contains(&f.as_str())),
        "RestrictAddressFamilies allows more than pointsman uses: {families:?}"
    );
    assert!(words("SystemCallFilter").contains("@system-service"));
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65_536);
    assert!(one("LimitRTPRIO").parse::<u8>().unwrap() >= 1);
    // Options that would break what the node does: SCHED_FIFO workers, low ports.
    assert!(
        !service.contains_key("RestrictRealtime"),
        "RestrictRealtime refuses SCHED_FIFO"
    );
    assert!(
        !service.contains_key("PrivateUsers"),
        "PrivateUsers confines the capabilities to a user namespace: no low ports"
    );
    assert!(
        words("SystemCallFilter").iter().all(|f| f != "~@resources"),
        "sched_setscheduler and setrlimit are in @resources"
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit with its binary replaced by this build's (systemd-analyze verify wants an
/// executable there), in a directory of its own.
fn unit_with_this_build() -> (PathBuf, PathBuf) {
    let text = read("systemd/pointsman.service")
        .replace(UNIT_BINARY, env!("CARGO_BIN_EXE_pointsman-node"));
    let dir = std::env::temp_dir().join(format!(
        "pointsman-unit-verify-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pointsman.service");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        say("SKIPPED: systemd-analyze is not installed: `systemd-analyze verify` not run");
        return;
    }
    let (dir, path) = unit_with_this_build();
    // verify exits 0 on a key it ignores (unknown, or a value it cannot parse): any line it
    // prints fails the test too.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify deploy/systemd/pointsman.service:\n{said}"
    );
    // Its exposure score (0 to 10, lower is safer): 2.5 at most.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let score = said
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no exposure level");
    say(&format!("systemd-analyze security: {}", score.trim()));
    assert!(
        out.status.success(),
        "systemd-analyze security: exposure above 2.5:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
