//! The wire layer: the only code that reads or writes received SIP bytes.
//!
//! [`scan`] frames one message (a UDP datagram, or a stream frame found by [`frame_stream`]) and
//! records, as byte spans into the caller's buffer, the header lines and the fields a proxy needs:
//! top Via, Call-ID, CSeq, From/To tags, Max-Forwards, Content-Length and the body. It copies
//! nothing and allocates nothing for messages of up to 32 headers. Malformed input is rejected with
//! a precise [`ScanError`]; nothing a peer sends can make it panic.
//!
//! [`Splice`] forwards: untouched bytes are copied as they came, only the intended edits (insert a
//! Via or Record-Route line, drop a Route value, replace Max-Forwards) change. Everything this
//! layer does not own stays byte-for-byte as received.
//!
//! It must not: allocate per header, normalise anything it does not edit, or know about
//! transactions, routing or sockets.

mod fields;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod lex;
mod scan;
mod splice;
#[cfg(test)]
mod tests;

pub use scan::*;
pub use splice::*;
