//! Splicing: forward a received message with a few intended edits, every other byte as received.
//!
//! CONTRACT (stub; the implementation keeps these signatures).

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
        todo!("wire::Splice::output_len")
    }
    /// Appends the edited message to `out`. Overlapping edits are a programming error: the
    /// later one is ignored (debug builds assert).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = (out, self.src);
        todo!("wire::Splice::write_to")
    }
}
