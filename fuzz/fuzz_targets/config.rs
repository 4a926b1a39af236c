//! Arbitrary bytes (made UTF-8, lossily) through the config loader (`Config::parse`): TOML,
//! serde, validation, the rules compiler, the TLS file checks. Nothing may panic; every error
//! and warning names the file, a key path, a message and a line and column of the text; the
//! same text gives the same errors twice; a config that loads routes calls to known
//! destinations only.
//! Inputs naming a file that reading could hang on (`/dev/zero`, a FIFO, `/proc/...`) are
//! skipped; nothing is written. See `pointsman::fuzzing::config_never_panics`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsman::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::config_never_panics(data);
});
