//! Whatever scans as a request is forwarded with the proxy's edits (`fuzzing::forward`: a
//! Record-Route, a new top Via, Max-Forwards decremented or added, the first Route value
//! removed); the output must scan again, with the same Call-ID, CSeq, From, To and body, one
//! more Via and ours on top.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsman_protocol::wire::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::forward_roundtrip(data);
});
