#!/usr/bin/env bash
# pointsman's media relay bench: the same RTP flows through pointsman's relay and through
# rtpengine (userspace), one after the other at each rate, and one table of what each relayed
# packet cost in CPU. The work is done by media_bench (benches/tools/src/bin/media_bench.rs);
# see its header for how flows are set up and measured.
#
#   benches/media/run.sh [--rates 5000,25000,50000] [--duration 10] [--build]
#   benches/media/run.sh --only rtpengine
#
# It binds only the loopback, stops after a bounded time, and kills every process it started
# when it exits (normally, on error, or on Ctrl-C). Run as root, it runs everything in a network
# namespace of its own (only a loopback, deleted at exit), so the relays are measured without
# the host's firewall: a Docker host's NAT rules put conntrack on every loopback packet, which
# made the bare floor ~40 % dearer here, the same for every relay (--host-netns to keep it).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() {
	cat <<'EOF'
usage: benches/media/run.sh [options]

  --rates LIST         relayed packets/s, comma-separated (default 5000,25000,50000); each is
                       LIST/100 flows, every flow 50 pps each way
  --duration S         seconds measured per relay and rate (default 10), after --warmup
  --warmup S           seconds of streaming before the measurement (default 2)
  --only RELAY         pointsman or rtpengine alone (default: both, pointsman first)
  --kernel             also run pointsman with media.kernel_relay = true (row
                       pointsman_kernel; needs root): answered calls' RTP forwarded by the
                       kernel relay, whose cost shows in the machine's CPU (see --direct)
  --floor              also run the floor first: rtp_floor (benches/tools/src/bin/rtp_floor.rs),
                       one recvfrom and one sendto per packet and nothing else, the least any
                       userspace relay costs on this machine
  --floor-bin NAME     the floor's program: rtp_floor (default), uring_floor (the same on
                       io_uring, syscalls batched: benches/tools/src/bin/uring_floor.rs) or
                       kernel_floor (rtp_floor handing each flow to pointsman's kernel relay,
                       the eBPF program, once both ends were heard; needs root)
  --direct             also run the baseline first: no relay, each end sending straight to the
                       other; a relay's machine CPU less this is what it adds to the machine
                       (the only fair figure for forwarding in the kernel, whose cost lands in
                       the senders' system calls and softirqs, not in a relay process)
  --host-netns         run in the host's network namespace (default as root: a namespace of
                       the bench's own, with only a loopback)
  --senders N          sender threads of the bench (default 2)
  --pointsman PATH     pointsman binary (default target/release/pointsman)
  --rtpengine PATH     rtpengine binary (default: rtpengine on PATH)
  --ports MIN-MAX      media ports the relays allocate from (default: from 10000, 8 a flow,
                       at least 400; below the kernel's ephemeral ports, and no wider than
                       needed, since pointsman binds its whole range at start)
  --out DIR            where runs are written (default: a new directory under /tmp)
  --build              build pointsman and media_bench (release) first; by default nothing is
                       built and target/release/{pointsman,media_bench} are used as they are
  -h, --help           this text

Needs: rtpengine (apt-get install --no-install-recommends rtpengine-daemon); cargo with --build.
EOF
}

RATES="5000,25000,50000"
DURATION=10
WARMUP=2
RELAYS="pointsman rtpengine"
SENDERS=2
PM_BIN=""
RTPENGINE="rtpengine"
PORTS=""
OUT=""
BUILD=0
FLOOR=0
DIRECT=0
KERNEL=0
FLOOR_BIN="rtp_floor"
HOST_NETNS=0
ARGS=("$@")

while [[ $# -gt 0 ]]; do
	case "$1" in
	--rates) RATES="$2"; shift 2 ;;
	--duration) DURATION="$2"; shift 2 ;;
	--warmup) WARMUP="$2"; shift 2 ;;
	--only)
		case "${2:-}" in pointsman | rtpengine) RELAYS="$2" ;; *) echo "--only: pointsman or rtpengine" >&2; exit 2 ;; esac
		shift 2 ;;
	--floor) FLOOR=1; shift ;;
	--direct) DIRECT=1; shift ;;
	--kernel) KERNEL=1; shift ;;
	--floor-bin)
		case "${2:-}" in rtp_floor | uring_floor | kernel_floor) FLOOR_BIN="$2" ;; *) echo "--floor-bin: rtp_floor, uring_floor or kernel_floor" >&2; exit 2 ;; esac
		shift 2 ;;
	--host-netns) HOST_NETNS=1; shift ;;
	--senders) SENDERS="$2"; shift 2 ;;
	--pointsman) PM_BIN="$2"; shift 2 ;;
	--rtpengine) RTPENGINE="$2"; shift 2 ;;
	--ports) PORTS="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	--build) BUILD=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
	esac
done

[[ $FLOOR == 1 ]] && RELAYS="floor $RELAYS"
[[ $KERNEL == 1 ]] && RELAYS="${RELAYS/pointsman/pointsman pointsman_kernel}"
[[ $DIRECT == 1 ]] && RELAYS="direct $RELAYS"
for v in DURATION WARMUP SENDERS; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || { echo "${v,,}: expected a whole number, got '${!v}'" >&2; exit 2; }
done
for r in ${RATES//,/ }; do
	[[ "$r" =~ ^[0-9]+$ && "$r" -ge 100 ]] || { echo "rate: expected packets/s >= 100 as a whole number, got '$r'" >&2; exit 2; }
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET_DIR/release/media_bench"
PM_BIN="${PM_BIN:-$TARGET_DIR/release/pointsman}"

if [[ $BUILD == 1 ]]; then
	echo "building pointsman and media_bench (release)..."
	(cd "$ROOT" && cargo build --release -p pointsman --bin pointsman --quiet)
	(cd "$ROOT" && cargo build --release -p pointsman-bench-tools --bin media_bench --bin rtp_floor --bin uring_floor --quiet)
fi

# As root, and not yet inside it: run this script again inside a namespace of its own.
if [[ $HOST_NETNS == 0 && $EUID == 0 && -z "${POINTSMAN_MEDIA_NETNS:-}" ]] && command -v ip >/dev/null 2>&1; then
	NETNS="pointsman-media-$$"
	ip netns add "$NETNS"
	trap 'ip netns del "$NETNS" 2>/dev/null || true' EXIT
	ip -n "$NETNS" link set lo up
	# Without --build: that is done (or not asked for) already.
	rerun=()
	for a in "${ARGS[@]}"; do [[ "$a" == --build ]] || rerun+=("$a"); done
	status=0
	POINTSMAN_MEDIA_NETNS="$NETNS" ip netns exec "$NETNS" "$0" "${rerun[@]}" || status=$?
	exit "$status"
fi
if [[ -n "${POINTSMAN_MEDIA_NETNS:-}" ]]; then
	echo "network namespace: $POINTSMAN_MEDIA_NETNS (loopback only)"
else
	echo "network namespace: the host's"
fi
[[ -x "$BENCH" ]] || { echo "no media_bench at $BENCH (run with --build)" >&2; exit 1; }
if [[ " $RELAYS " == *" pointsman "* ]]; then
	[[ -x "$PM_BIN" ]] || { echo "no pointsman binary at $PM_BIN (run with --build)" >&2; exit 1; }
fi
if [[ " $RELAYS " == *" rtpengine "* ]]; then
	command -v "$RTPENGINE" >/dev/null 2>&1 ||
		{ echo "missing: rtpengine — install it with: apt-get install --no-install-recommends rtpengine-daemon" >&2; exit 1; }
fi

if [[ -z "$OUT" ]]; then
	OUT="$(mktemp -d /tmp/pointsman-media.XXXXXX)"
fi
mkdir -p "$OUT"

# media_bench kills its relay when it exits (and the relay gets SIGTERM if media_bench dies);
# this script stops media_bench itself on Ctrl-C or error.
BENCH_PID=""
cleanup() {
	if [[ -n "$BENCH_PID" ]]; then
		kill -TERM "$BENCH_PID" 2>/dev/null || true
		sleep 0.5
		kill -KILL "$BENCH_PID" 2>/dev/null || true
		wait "$BENCH_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping everything this bench started"; exit 130' INT TERM

# One run: relay, rate → $OUT/<relay>-<rate>/, the RESULT line in result.txt.
run_one() {
	local relay="$1" rate="$2" dir="$OUT/$1-$2" flows=$(($2 / 100))
	mkdir -p "$dir"
	echo "== $relay, $rate pps ($flows flows, ${WARMUP}s + ${DURATION}s)"
	local kind="$relay" extra=()
	if [[ $relay == pointsman_kernel ]]; then
		kind=pointsman
		extra=(--kernel-relay)
	fi
	"$BENCH" --relay "$kind" "${extra[@]}" --flows "$flows" --duration "${DURATION}s" --warmup "${WARMUP}s" \
		--senders "$SENDERS" --pointsman "$PM_BIN" --rtpengine "$RTPENGINE" ${PORTS:+--ports "$PORTS"} \
		--floor-bin "${FLOOR_BIN//_/-}" \
		--work-dir "$dir" >"$dir/result.txt" 2>"$dir/bench.err" &
	BENCH_PID=$!
	if wait "$BENCH_PID"; then
		BENCH_PID=""
		cat "$dir/bench.err"
	else
		BENCH_PID=""
		echo "   $relay failed at $rate pps:" >&2
		sed 's/^/   /' "$dir/bench.err" >&2
		echo "RESULT relay=$relay failed=1" >"$dir/result.txt"
	fi
}

# The value of KEY in a RESULT line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

for rate in ${RATES//,/ }; do
	for relay in $RELAYS; do
		run_one "$relay" "$rate"
	done
done

echo
echo "| relay | offered pps | relayed pps | loss % | CPU-µs/packet | machine CPU-µs/packet | added to the machine, CPU-µs/packet | relay CPU % of a core | idle CPU % | drops relay / bench |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
short=0
for rate in ${RATES//,/ }; do
	declare -A per_packet=() machine=() added=()
	for relay in $RELAYS; do
		line="$(grep '^RESULT' "$OUT/$relay-$rate/result.txt" || true)"
		if [[ -z "$line" || "$(field "$line" failed)" == 1 ]]; then
			echo "| $relay | ($rate) | failed | | | | | | | |"
			continue
		fi
		offered="$(field "$line" offered_pps)"
		mark=""
		# Below 95 % of the rate the bench itself could not keep up (a saturated machine):
		# the row stands, but is not compared.
		if awk -v o="$offered" -v r="$rate" 'BEGIN { exit !(o < 0.95 * r) }'; then
			mark=" *"
			short=1
		else
			per_packet[$relay]="$(field "$line" cpu_us_per_pkt)"
			machine[$relay]="$(field "$line" machine_cpu_us_per_pkt)"
		fi
		add="-"
		if [[ -n "${machine[direct]:-}" && -n "${machine[$relay]:-}" && $relay != direct ]]; then
			add="$(awk -v a="${machine[$relay]}" -v b="${machine[direct]}" 'BEGIN { printf "%.3f", a - b }')"
			added[$relay]="$add"
		fi
		echo "| $relay | $offered$mark | $(field "$line" relayed_pps) | $(field "$line" loss_pct) | $(field "$line" cpu_us_per_pkt) | $(field "$line" machine_cpu_us_per_pkt) | $add | $(field "$line" relay_cpu_pct) | $(field "$line" idle_cpu_pct) | $(field "$line" relay_socket_drops) / $(field "$line" sink_socket_drops) |"
	done
	if [[ -n "${per_packet[pointsman]:-}" && -n "${per_packet[rtpengine]:-}" ]]; then
		ratio="$(awk -v a="${per_packet[pointsman]}" -v b="${per_packet[rtpengine]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		mratio="$(awk -v a="${machine[pointsman]}" -v b="${machine[rtpengine]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		aratio="-"
		if [[ -n "${added[pointsman]:-}" && -n "${added[rtpengine]:-}" ]]; then
			aratio="$(awk -v a="${added[pointsman]}" -v b="${added[rtpengine]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		fi
		echo "| pointsman / rtpengine at $rate pps | | | | $ratio | $mratio | $aratio | | | |"
	fi
	if [[ -n "${added[pointsman_kernel]:-}" && -n "${added[rtpengine]:-}" ]]; then
		kratio="$(awk -v a="${added[pointsman_kernel]}" -v b="${added[rtpengine]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		echo "| pointsman_kernel / rtpengine at $rate pps | | | | | | $kratio | | | |"
	fi
	if [[ -n "${added[floor]:-}" && -n "${added[rtpengine]:-}" ]]; then
		fratio="$(awk -v a="${added[floor]}" -v b="${added[rtpengine]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		echo "| $FLOOR_BIN / rtpengine at $rate pps | | | | | | $fratio | | | |"
	fi
	unset per_packet machine added
done
echo
[[ $short == 1 ]] && echo "* the bench offered < 95 % of the rate (machine saturated): not compared."
echo "offered: what the bench sent in the window (target: the rate); loss: over the whole run, once"
echo "the sinks read all that came; relayed: offered less that loss; CPU-µs per relayed packet: the"
echo "relay's utime+stime over the window / relayed packets; machine CPU-µs: every CPU's busy time"
echo "(the relay's, the bench's own senders and sinks, softirqs) / relayed packets; added: that less"
echo "the direct run's (no relay) at the same rate; idle CPU: the relay"
echo "with every call set up and nothing flowing (1 s before the streams start); drops: datagrams the"
echo "kernel dropped at full receive buffers of the relay's sockets / of the bench's sinks."
echo "runs: $OUT"
