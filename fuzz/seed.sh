#!/usr/bin/env bash
# Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/, where
# `cargo fuzz run <target>` starts from: for `scan` and `splice` the wire unit tests' own
# messages (proxy/src/wire/tests.rs, `write_fuzz_seeds`); for `config` the shipped examples and
# a few broken configs, for `core` scripted calls encoded as ops (proxy/src/fuzzing.rs,
# `write_fuzz_seeds`). Run from anywhere; needs only stable cargo.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
(cd "$root" && POINTSMAN_FUZZ_SEEDS="$seeds/wire" \
    cargo test -q -p pointsman --lib wire::tests::write_fuzz_seeds -- --ignored --exact)
for target in scan splice; do
    mkdir -p "$fuzz_dir/corpus/$target"
    cp "$seeds"/wire/* "$fuzz_dir/corpus/$target/"
done
echo "seeded $(ls "$seeds/wire" | wc -l) messages into $fuzz_dir/corpus/{scan,splice}"
(cd "$root" && POINTSMAN_FUZZ_SEEDS="$seeds" \
    cargo test -q -p pointsman --lib fuzzing::tests::write_fuzz_seeds -- --ignored --exact)
for target in config core; do
    mkdir -p "$fuzz_dir/corpus/$target"
    cp "$seeds/$target"/* "$fuzz_dir/corpus/$target/"
    echo "seeded $(ls "$seeds/$target" | wc -l) inputs into $fuzz_dir/corpus/$target"
done
