//! Finds where a key path (`destination[1].address`, `route[0].destinations[2]`) is in the
//! config text, as a 1-based line and column, so an error found after deserialisation can
//! still point at its place: the value of a key that is present, else the closest enclosing
//! key or table header that is.
//!
//! It walks the parsed document (toml_edit keeps the byte span of every key, value and table
//! header), whatever the TOML layout: `[[tables]]`, dotted keys, inline tables, multi-line
//! arrays. It must not fail loudly: a path it cannot map gives no place, never an error.

use std::ops::Range;
use toml_edit::{Item, Table, Value};

/// A line and a column (in characters), both 1-based.
pub(crate) type Place = (usize, usize);

/// Key paths → places for one config text.
pub(crate) struct Locator<'t> {
    text: &'t str,
    root: Option<Node>,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
}

enum Node {
    /// Keys, each with where it is shown when it is the closest present parent, where its
    /// value starts, and the value.
    Table(Vec<Entry>),
    /// Elements with the offset each starts at.
    Array(Vec<(Option<usize>, Node)>),
    Leaf,
}

struct Entry {
    key: String,
    /// The table header for a `[table]`, else the key.
    parent_at: Option<usize>,
    value_at: Option<usize>,
    node: Node,
}

impl<'t> Locator<'t> {
    /// `root` is the parsed text; `None` when it is not TOML (then only offsets are placed).
    pub(crate) fn new(text: &'t str, root: Option<&Table>) -> Locator<'t> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Locator {
            text,
            root: root.map(table_node),
            line_starts,
        }
    }

    /// The place of byte `offset` (clamped to the text).
    pub(crate) fn place_of_offset(&self, offset: usize) -> Place {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        // Spans are on char boundaries; `get` keeps a stray one from panicking.
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |before| before.chars().count() + 1);
        (line, column)
    }

    /// The place of a span's start.
    pub(crate) fn place_of_span(&self, span: &Range<usize>) -> Place {
        self.place_of_offset(span.start)
    }

    /// Where `path` is: its value when present; else the closest enclosing key or table header
    /// that is present; `None` if not even the first segment is.
    pub(crate) fn place(&self, path: &str) -> Option<Place> {
        let mut node = self.root.as_ref()?;
        let mut found: Option<usize> = None;
        let segs = segments(path);
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let next = match (seg, node) {
                (Segment::Key(key), Node::Table(entries)) => {
                    entries.iter().find(|e| e.key == *key).map(|e| {
                        let at = if last { e.value_at } else { e.parent_at };
                        (at.or(e.parent_at), &e.node)
                    })
                }
                (Segment::Index(i), Node::Array(items)) => items.get(*i).map(|(at, n)| (*at, n)),
                _ => None,
            };
            match next {
                Some((at, n)) => {
                    found = at.or(found);
                    node = n;
                }
                None => break,
            }
        }
        found.map(|offset| self.place_of_offset(offset))
    }
}

fn start(span: Option<Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

fn table_node(table: &Table) -> Node {
    Node::Table(
        table
            .iter()
            .map(|(key, item)| {
                let key_at = table.key(key).and_then(|k| start(k.span()));
                entry(key, key_at, item)
            })
            .collect(),
    )
}

fn entry(key: &str, key_at: Option<usize>, item: &Item) -> Entry {
    let (parent_at, value_at, node) = match item {
        // A `[table]`: its header; a dotted parent (`node.id = 1`) has no span: its key.
        Item::Table(t) => {
            let header = start(t.span()).or(key_at);
            (header, header, table_node(t))
        }
        Item::ArrayOfTables(a) => (
            key_at,
            key_at,
            Node::Array(a.iter().map(|t| (start(t.span()), table_node(t))).collect()),
        ),
        Item::Value(v) => (key_at, start(v.span()).or(key_at), value_node(v)),
        Item::None => (key_at, key_at, Node::Leaf),
    };
    Entry {
        key: key.to_string(),
        parent_at,
        value_at,
        node,
    }
}

fn value_node(value: &Value) -> Node {
    match value {
        Value::Array(a) => {
            Node::Array(a.iter().map(|v| (start(v.span()), value_node(v))).collect())
        }
        Value::InlineTable(t) => Node::Table(
            t.iter()
                .map(|(key, v)| {
                    let key_at = t.key(key).and_then(|k| start(k.span()));
                    let value_at = start(v.span()).or(key_at);
                    Entry {
                        key: key.to_string(),
                        parent_at: key_at,
                        value_at,
                        node: value_node(v),
                    }
                })
                .collect(),
        ),
        _ => Node::Leaf,
    }
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[1][2].c` → Key(a), Key(b), Index(1), Index(2), Key(c). Unparsable pieces end the path.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((index, after)) = inner.split_once(']') else {
                return out;
            };
            let Ok(index) = index.parse() else {
                return out;
            };
            out.push(Segment::Index(index));
            rest = after;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# comment
[node]
id = 1

[[destination]]
name = "a"
address = "h:1"

[[destination]]
name = "b"
address = "h:2"

[[route]]
name = "r"
destinations = [
  "a",
  "b",
]
"#;

    fn place(text: &str, path: &str) -> Option<Place> {
        let doc = toml_edit::ImDocument::parse(text).expect("TOML");
        Locator::new(text, Some(doc.as_table())).place(path)
    }

    #[test]
    fn config_locator_places_values_in_arrays_of_tables_and_multiline_array_elements() {
        assert_eq!(place(TEXT, "node.id"), Some((3, 6)));
        assert_eq!(place(TEXT, "destination[0].address"), Some((7, 11)));
        assert_eq!(place(TEXT, "destination[1].name"), Some((10, 8)));
        assert_eq!(place(TEXT, "route[0].destinations"), Some((15, 16)));
        assert_eq!(place(TEXT, "route[0].destinations[1]"), Some((17, 3)));
    }

    #[test]
    fn config_locator_falls_back_to_the_closest_present_table_header() {
        assert_eq!(place(TEXT, "node.workers"), Some((2, 1)));
        assert_eq!(
            place(TEXT, "destination[1].provisional_timeout"),
            Some((9, 1))
        );
        assert_eq!(place(TEXT, "listen"), None);
        assert_eq!(place(TEXT, "-"), None);
    }

    #[test]
    fn config_locator_handles_dotted_keys_and_inline_tables() {
        let text = "node.id = 0\ndestination = [\n  { name = \"a\", address = \"h:1\" },\n\n  { name = \"b\", address = \"h:2\" },\n]\n";
        assert_eq!(place(text, "node.id"), Some((1, 11)));
        assert_eq!(place(text, "node.workers"), Some((1, 1)));
        assert_eq!(place(text, "destination[0].address"), Some((3, 27)));
        assert_eq!(place(text, "destination[1].weight"), Some((5, 3)));
        assert_eq!(place(text, "destination[1].address"), Some((5, 27)));
    }

    #[test]
    fn config_locator_counts_columns_in_characters() {
        let text = "# é\nname = \"é\" \nx = 1\n";
        let loc = Locator::new(text, None);
        assert_eq!(loc.place_of_offset(text.find("x =").unwrap_or(0)), (3, 1));
        assert_eq!(loc.place_of_offset(text.len()), (4, 1));
        assert_eq!(loc.place_of_offset(text.find(" \n").unwrap_or(0)), (2, 11));
        assert_eq!(loc.place(""), None, "no document, no path");
    }

    #[test]
    fn config_path_segments_split_keys_and_indexes() {
        assert_eq!(
            segments("route[0].retry_codes[2]"),
            [
                Segment::Key("route"),
                Segment::Index(0),
                Segment::Key("retry_codes"),
                Segment::Index(2)
            ]
        );
    }
}
