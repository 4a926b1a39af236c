//! Arbitrary bytes through the SDP code the relay runs on every offer and answer
//! (`pointsman_protocol::media::sdp`): the first bytes choose a relay address and per-`m=` ports
//! (`fuzzing::split_input`), the rest is the body. `inspect` and `rewrite` must not panic and
//! must accept the same bodies; a rewrite grows each line by a bounded amount, keeps every line
//! it does not own byte for byte and in order (ICE lines removed), keeps every line end, and
//! inspects again to the same summary with the new ports and the relay address. `find_sdp` must
//! return a range inside the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsman_protocol::media::sdp::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::check(data);
});
