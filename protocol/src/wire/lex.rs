//! Byte-level lexing shared by the scanner: lines, whitespace, tokens, quoted strings, numbers,
//! comma-separated values and `;name=value` parameters (RFC 3261 §25.1).
//!
//! Every function takes explicit `[start, end)` bounds into one buffer and returns offsets into
//! it; none allocates and none can index out of bounds (all access goes through `get`).

/// SP or HTAB: what starts a folded continuation line.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Linear whitespace inside a header value: folding leaves CR/LF followed by WSP in a value.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Characters of a host name or IPv4 address (underscore tolerated: it appears in the wild).
pub(crate) fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Characters inside an IPv6 reference's brackets.
pub(crate) fn is_ipv6_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

fn at(buf: &[u8], i: usize) -> Option<u8> {
    buf.get(i).copied()
}

/// The byte at `i` if `i < end`.
pub(crate) fn peek(buf: &[u8], i: usize, end: usize) -> Option<u8> {
    if i < end {
        at(buf, i)
    } else {
        None
    }
}

/// Skips linear whitespace (SP, HTAB and the CR/LF of folding).
pub(crate) fn skip_lws(buf: &[u8], mut i: usize, end: usize) -> usize {
    while let Some(b) = peek(buf, i, end) {
        if !is_lws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// Trims linear whitespace from both ends of `[start, end)`.
pub(crate) fn trim(buf: &[u8], start: usize, end: usize) -> (usize, usize) {
    let start = skip_lws(buf, start, end);
    let mut end = end;
    while end > start && at(buf, end - 1).is_some_and(is_lws) {
        end -= 1;
    }
    (start, end)
}

/// End of the run of bytes satisfying `pred` from `i`.
pub(crate) fn run_end(buf: &[u8], mut i: usize, end: usize, pred: impl Fn(u8) -> bool) -> usize {
    while let Some(b) = peek(buf, i, end) {
        if !pred(b) {
            break;
        }
        i += 1;
    }
    i
}

/// `i` is at an opening `"`: returns the offset just after the closing quote, honouring `\`
/// escapes (RFC 3261 quoted-pair). `None` if the string is not closed before `end`.
pub(crate) fn quoted_end(buf: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i.checked_add(1)?;
    while let Some(b) = peek(buf, j, end) {
        match b {
            b'\\' => j = j.checked_add(2)?,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Finds `needle` in `[i, end)`.
pub(crate) fn find(buf: &[u8], i: usize, end: usize, needle: u8) -> Option<usize> {
    let hay = buf.get(i..end)?;
    memchr::memchr(needle, hay).map(|p| i + p)
}

/// One physical line starting at `pos`: `(content_end, next)` where `content_end` excludes the
/// CRLF (or bare LF) and `next` is just after the LF. `None` when no LF follows.
pub(crate) fn line_at(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let lf = pos + memchr::memchr(b'\n', buf.get(pos..)?)?;
    let content_end = if lf > pos && at(buf, lf - 1) == Some(b'\r') {
        lf - 1
    } else {
        lf
    };
    Some((content_end, lf + 1))
}

/// Why a decimal number did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumError {
    Empty,
    NotDigit,
    Overflow,
}

/// Parses `1*DIGIT` (leading zeros allowed) into a value no larger than `max`.
pub(crate) fn parse_decimal(bytes: &[u8], max: u64) -> Result<u64, NumError> {
    if bytes.is_empty() {
        return Err(NumError::Empty);
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return Err(NumError::NotDigit);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|&v| v <= max)
            .ok_or(NumError::Overflow)?;
    }
    Ok(v)
}

/// A port number (leading zeros allowed).
pub(crate) fn parse_port(bytes: &[u8]) -> Option<u16> {
    parse_decimal(bytes, u64::from(u16::MAX))
        .ok()
        .and_then(|v| u16::try_from(v).ok())
}

/// One element of a comma-separated header value: trimmed bounds, and whether a separating
/// comma followed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Element {
    pub start: usize,
    pub end: usize,
    pub more: bool,
}

/// Splits `[start, end)` at commas that are outside quoted strings and `<...>`.
/// A header value that is empty yields one empty element.
#[derive(Clone, Debug)]
pub(crate) struct CommaSplit<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    done: bool,
}

impl<'a> CommaSplit<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        CommaSplit {
            buf,
            pos: start,
            end,
            done: false,
        }
    }
}

impl Iterator for CommaSplit<'_> {
    type Item = Result<Element, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        let mut sep = None;
        while let Some(b) = peek(self.buf, i, self.end) {
            match b {
                b'"' => match quoted_end(self.buf, i, self.end) {
                    Some(j) => i = j,
                    None => {
                        self.done = true;
                        return Some(Err("unterminated quoted string"));
                    }
                },
                b'<' => match find(self.buf, i + 1, self.end, b'>') {
                    Some(j) => i = j + 1,
                    None => {
                        self.done = true;
                        return Some(Err("unterminated <"));
                    }
                },
                b',' => {
                    sep = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let value_end = match sep {
            Some(c) => {
                self.pos = c + 1;
                c
            }
            None => {
                self.done = true;
                self.end.max(start)
            }
        };
        let (s, e) = trim(self.buf, start, value_end);
        Some(Ok(Element {
            start: s,
            end: e,
            more: sep.is_some(),
        }))
    }
}

/// One `;name[=value]` parameter; a quoted value keeps its quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Param {
    pub name: (usize, usize),
    pub value: Option<(usize, usize)>,
}

impl Param {
    pub(crate) fn is(&self, buf: &[u8], name: &[u8]) -> bool {
        buf.get(self.name.0..self.name.1)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Iterates `*( SEMI param )` in `[start, end)`, whitespace (folding included) allowed around
/// `;` and `=`. Anything else is an error, after which iteration stops.
#[derive(Clone, Debug)]
pub(crate) struct Params<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    done: bool,
}

impl<'a> Params<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Params {
            buf,
            pos: start,
            end,
            done: false,
        }
    }

    fn fail(&mut self, reason: &'static str) -> Option<Result<Param, &'static str>> {
        self.done = true;
        Some(Err(reason))
    }
}

impl Iterator for Params<'_> {
    type Item = Result<Param, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (buf, end) = (self.buf, self.end);
        let i = skip_lws(buf, self.pos, end);
        match peek(buf, i, end) {
            None => {
                self.done = true;
                return None;
            }
            Some(b';') => {}
            Some(_) => return self.fail("unexpected character where a ;parameter should be"),
        }
        let name_start = skip_lws(buf, i + 1, end);
        let name_end = run_end(buf, name_start, end, is_token);
        if name_end == name_start {
            return self.fail("empty parameter name");
        }
        let after = skip_lws(buf, name_end, end);
        if peek(buf, after, end) != Some(b'=') {
            self.pos = name_end;
            return Some(Ok(Param {
                name: (name_start, name_end),
                value: None,
            }));
        }
        let v_start = skip_lws(buf, after + 1, end);
        let v_end = if peek(buf, v_start, end) == Some(b'"') {
            match quoted_end(buf, v_start, end) {
                Some(j) => j,
                None => return self.fail("unterminated quoted parameter value"),
            }
        } else {
            run_end(buf, v_start, end, |b| {
                !is_lws(b) && !matches!(b, b';' | b',' | b'"' | b'<' | b'>')
            })
        };
        if v_end == v_start {
            return self.fail("empty parameter value");
        }
        self.pos = v_end;
        Some(Ok(Param {
            name: (name_start, name_end),
            value: Some((v_start, v_end)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_allows_leading_zeros_and_rejects_overflow() {
        assert_eq!(parse_decimal(b"0000123", 1000), Ok(123));
        assert_eq!(parse_decimal(b"1001", 1000), Err(NumError::Overflow));
        assert_eq!(
            parse_decimal(b"99999999999999999999999", u64::MAX),
            Err(NumError::Overflow)
        );
        assert_eq!(parse_decimal(b"", 10), Err(NumError::Empty));
        assert_eq!(parse_decimal(b"1a", 10), Err(NumError::NotDigit));
    }

    #[test]
    fn comma_split_ignores_commas_in_quotes_and_angles() {
        let v = br#"a;x="1,\"2", <sip:a,b@c> , c"#;
        let parts: Vec<_> = CommaSplit::new(v, 0, v.len())
            .map(|e| e.unwrap())
            .map(|e| &v[e.start..e.end])
            .collect();
        assert_eq!(parts, vec![&br#"a;x="1,\"2""#[..], b"<sip:a,b@c>", b"c"]);
    }

    #[test]
    fn params_accept_spaces_around_separators() {
        let v = b" ;  BRANCH = z9 ;lr; q=\"a;b\"";
        let ps: Vec<_> = Params::new(v, 0, v.len()).map(|p| p.unwrap()).collect();
        assert_eq!(ps.len(), 3);
        assert!(ps[0].is(v, b"branch"));
        assert_eq!(ps[0].value.map(|(s, e)| &v[s..e]), Some(&b"z9"[..]));
        assert_eq!(ps[1].value, None);
        assert_eq!(ps[2].value.map(|(s, e)| &v[s..e]), Some(&b"\"a;b\""[..]));
    }
}
