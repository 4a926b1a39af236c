//! Splicing: forward a received message with a few intended edits, every other byte as received.
//!
//! Owns [`Splice`]: a list of edits against one source buffer, written out in offset order. It
//! must not allocate beyond the output (the edit list and its ordering live inline for up to 8 and
//! 16 edits), parse anything, or reorder bytes it does not edit.

use super::Span;
use smallvec::SmallVec;

/// One edit against the source buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit<'e> {
    /// The source range replaced (empty for a pure insertion at `span.start`).
    pub span: Span,
    pub bytes: &'e [u8],
}

/// A set of non-overlapping edits to a source message. Insertions at the same offset are written
/// in the order they were added.
#[derive(Clone, Debug)]
pub struct Splice<'s, 'e> {
    src: &'s [u8],
    edits: SmallVec<[Edit<'e>; 8]>,
}

impl<'s, 'e> Splice<'s, 'e> {
    pub fn new(src: &'s [u8]) -> Self {
        Splice {
            src,
            edits: SmallVec::new(),
        }
    }
    pub fn insert(&mut self, at: u32, bytes: &'e [u8]) -> &mut Self {
        self.edits.push(Edit {
            span: Span { start: at, end: at },
            bytes,
        });
        self
    }
    pub fn replace(&mut self, span: Span, bytes: &'e [u8]) -> &mut Self {
        self.edits.push(Edit { span, bytes });
        self
    }
    pub fn delete(&mut self, span: Span) -> &mut Self {
        self.edits.push(Edit { span, bytes: &[] });
        self
    }
    /// Length of the output.
    pub fn output_len(&self) -> usize {
        self.plan().iter().fold(self.src.len(), |len, &i| {
            let e = &self.edits[i];
            len - e.span.len() + e.bytes.len()
        })
    }
    /// Appends the edited message to `out`. Overlapping edits are a programming error: the
    /// later one is ignored (debug builds assert).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let plan = self.plan();
        let len = plan.iter().fold(self.src.len(), |len, &i| {
            let e = &self.edits[i];
            len - e.span.len() + e.bytes.len()
        });
        out.reserve(len);
        let mut cursor = 0usize;
        for &i in &plan {
            let e = &self.edits[i];
            let start = e.span.start as usize;
            out.extend_from_slice(self.src.get(cursor..start).unwrap_or(&[]));
            out.extend_from_slice(e.bytes);
            cursor = e.span.end as usize;
        }
        out.extend_from_slice(self.src.get(cursor..).unwrap_or(&[]));
    }

    /// Indices of the edits to apply, in output order. An edit outside the source, or one that
    /// overlaps an edit added before it, is dropped (and asserted against in debug builds).
    fn plan(&self) -> SmallVec<[usize; 16]> {
        let mut plan: SmallVec<[usize; 16]> = SmallVec::new();
        for (i, e) in self.edits.iter().enumerate() {
            let valid = e.span.start <= e.span.end && e.span.end as usize <= self.src.len();
            debug_assert!(
                valid,
                "splice edit {:?} outside a {}-byte source",
                e.span,
                self.src.len()
            );
            let clash = plan.iter().any(|&j| overlaps(self.edits[j].span, e.span));
            debug_assert!(!clash, "splice edit {:?} overlaps an earlier edit", e.span);
            if valid && !clash {
                plan.push(i);
            }
        }
        // At one offset, insertions go before a replacement starting there (so "insert a line
        // before this header" and "delete this header" compose); among insertions, the order
        // they were added. The index makes the unstable (allocation-free) sort deterministic.
        plan.sort_unstable_by_key(|&i| {
            let span = self.edits[i].span;
            (span.start, !span.is_empty(), i)
        });
        plan
    }
}

/// Whether two edits touch the same source bytes. An insertion overlaps a replacement only when
/// strictly inside it; at either end it is simply written before or after.
fn overlaps(a: Span, b: Span) -> bool {
    let inside = |point: u32, range: Span| range.start < point && point < range.end;
    match (a.is_empty(), b.is_empty()) {
        (true, true) => false,
        (true, false) => inside(a.start, b),
        (false, true) => inside(b.start, a),
        (false, false) => a.start < b.end && b.start < a.end,
    }
}
