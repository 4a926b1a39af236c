#!/usr/bin/env bash
# Smoke run of every fuzz target in fuzz_targets/ (what CI runs): builds them with libFuzzer and
# the address sanitizer on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take the `-Z` flags cargo-fuzz
# passes), then fuzzes each for SECONDS (first argument, default 60) from its committed corpus
# in fuzz/corpus/<target>/. New inputs go to a scratch directory, so the committed corpus stays
# as it is. Exits non-zero on the first crash, timeout or out-of-memory; its input is left in
# fuzz/artifacts/<target>/. Installs cargo-fuzz from crates.io when it is not there.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Every target in fuzz_targets/ (each needs its committed corpus in corpus/<target>/).
targets=()
for source in fuzz_targets/*.rs; do
    targets+=("$(basename "$source" .rs)")
done
for target in "${targets[@]}"; do
    # The campaign's options (README.md): core sequences long from the start.
    case "$target" in
        core) options=(-max_len=512 -len_control=0) ;;
        *) options=(-max_len=4096) ;;
    esac
    mkdir "$scratch/$target"
    log="$scratch/$target.log"
    echo "fuzz smoke: $target for ${seconds} s from $(ls "corpus/$target" | wc -l) corpus files"
    if ! cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${options[@]}" >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        echo "fuzz smoke: $target failed; its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|peak_rss_mb)' "$log"
done
echo "fuzz smoke: ${#targets[@]} targets, ${seconds} s each, no crash"
