#!/usr/bin/env bash
# Runs pointsman's criterion benches and the allocation count, and compares them with the
# committed baseline (benches/criterion-baseline.tsv, the figures BENCHMARKS.md shows), so a
# regression is visible without a baseline saved on this machine. See benches/README.md.
#
#   benches/compare.sh             run, then print baseline vs now; exit 1 if an allocation
#                                  count grew or a median is more than 25 % slower
#   benches/compare.sh --update    run, then rewrite the baseline file with the new figures
#   benches/compare.sh --quick     shorter criterion runs (1 s warm-up, 2 s measurement)
#   benches/compare.sh --no-run    compare what target/criterion already holds
#
# Timings move with the machine: compare on the machine the baseline names (its first lines),
# or read the ratios only. Allocation counts are exact on any machine.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BASELINE="$HERE/criterion-baseline.tsv"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

UPDATE=0 RUN=1 TIMES=(--warm-up-time 2 --measurement-time 5)
for a in "$@"; do
	case "$a" in
	--update) UPDATE=1 ;;
	--quick) TIMES=(--warm-up-time 1 --measurement-time 2) ;;
	--no-run) RUN=0 ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown option: $a (see --help)" >&2; exit 2 ;;
	esac
done
command -v python3 >/dev/null || { echo "compare.sh needs python3" >&2; exit 1; }

ALLOCS="$TARGET_DIR/criterion/allocs.txt"
if [[ $RUN == 1 ]]; then
	cd "$ROOT"
	cargo bench -p pointsman --bench wire --bench calls -- "${TIMES[@]}"
	mkdir -p "$(dirname "$ALLOCS")"
	cargo bench -p pointsman --bench allocs | tee "$ALLOCS"
fi

python3 - "$BASELINE" "$TARGET_DIR/criterion" "$ALLOCS" "$UPDATE" <<'EOF'
import json, os, platform, re, sys, time

baseline_path, crit_dir, allocs_path, update = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
SLOWER = 1.25

now = {}
for root, _dirs, files in os.walk(crit_dir):
    if os.path.basename(root) == "new" and "estimates.json" in files and "benchmark.json" in files:
        with open(os.path.join(root, "benchmark.json")) as f:
            bid = json.load(f)["full_id"]
        with open(os.path.join(root, "estimates.json")) as f:
            now["time/" + bid] = json.load(f)["median"]["point_estimate"]
try:
    with open(allocs_path) as f:
        for line in f:
            m = re.match(r"^(.+?)\s{2,}(\d+(?:\.\d+)?)\s+(\d+)\s*$", line.rstrip())
            if m:
                now["allocs/" + m.group(1).strip()] = float(m.group(2))
except OSError:
    pass

base, header = {}, []
try:
    with open(baseline_path) as f:
        for line in f:
            if line.startswith("#"):
                header.append(line.rstrip("\n"))
                continue
            k, _, v = line.rstrip("\n").partition("\t")
            if k:
                base[k] = float(v)
except OSError:
    pass

if update:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open(baseline_path, "w") as f:
        f.write("# pointsman criterion baseline (benches/compare.sh --update); medians in ns, allocations per message\n")
        f.write(f"# machine: {os.cpu_count()} cores, {cpu}, kernel {platform.release()}; written {time.strftime('%Y-%m-%d')}\n")
        for k in sorted(now):
            f.write(f"{k}\t{now[k]:.1f}\n")
    print(f"baseline written: {baseline_path} ({len(now)} figures)")
    sys.exit(0)

if not now:
    print("no criterion results found under", crit_dir, "- run without --no-run", file=sys.stderr)
    sys.exit(1)

def show(ns):
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.1f} ns"

for h in header[1:]:
    print(h.lstrip("# ").replace("machine:", "baseline machine:"))
print(f"this machine: {os.cpu_count()} cores, kernel {platform.release()}")
print()
print(f"{'figure':<46} {'baseline':>12} {'now':>12} {'change':>8}")
bad = []
for k in sorted(set(base) | set(now)):
    b, n = base.get(k), now.get(k)
    if k.startswith("time/"):
        bs, ns = (show(b) if b is not None else "-"), (show(n) if n is not None else "-")
    else:
        bs, ns = (f"{b:.1f}" if b is not None else "-"), (f"{n:.1f}" if n is not None else "-")
    change, flag = "", ""
    if b is not None and n is not None and b > 0:
        change = f"{(n / b - 1) * 100:+.0f}%"
        if k.startswith("time/") and n > b * SLOWER:
            flag = "  SLOWER"
            bad.append(k)
        if k.startswith("allocs/") and n > b + 0.05:
            flag = "  MORE ALLOCATIONS"
            bad.append(k)
    print(f"{k:<46} {bs:>12} {ns:>12} {change:>8}{flag}")
print()
if bad:
    print(f"{len(bad)} figure(s) regressed: {', '.join(bad)}")
    sys.exit(1)
print("no regression beyond 25 % in time, none in allocations")
EOF
