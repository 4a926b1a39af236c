//! Finds the line of a key path (`destination[1].address`, `route[0].destinations[2]`) in the
//! config text, so a validation error found after deserialisation can still point at its line.
//!
//! It re-reads the text into a tree of keys and array elements with their byte spans (toml's
//! `Spanned`), whatever the TOML layout: `[[tables]]`, dotted keys, inline tables, multi-line
//! arrays. It must not fail loudly: text it cannot map gives no line, never an error.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::ops::Range;
use toml::Spanned;

/// Key paths → line numbers for one config text.
pub(crate) struct Locator {
    root: Option<Node>,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
}

enum Node {
    /// Keys with the span of the key itself.
    Table(Vec<(String, Range<usize>, Node)>),
    /// Elements with the span of each element.
    Array(Vec<(Range<usize>, Node)>),
    Leaf,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Locator {
        let root = Node::deserialize(toml::Deserializer::new(text)).ok();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Locator { root, line_starts }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The line of the key or element at `path`; if it is absent (a defaulted key), the line of
    /// the closest enclosing key that is present; `None` if not even the first segment is.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut node = self.root.as_ref()?;
        let mut found: Option<usize> = None;
        for seg in segments(path) {
            let next = match (seg, node) {
                (Segment::Key(key), Node::Table(entries)) => entries
                    .iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, span, n)| (span.start, n)),
                (Segment::Index(i), Node::Array(items)) => {
                    items.get(i).map(|(span, n)| (span.start, n))
                }
                _ => None,
            };
            match next {
                Some((start, n)) => {
                    found = Some(start);
                    node = n;
                }
                None => break,
            }
        }
        found.map(|offset| self.line_of_offset(offset))
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

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let span = key.span();
            let value = map.next_value::<Node>()?;
            entries.push((key.into_inner(), span, value));
        }
        Ok(Node::Table(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            let span = item.span();
            items.push((span, item.into_inner()));
        }
        Ok(Node::Array(items))
    }
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

    #[test]
    fn config_locator_finds_keys_in_arrays_of_tables_and_multiline_array_elements() {
        let loc = Locator::new(TEXT);
        assert_eq!(loc.line("node.id"), Some(3));
        assert_eq!(loc.line("destination[0].address"), Some(7));
        assert_eq!(loc.line("destination[1].name"), Some(10));
        assert_eq!(loc.line("route[0].destinations"), Some(15));
        assert_eq!(loc.line("route[0].destinations[1]"), Some(17));
    }

    #[test]
    fn config_locator_falls_back_to_the_closest_present_parent() {
        let loc = Locator::new(TEXT);
        assert_eq!(loc.line("node.workers"), Some(2));
        assert_eq!(loc.line("destination[1].provisional_timeout"), Some(9));
        assert_eq!(loc.line("listen"), None);
        assert_eq!(loc.line("-"), None);
    }

    #[test]
    fn config_locator_handles_dotted_keys_and_inline_tables() {
        let loc = Locator::new(
            "node.id = 0\ndestination = [\n  { name = \"a\", address = \"h:1\" },\n\n  { name = \"b\", address = \"h:2\" },\n]\n",
        );
        assert_eq!(loc.line("node.id"), Some(1));
        assert_eq!(loc.line("destination[0].address"), Some(3));
        assert_eq!(loc.line("destination[1].address"), Some(5));
    }

    #[test]
    fn config_locator_gives_no_line_for_text_that_is_not_toml() {
        let loc = Locator::new("[node\nid = 1\n");
        assert_eq!(loc.line("node.id"), None);
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
