//! `docs/config.md` against the loader. The keys the loader takes are found by asking it: a key
//! `zz_undocumented` put in a table makes serde say which keys that table expects ("unknown
//! field `zz_undocumented`, expected one of `a`, `b`, ..."), and putting such a table in place
//! of each of those keys, and of the first element of each, finds the nested tables (no list of
//! keys is kept here). Every key found must have its row in the reference, every row must name
//! a key found, and the reference's complete example must load without an error or a warning.

use super::*;
use crate::transport::tls::tests::{dir, Ca};
use std::collections::BTreeSet;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");

/// The key put into each table to make the loader list the table's keys.
const PROBE: &str = "zz_undocumented";

/// A valid config with one entry of each array section, for the probes to go into.
const PROBED: &str = r#"[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "primary"
address = "10.0.0.1:5060"

[[group]]
name = "primaries"
members = ["primary"]

[[route]]
name = "default"
tiers = ["primaries"]
"#;

/// One step of a key path: a key, or the first element of an array.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    First,
}

/// The path as the loader reports it (`destination[0].request_uri`).
fn loader_path(at: &[Seg]) -> String {
    shown(at, "[0]")
}

/// The path as the reference writes it (`destination[].request_uri`).
fn doc_path(at: &[Seg]) -> String {
    shown(at, "[]")
}

fn shown(at: &[Seg], index: &str) -> String {
    let mut out = String::new();
    for seg in at {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::First => out.push_str(index),
        }
    }
    out
}

/// The table at `at` in `t`, made a table (or an array whose first element is one) where it
/// is not.
fn table_at<'t>(t: &'t mut toml::Table, at: &[Seg]) -> &'t mut toml::Table {
    let Some((Seg::Key(key), rest)) = at.split_first() else {
        return t;
    };
    let slot = t.entry(key.clone()).or_insert(toml::Value::Boolean(false));
    let (table, rest) = match rest.split_first() {
        Some((Seg::First, rest)) => {
            if !slot.is_array() {
                *slot = toml::Value::Array(Vec::new());
            }
            let array = slot.as_array_mut().expect("an array");
            if array.is_empty() {
                array.push(toml::Value::Table(toml::Table::new()));
            }
            (&mut array[0], rest)
        }
        _ => (slot, rest),
    };
    if !table.is_table() {
        *table = toml::Value::Table(toml::Table::new());
    }
    table_at(table.as_table_mut().expect("a table"), rest)
}

/// The keys the table at `at` takes, as the loader lists them; `None` when nothing there reads
/// as a table.
fn keys_of(at: &[Seg]) -> Option<Vec<String>> {
    let mut root: toml::Table = PROBED.parse().expect("PROBED is TOML");
    table_at(&mut root, at).insert(PROBE.into(), toml::Value::Integer(1));
    let text = toml::to_string(&root).expect("serialisable");
    let errs = match Config::parse(&text, "probe.toml") {
        Ok(_) => panic!("{PROBE} in {} was accepted:\n{text}", loader_path(at)),
        Err(e) => e.0,
    };
    let unknown = format!("unknown field `{PROBE}`");
    let e = errs.iter().find(|e| e.message.starts_with(&unknown))?;
    let mut want = loader_path(at);
    if !want.is_empty() {
        want.push('.');
    }
    want.push_str(PROBE);
    assert_eq!(e.path, want, "{e}\n{text}");
    // "..., expected one of `a`, `b`" / "expected `a` or `b`"; a did-you-mean follows a ';'.
    let list = e.message.split(';').next().unwrap_or_default();
    let (_, expected) = list.split_once("expected").expect("serde lists the keys");
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every table the loader reads (root first), with its keys.
fn loader_tables() -> Vec<(Vec<Seg>, Vec<String>)> {
    let mut found = Vec::new();
    let mut pending = vec![(
        Vec::new(),
        keys_of(&[]).expect("the root lists its sections"),
    )];
    while let Some((at, keys)) = pending.pop() {
        for key in &keys {
            let mut table = at.clone();
            table.push(Seg::Key(key.clone()));
            let mut element = table.clone();
            element.push(Seg::First);
            for candidate in [table, element] {
                if let Some(inner) = keys_of(&candidate) {
                    pending.push((candidate, inner));
                }
            }
        }
        found.push((at, keys));
    }
    found
}

/// What the reference says: its section headings (`` ## `[node]` ``, `` ## `[[listen]]` ``)
/// as (name, array?) in order, and the rows of its key tables (those whose header starts
/// `| key |`) as (key, cells).
struct Reference {
    sections: Vec<(String, bool)>,
    rows: Vec<(String, Vec<String>)>,
    text: String,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(DOC).expect("docs/config.md is readable");
    let mut sections = Vec::new();
    let mut rows = Vec::new();
    let mut in_keys = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## `[") {
            let array = title.starts_with('[');
            let name = title.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or_default();
            sections.push((name.to_string(), array));
        }
        if !line.starts_with('|') {
            in_keys = false;
            continue;
        }
        if line.starts_with("| key |") {
            in_keys = true;
            continue;
        }
        if !in_keys || line.starts_with("| ---") {
            continue;
        }
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        let key = cells[0]
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .unwrap_or_else(|| panic!("a key row must start with a `key`: {line}"));
        rows.push((key.to_string(), cells));
    }
    Reference {
        sections,
        rows,
        text,
    }
}

/// Every key the loader takes, as the reference writes them, and its sections as (name,
/// array?) in the loader's order.
fn loader_keys() -> (BTreeSet<String>, Vec<(String, bool)>) {
    let tables = loader_tables();
    let is_table = |at: &[Seg]| tables.iter().any(|(t, _)| t == at);
    let mut keys = BTreeSet::new();
    let mut sections = Vec::new();
    for (at, names) in &tables {
        for name in names {
            if at.is_empty() {
                let array = is_table(&[Seg::Key(name.clone()), Seg::First]);
                sections.push((name.clone(), array));
            } else {
                keys.insert(format!("{}.{name}", doc_path(at)));
            }
        }
    }
    // The root's list is in the loader's order; sections are found in another.
    let root = &tables.iter().find(|(at, _)| at.is_empty()).expect("root").1;
    sections.sort_by_key(|(name, _)| root.iter().position(|r| r == name));
    (keys, sections)
}

#[test]
fn every_key_the_loader_takes_is_in_the_reference_and_every_documented_key_is_taken() {
    let (keys, sections) = loader_keys();
    // The probes found the nested tables too (a sign they still work).
    for nested in [
        "destination[].request_uri.host",
        "route[].match.header.name",
        "route[].survivability.reject",
        "group[].members[].weight",
        "cluster.peers[].backup",
    ] {
        assert!(
            keys.contains(nested),
            "the probes missed {nested}: {keys:#?}"
        );
    }
    let doc = reference();
    let documented: BTreeSet<&str> = doc.rows.iter().map(|(k, _)| k.as_str()).collect();
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !documented.contains(k.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the loader takes but docs/config.md has no row for: {undocumented:#?}"
    );
    let stale: Vec<&str> = documented
        .iter()
        .copied()
        .filter(|k| !keys.contains(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "rows of docs/config.md for keys the loader refuses: {stale:#?}"
    );
    let mut seen = BTreeSet::new();
    for (key, cells) in &doc.rows {
        assert!(seen.insert(key), "{key} has two rows");
        assert_eq!(
            cells.len(),
            6,
            "{key}: a row is key | type | default | range | what it does | example"
        );
        assert!(cells.iter().all(|c| !c.is_empty()), "{key}: an empty cell");
    }
    assert_eq!(
        doc.sections, sections,
        "docs/config.md has one heading per section, `[name]` or `[[name]]`, in the loader's order"
    );
}

/// The files the complete example names, written next to it: a CA, and certificates and keys
/// it signed.
fn example_files(dir: &Path) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = Ca::new("example ca");
    let (edge, edge_key) = ca.issue(&["edge-1.example.net", "203.0.113.11"], false);
    let (client, client_key) = ca.issue(&["edge-1.example.net"], true);
    let (node, node_key) = ca.node("10.0.0.11");
    for (name, text) in [
        ("edge.pem", &edge),
        ("edge.key", &edge_key),
        ("edge-client.pem", &client),
        ("edge-client.key", &client_key),
        ("node-1.pem", &node),
        ("node-1.key", &node_key),
        ("carrier-ca.pem", &ca.pem),
        ("cloud-ca.pem", &ca.pem),
        ("west-ca.pem", &ca.pem),
        ("link-ca.pem", &ca.pem),
    ] {
        std::fs::write(certs.join(name), text).unwrap();
    }
}

/// The first ```toml block under "## A complete example".
fn complete_example(text: &str) -> String {
    let (_, after) = text
        .split_once("\n## A complete example\n")
        .expect("docs/config.md has a section \"A complete example\"");
    let (_, block) = after.split_once("```toml\n").expect("a ```toml block");
    let (block, _) = block.split_once("\n```").expect("the block ends");
    format!("{block}\n")
}

/// Every key set in `t` (at `at`), as the reference writes them; an array's tables count as
/// the array's entries.
fn keys_set(t: &toml::Table, at: &str, out: &mut BTreeSet<String>) {
    for (key, value) in t {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match value {
            toml::Value::Table(inner) => keys_set(inner, &path, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        keys_set(inner, &format!("{path}[]"), out);
                    }
                }
            }
            _ => {}
        }
        out.insert(path);
    }
}

#[test]
fn the_complete_example_in_the_reference_loads_without_errors_or_warnings_and_sets_every_key() {
    let doc = reference();
    let example = complete_example(&doc.text);
    let d = dir();
    example_files(&d);
    let path = d.join("pointsman.toml");
    std::fs::write(&path, &example).unwrap();
    let (result, warnings) = Config::load_with_warnings(&path);
    if let Err(errs) = result {
        panic!("the complete example of docs/config.md does not load:\n{errs}");
    }
    assert!(warnings.is_empty(), "warnings: {warnings:#?}");
    let mut set = BTreeSet::new();
    keys_set(&example.parse().expect("TOML"), "", &mut set);
    let (keys, _) = loader_keys();
    let unset: Vec<&String> = keys.iter().filter(|k| !set.contains(*k)).collect();
    assert!(
        unset.is_empty(),
        "keys the complete example does not show: {unset:#?}"
    );
}
