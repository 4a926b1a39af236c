//! Arbitrary bytes through everything that reads received SIP: `scan` (datagram and stream
//! framing, default and tiny limits), `frame_stream`, `reply_context` and `bounced_request`.
//! Nothing may panic, and what they return must stay inside the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsman_protocol::wire::{self, fuzzing};

fuzz_target!(|data: &[u8]| {
    fuzzing::scan_never_panics(data);
    if let Some(b) = wire::bounced_request(data) {
        assert!(b.branch.start <= b.branch.end && b.branch.end as usize <= data.len());
    }
});
