//! Telephone numbers as routing compares them: one normalisation, used for the numbers in the
//! config and for the numbers of a call, so `+1 (555) 010-0911`, `+15550100911` and
//! `15550100911` are the same number.
//!
//! Normalising cuts any `;parameters` (a SIP user part such as `+15550100911;npdi`), removes one
//! leading `+` and the visual separators `-` `.` `(` `)` and spaces (RFC 3966), and keeps the
//! rest only if it is made of digits, `*` and `#`, at most [`MAX_DIGITS`] of them. There is no
//! national ↔ international conversion: `5550100911` and `+15550100911` differ; write numbers
//! the way the carrier sends them. A user part that is not a number (`alice`, `anonymous`, an
//! empty user) matches no number condition. It must not allocate on the call path.

/// Most symbols a number may have (E.164 numbers have at most 15 digits).
pub const MAX_DIGITS: usize = 32;

/// A normalised number, on the stack.
#[derive(Clone, Copy)]
pub struct Number {
    buf: [u8; MAX_DIGITS],
    len: u8,
    /// The symbols packed 4 bits each (none zero): the key of exact lookups.
    key: u128,
}

impl Number {
    /// Normalises `text`; `None` when it is not a number (see the module documentation).
    pub fn parse(text: &str) -> Option<Number> {
        let mut n = Number {
            buf: [0; MAX_DIGITS],
            len: 0,
            key: 0,
        };
        // One pass: leading whitespace and one '+', then digits and separators up to ';'.
        let mut started = false;
        for &b in text.as_bytes() {
            let sym = match b {
                b'0'..=b'9' => b - b'0',
                b'*' => 10,
                b'#' => 11,
                b'-' | b'.' | b'(' | b')' | b' ' => {
                    started |= b != b' ';
                    continue;
                }
                b'\t' | b'\r' | b'\n' => continue,
                b'+' if !started => {
                    started = true;
                    continue;
                }
                b';' => break,
                _ => return None,
            };
            started = true;
            let len = n.len as usize;
            if len == MAX_DIGITS {
                return None;
            }
            n.buf[len] = b;
            n.len += 1;
            n.key = (n.key << 4) | u128::from(sym + 1);
        }
        (n.len > 0).then_some(n)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, '*' and '#' are ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The number packed into a `u128` (4 bits a symbol, none zero), a key for exact lookups.
    pub fn key(&self) -> u128 {
        self.key
    }
}

impl std::fmt::Debug for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Number({})", self.as_str())
    }
}

/// Index of a number symbol: `0`–`9` → 0–9, `*` → 10, `#` → 11.
pub(crate) fn symbol(b: u8) -> u8 {
    match b {
        b'*' => 10,
        b'#' => 11,
        d => d - b'0',
    }
}

/// Symbols a number is made of (for trie fan-out).
pub(crate) const SYMBOLS: usize = 12;

/// Why a configured number is not one: the message, with the rule and an example.
pub(crate) fn invalid_number_message(what: &str, text: &str) -> String {
    let stripped = text.trim();
    let body = stripped.strip_prefix('+').unwrap_or(stripped);
    if body.is_empty() {
        return format!(
            "{what} {text:?} is empty: write a number such as \"+15550100911\" (to match every \
             call, leave the condition out)"
        );
    }
    let digits = body
        .bytes()
        .filter(|b| b.is_ascii_digit() || *b == b'*' || *b == b'#');
    if digits.count() > MAX_DIGITS {
        return format!(
            "{what} {text:?} has more than {MAX_DIGITS} digits: an E.164 number has at most 15"
        );
    }
    let bad = body
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | '-' | '.' | '(' | ')' | ' '))
        .unwrap_or('+');
    format!(
        "{what} {text:?} contains {bad:?}: a number is digits (and * #) with an optional leading \
         '+' and the separators - . ( ) or spaces, e.g. \"+1 555 010 0911\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        Number::parse(s).map(|n| n.as_str().to_string())
    }

    #[test]
    fn plus_separators_and_parameters_are_removed() {
        assert_eq!(norm("+1 (555) 010-0911").as_deref(), Some("15550100911"));
        assert_eq!(norm("1.555.010.0911").as_deref(), Some("15550100911"));
        assert_eq!(
            norm("+15550100911;npdi;rn=+1555").as_deref(),
            Some("15550100911")
        );
        assert_eq!(norm("*67#").as_deref(), Some("*67#"));
        assert_eq!(norm(" +44 20\t").as_deref(), Some("4420"));
    }

    #[test]
    fn what_is_not_a_number_gives_none() {
        for s in [
            "",
            "+",
            "alice",
            "anonymous",
            "1555x",
            "++1555",
            "1+555",
            "- ()",
        ] {
            assert_eq!(norm(s), None, "{s:?}");
        }
        assert_eq!(norm(&"1".repeat(MAX_DIGITS)).map(|s| s.len()), Some(32));
        assert_eq!(norm(&"1".repeat(MAX_DIGITS + 1)), None);
    }

    #[test]
    fn keys_of_different_numbers_differ() {
        let k = |s: &str| Number::parse(s).unwrap().key();
        assert_eq!(k("+1555"), k("1555"));
        assert_ne!(k("1555"), k("15550"));
        assert_ne!(k("0"), k("00"));
        assert_ne!(k("*1"), k("#1"));
        assert_ne!(k(&"9".repeat(32)), k(&"9".repeat(31)));
    }
}
