//! Hints for TOML syntax errors: the parser says what it expected at a byte; where the text
//! there is a mistake people often make (a string, a duration or an address without quotes, a
//! boolean written yes/no/on/off, a string, table header or inline table not closed), say how
//! to write it. Only where the text shows it: otherwise no hint.

use std::ops::Range;

/// How to fix a syntax error, and where.
#[derive(Debug, PartialEq)]
pub(crate) struct Hint {
    pub text: String,
    /// A better place than the parser's: the start of the value to quote.
    pub at: Option<usize>,
}

/// A hint for the parser's `message` at `span` of `text`, or `None`.
pub(crate) fn hint(text: &str, span: &Range<usize>, message: &str) -> Option<Hint> {
    let at = span.start.min(text.len());
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text.get(at..)?.find('\n').map_or(text.len(), |i| at + i);
    let line = text.get(line_start..line_end)?.trim_end_matches('\r');
    let first = message.lines().next().unwrap_or_default();
    if matches!(first, "invalid string" | "expected newline, `#`") {
        return unquoted_value(line).map(|(text, value_at)| Hint {
            text,
            at: Some(line_start + value_at),
        });
    }
    unclosed(text, at, line, line_end, first).map(|text| Hint { text, at: None })
}

/// A string, table header or inline table that the line does not close.
fn unclosed(text: &str, at: usize, line: &str, line_end: usize, first: &str) -> Option<String> {
    // The parser stopped at the end of the line: something opened on it was not closed.
    let at_line_end = text.get(at..line_end)?.trim().is_empty();
    match first {
        "invalid basic string" | "invalid literal string" if at_line_end => {
            let quote = if first == "invalid basic string" {
                '"'
            } else {
                '\''
            };
            Some(format!(
                "the string is not closed: end it with {quote} on the same line"
            ))
        }
        "invalid table header" => {
            // `[node` or `[[route]`: a plain name whose brackets do not close.
            let header = line.split('#').next().unwrap_or_default().trim();
            let double = header.starts_with("[[");
            let name = header.trim_start_matches('[').trim_end_matches(']');
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            let rest = text
                .get(at..line_end)?
                .split('#')
                .next()
                .unwrap_or_default();
            let unclosed = matches!(rest.trim(), "" | "]");
            (plain && unclosed).then(|| {
                let (open, close) = if double { ("[[", "]]") } else { ("[", "]") };
                format!("the table header is not closed: write {open}{name}{close}")
            })
        }
        "invalid inline table" if at_line_end => {
            Some("an inline table { ... } must close with } on the line it opens on".into())
        }
        _ => None,
    }
}

/// `key = value` where value is a bare word, a duration or an address: how to quote it, and
/// the byte in `line` where the value starts.
fn unquoted_value(line: &str) -> Option<(String, usize)> {
    let eq = line.find('=')?;
    let (key, after) = (line.get(..eq)?.trim(), line.get(eq + 1..)?);
    let value_at = eq + 1 + (after.len() - after.trim_start().len());
    let value = after.split('#').next().unwrap_or_default().trim();
    if key.is_empty() || value.is_empty() || value.contains(['"', '\'', '[', '{', ' ']) {
        return None;
    }
    let boolean = match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" => Some(true),
        "no" | "off" | "false" => Some(false),
        _ => None,
    };
    if let Some(b) = boolean {
        return Some((
            format!("a boolean is true or false: write {key} = {b}"),
            value_at,
        ));
    }
    let what = if value.starts_with(|c: char| c.is_ascii_digit())
        && humantime::parse_duration(value).is_ok()
    {
        "a duration is a string with a unit"
    } else if value.parse::<std::net::SocketAddr>().is_ok()
        || value.parse::<std::net::IpAddr>().is_ok()
    {
        "an address is a string"
    } else if value
        .chars()
        .all(|c| c.is_alphanumeric() || "-_.:".contains(c))
        && value.starts_with(char::is_alphabetic)
        && !matches!(value, "inf" | "nan")
    {
        "a string goes in quotes"
    } else {
        return None;
    };
    Some((format!("{what}: write {key} = \"{value}\""), value_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint toml gives `text`, as the loader shows it.
    fn hint_for(text: &str) -> Option<String> {
        let e = toml_edit::ImDocument::parse(text).expect_err("not TOML");
        hint(text, &e.span().unwrap_or(0..0), e.message()).map(|h| h.text)
    }

    #[test]
    fn config_syntax_hints_quote_bare_words_durations_and_addresses_and_spell_booleans() {
        for (text, hint) in [
            (
                "[node]\nadvertise = edge\n",
                "a string goes in quotes: write advertise = \"edge\"",
            ),
            (
                "[tcp]\nconnect_timeout = 2s # two\n",
                "a duration is a string with a unit: write connect_timeout = \"2s\"",
            ),
            (
                "x = 1\nprobe_interval = 500ms\n",
                "a duration is a string with a unit: write probe_interval = \"500ms\"",
            ),
            (
                "address = 10.0.0.1:5060\n",
                "an address is a string: write address = \"10.0.0.1:5060\"",
            ),
            (
                "[admin]\nenabled = off\n",
                "a boolean is true or false: write enabled = false",
            ),
            (
                "pass_503 = True\n",
                "a boolean is true or false: write pass_503 = true",
            ),
        ] {
            assert_eq!(hint_for(text).as_deref(), Some(hint), "{text:?}");
        }
    }

    #[test]
    fn config_syntax_hints_close_strings_and_table_headers() {
        for (text, hint) in [
            (
                "name = \"primary\nx = 1\n",
                "the string is not closed: end it with \" on the same line",
            ),
            (
                "[node\nid = 1\n",
                "the table header is not closed: write [node]",
            ),
            (
                "[[route]\nname = \"a\"\n",
                "the table header is not closed: write [[route]]",
            ),
            (
                "a = { b = 1\n",
                "an inline table { ... } must close with } on the line it opens on",
            ),
        ] {
            assert_eq!(hint_for(text).as_deref(), Some(hint), "{text:?}");
        }
    }

    #[test]
    fn config_syntax_gives_no_hint_where_the_mistake_is_not_plain() {
        assert_eq!(hint_for("a = \"x\" b\n"), None);
        assert_eq!(hint_for("a = [1, 2\nb = 3\n"), None);
        assert_eq!(hint_for("a = 1\na = 2\n"), None);
        assert_eq!(hint_for("= 1\n"), None);
        assert_eq!(hint_for("a = \"\\q\"\n"), None);
    }
}
