//! The transaction layer and proxy core fed arbitrary sequences: the bytes decode into ops
//! (`fuzzing::ops_from_bytes`: requests from the carrier or a destination, responses built
//! from what the core sent or twisted, byte mutations, time passing, ICMP errors, delivery
//! failures) applied to a fresh core with a parallel and a serial route. Nothing may panic;
//! everything sent re-scans; no 2xx goes up after a final non-2xx for the same INVITE (no
//! ghost relayed); the tables drain within 2 simulated hours and answered calls within 13.
//! See `pointsman::fuzzing::core_sequence`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsman::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::core_sequence(&fuzzing::ops_from_bytes(data));
});
