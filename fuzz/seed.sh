#!/usr/bin/env bash
# Writes the seed corpus of both fuzz targets from the wire unit tests' own messages
# (proxy/src/wire/tests.rs, `write_fuzz_seeds`) into fuzz/corpus/<target>/, where
# `cargo fuzz run <target>` starts from. Run from anywhere; needs only stable cargo.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
(cd "$root" && POINTSMAN_FUZZ_SEEDS="$seeds" \
    cargo test -q -p pointsman --lib wire::tests::write_fuzz_seeds -- --ignored --exact)
for target in scan splice; do
    mkdir -p "$fuzz_dir/corpus/$target"
    cp "$seeds"/* "$fuzz_dir/corpus/$target/"
done
echo "seeded $(ls "$seeds" | wc -l) messages into $fuzz_dir/corpus/{scan,splice}"
