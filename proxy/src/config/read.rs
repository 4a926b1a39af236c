//! Reads the parsed config into a [`ConfigFile`] one section and one array entry at a time, so
//! one run finds every structural problem: every unknown key, wrong type and missing key, each
//! with its key path and the byte span serde's error carries.
//!
//! serde stops at a table's first problem; the reader records it, takes the offending key or
//! element out and deserialises again, until the table reads or there is nothing left to take
//! out. A missing key is filled in with a stand-in value (so serde names the next missing key
//! of the table), and the table is taken out only if no stand-in fits.
//!
//! A section or entry that had a problem is *damaged* ([`Damage`]) and must cause no follow-on
//! errors. A damaged `[[destination]]`, `[[group]]`, `[[route]]` or `[[listen]]` entry is
//! replaced by a placeholder that keeps its index (so later entries keep their paths) and its
//! name when that could be read (so a route naming it resolves: no "unknown destination"), and
//! nothing else; a damaged `[section]` keeps what could be read. What the semantic checks say
//! inside a damaged section or entry is left out, and so is "unknown destination/group/
//! listener" when an entry of that kind has no readable name (see [`Damage::hides`]); the
//! rules' warnings wait until every rule entry reads whole ([`Damage::rules`]).

use super::ConfigFile;
use routing_rules::spec::{GroupSpec, RouteSpec, Strategy};
use serde::de::{DeserializeOwned, IntoDeserializer};
use std::ops::Range;
use toml_edit::{Item, Table, Value};

/// One structural problem.
pub(crate) struct Problem {
    /// Key path, e.g. `destination[1].transprt`; `-` for the file as a whole.
    pub path: String,
    /// Where serde's error points (the unknown key, the bad value); `None`: place it by path.
    pub span: Option<Range<usize>>,
    /// serde's message, as it gave it.
    pub message: String,
}

/// What structural problems leave the semantic checks unable to judge.
#[derive(Default)]
pub(crate) struct Damage {
    /// Key paths of sections (`guard`) and entries (`destination[1]`) that had a problem.
    regions: Vec<String>,
    /// Array sections (`destination`, `group`, `listen`) with a damaged entry whose name could
    /// not be read: any reference to an unknown one of these may mean that entry.
    unnamed: Vec<&'static str>,
    /// Names of damaged listeners (they are not bound, so not listed among the listeners).
    listener_names: Vec<String>,
    /// Key paths of the structural problems.
    unread: Vec<String>,
}

impl Damage {
    /// Whether a semantic error or warning at `path` is left out: it is inside a damaged
    /// section or entry (judged on what was left of it, it would be noise), or it is a
    /// reference to an unknown name of a kind that has a damaged entry without a readable name.
    pub(crate) fn hides(&self, path: &str, message: &str) -> bool {
        self.regions.iter().any(|r| {
            path.strip_prefix(r.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        }) || self.unnamed.iter().any(|kind| {
            let kind = if *kind == "listen" { "listener" } else { kind };
            message
                .strip_prefix("unknown ")
                .and_then(|m| m.strip_prefix(kind))
                .is_some_and(|m| m.starts_with(' '))
        })
    }

    /// Whether a destination, group or route is damaged: the rules' warnings (a route that can
    /// never match, a group nothing uses) would then be judged on placeholders.
    pub(crate) fn rules(&self) -> bool {
        self.regions.iter().any(|r| {
            ["destination", "group", "route"].iter().any(|kind| {
                r.strip_prefix(kind)
                    .is_some_and(|rest| rest.starts_with('['))
            })
        }) || self.unnamed.iter().any(|k| *k != "listen")
    }

    /// Names of listeners that are damaged, for the checks that look listeners up by name.
    pub(crate) fn listener_names(&self) -> &[String] {
        &self.listener_names
    }

    /// Whether the key at `path` is in the file but could not be read (so it reads as unset).
    pub(crate) fn unread(&self, path: &str) -> bool {
        self.unread.iter().any(|p| p == path)
    }
}

/// The file as far as it could be read, and what went wrong.
pub(crate) struct Read {
    pub spec: ConfigFile,
    pub problems: Vec<Problem>,
    pub damage: Damage,
}

/// Reads every section of `root`; problems come in the order found.
pub(crate) fn read(root: &Table) -> Read {
    let mut r = Reader {
        root,
        read: Vec::new(),
        problems: Vec::new(),
        damage: Damage::default(),
    };
    let spec = ConfigFile {
        node: r.section("node"),
        listen: r.entries("listen", |name| super::ListenSpec {
            name,
            transport: super::ListenTransport::Udp,
            address: String::new(),
            cert: None,
            key: None,
            client_ca: None,
            allow: None,
        }),
        timers: r.section("timers"),
        limits: r.section("limits"),
        tcp: r.section("tcp"),
        tls: r.section("tls"),
        admin: r.section("admin"),
        health: r.section("health"),
        guard: r.section("guard"),
        media: r.section("media"),
        cluster: r.section("cluster"),
        hep: r.section("hep"),
        dns: r.section("dns"),
        destinations: r.entries("destination", |name| routing_rules::spec::DestinationSpec {
            name: name.unwrap_or_default(),
            ..Default::default()
        }),
        groups: r.entries("group", |name| GroupSpec {
            name: name.unwrap_or_default(),
            strategy: Strategy::default(),
            members: Vec::new(),
            hash_on: None,
        }),
        routes: r.entries("route", |name| RouteSpec {
            name: name.unwrap_or_default(),
            ..Default::default()
        }),
    };
    // What is left are keys that are no section: serde names them, with the sections it knows.
    let mut rest = Table::new();
    for (name, item) in root.iter().filter(|(name, _)| !r.read.contains(name)) {
        if let Some(key) = root.key(name) {
            rest.insert_formatted(key, item.clone());
        }
    }
    let _ = r.value::<ConfigFile>(&Item::Table(rest), &[]);
    Read {
        spec,
        problems: r.problems,
        damage: r.damage,
    }
}

enum Outcome<T> {
    Whole(T),
    /// Read after taking out (or filling in) what failed.
    Damaged(T),
    /// Could not be read at all.
    Lost,
}

struct Reader<'a> {
    root: &'a Table,
    /// The sections read so far.
    read: Vec<&'static str>,
    problems: Vec<Problem>,
    damage: Damage,
}

impl Reader<'_> {
    /// A `[section]`; defaults when absent or lost.
    fn section<T: DeserializeOwned + Default>(&mut self, name: &'static str) -> T {
        self.read.push(name);
        let Some(item) = self.root.get(name) else {
            return T::default();
        };
        match self.value::<T>(item, &[Seg::Key(name.to_string())]) {
            Outcome::Whole(t) => t,
            Outcome::Damaged(t) => {
                self.damage.regions.push(name.to_string());
                t
            }
            Outcome::Lost => {
                self.damage.regions.push(name.to_string());
                T::default()
            }
        }
    }

    /// A `[[section]]`, entry by entry; a damaged entry is replaced by `placeholder(its name)`,
    /// which keeps its index and its name for references, and nothing else from it.
    fn entries<T: DeserializeOwned>(
        &mut self,
        name: &'static str,
        placeholder: impl Fn(Option<String>) -> T,
    ) -> Vec<T> {
        self.read.push(name);
        let Some(item) = self.root.get(name) else {
            return Vec::new();
        };
        let elements: Vec<Item> = match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| Item::Table(t.clone())).collect(),
            Item::Value(Value::Array(a)) => a.iter().map(|v| Item::Value(v.clone())).collect(),
            other => {
                // Not an array at all: serde says what it expected.
                let _ = self.value::<Vec<T>>(other, &[Seg::Key(name.to_string())]);
                self.damage.regions.push(name.to_string());
                self.damage.unnamed.push(name);
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(elements.len());
        for (i, element) in elements.iter().enumerate() {
            let at = [Seg::Key(name.to_string()), Seg::Index(i)];
            match self.value::<T>(element, &at) {
                Outcome::Whole(t) => out.push(t),
                Outcome::Damaged(_) | Outcome::Lost => {
                    self.damage.regions.push(show(&at));
                    let entry_name = element
                        .get("name")
                        .and_then(Item::as_str)
                        .map(str::to_string);
                    match &entry_name {
                        Some(n) if name == "listen" => self.damage.listener_names.push(n.clone()),
                        Some(_) => {}
                        None => {
                            if !self.damage.unnamed.contains(&name) {
                                self.damage.unnamed.push(name);
                            }
                        }
                    }
                    out.push(placeholder(entry_name));
                }
            }
        }
        out
    }

    /// Deserialises `item` (at key path `at`) as a `T`, recording every problem on the way.
    fn value<T: DeserializeOwned>(&mut self, item: &Item, at: &[Seg]) -> Outcome<T> {
        // Most tables read at once, from one copy; a working copy is made only when one fails.
        let Ok(first) = item.clone().into_value() else {
            return Outcome::Lost;
        };
        if let Ok(t) = T::deserialize(first.into_deserializer()) {
            return Outcome::Whole(t);
        }
        let Ok(mut value) = item.clone().into_value() else {
            return Outcome::Lost;
        };
        // Original paths (relative to `item`) of what was taken out: later problems in the
        // same array are renumbered past them, and a key we took out is not also "missing".
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        // Missing keys filled in (original path, attempt) so serde goes on to name the next
        // missing key of the same table; what it says about a filler is not reported.
        let mut filled: Vec<(Vec<Seg>, usize)> = Vec::new();
        // Each round takes a node out of a finite tree, or fills a missing key (once, with at
        // most a few values), so this ends; the bound is a guard.
        for _ in 0..=10_000 {
            let e =
                match serde_path_to_error::deserialize::<_, T>(value.clone().into_deserializer()) {
                    Ok(t) if removed.is_empty() && filled.is_empty() => return Outcome::Whole(t),
                    Ok(t) => return Outcome::Damaged(t),
                    Err(e) => e,
                };
            let Some(current) = segs(e.path()) else {
                self.report(at, &[], None, e.into_inner().message());
                return Outcome::Lost;
            };
            let original = original_path(&current, &removed);
            let inner = e.into_inner();
            let message = inner.message();
            // Where a filler is wrong, try its next value; out of values, give up the table.
            let mut give_up: Option<Vec<Seg>> = None;
            if let Some((field, attempt)) = filled.iter_mut().find(|(f, _)| original.starts_with(f))
            {
                let here = &current[..field.len()];
                *attempt += 1;
                if filler(*attempt, message).is_some_and(|v| put(&mut value, here, v)) {
                    continue;
                }
                give_up = here.split_last().map(|(_, table)| table.to_vec());
            } else if let Some(name) = missing_field(message) {
                let mut field = original.clone();
                field.push(Seg::Key(name.to_string()));
                if !removed.contains(&field) {
                    self.report(at, &original, inner.span(), message);
                }
                let mut here = current.clone();
                here.push(Seg::Key(name.to_string()));
                let fresh = !filled.iter().any(|(f, _)| *f == field);
                if fresh && filler(0, message).is_some_and(|v| put(&mut value, &here, v)) {
                    filled.push((field, 0));
                    continue;
                }
                give_up = Some(current.clone());
            } else {
                self.report(at, &original, inner.span(), message);
            }
            let out = give_up.unwrap_or(current);
            if out.is_empty() || !take_out(&mut value, &out) {
                return Outcome::Lost;
            }
            let out = original_path(&out, &removed);
            filled.retain(|(f, _)| !f.starts_with(&out));
            removed.push(out);
        }
        Outcome::Lost
    }

    fn report(&mut self, at: &[Seg], rel: &[Seg], span: Option<Range<usize>>, message: &str) {
        let mut path: Vec<Seg> = at.to_vec();
        path.extend_from_slice(rel);
        self.damage.unread.push(show(&path));
        self.problems.push(Problem {
            path: show(&path),
            span,
            message: message.to_string(),
        });
    }
}

/// `missing field `name``: the name.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The value tried for a missing key at `attempt`: a string, the first variant serde expects
/// (the error on the string says which), an array, a table, a number, a boolean; then none.
fn filler(attempt: usize, message: &str) -> Option<Value> {
    let expected = || {
        let (_, list) = message.split_once("expected")?;
        list.split('`').nth(1).map(Value::from)
    };
    match attempt {
        0 => Some(Value::from("")),
        1 => expected().or_else(|| Some(Value::Array(Default::default()))),
        2 => Some(Value::Array(Default::default())),
        3 => Some(Value::InlineTable(Default::default())),
        4 => Some(Value::from(0)),
        5 => Some(Value::from(false)),
        _ => None,
    }
}

/// Sets the key at `path` (its table must be there) to `v`; false if it cannot.
fn put(value: &mut Value, path: &[Seg], v: Value) -> bool {
    let Some((Seg::Key(key), parents)) = path.split_last() else {
        return false;
    };
    match node_at(value, parents) {
        Some(Value::InlineTable(t)) => {
            t.insert(key, v);
            true
        }
        _ => false,
    }
}

/// The node at `path`, if there is one.
fn node_at<'v>(value: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut node = value;
    for seg in path {
        node = match (seg, node) {
            (Seg::Key(k), Value::InlineTable(t)) => t.get_mut(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `destination[1].tags[0]`; `-` for the empty path.
fn show(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// serde_path_to_error's path as steps; `None` if it has a step that is no key or index.
fn segs(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// `current` (indices as they are now) with each array index moved past the elements taken
/// out of that array before it.
fn original_path(current: &[Seg], removed: &[Vec<Seg>]) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(current.len());
    for seg in current {
        match seg {
            Seg::Key(_) => out.push(seg.clone()),
            Seg::Index(i) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter_map(|r| match r.split_last() {
                        Some((Seg::Index(g), parent)) if parent == out.as_slice() => Some(*g),
                        _ => None,
                    })
                    .collect();
                gone.sort_unstable();
                let mut index = *i;
                for g in gone {
                    if g <= index {
                        index += 1;
                    }
                }
                out.push(Seg::Index(index));
            }
        }
    }
    out
}

/// Takes the node at `path` (not empty) out of `value`; false if there is none.
fn take_out(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    match (last, node_at(value, parents)) {
        (Seg::Key(k), Some(Value::InlineTable(t))) => t.remove(k).is_some(),
        (Seg::Index(i), Some(Value::Array(a))) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}
