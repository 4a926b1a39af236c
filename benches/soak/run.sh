#!/usr/bin/env bash
# pointsman's fault-injection soak: a SIPp carrier calls through pointsman to two SIPp clouds,
# every link impaired in both directions by the relay benches/tools/src/bin/impair.rs (loss,
# duplication, jitter, reordering), the primary cloud's link blackholed every other flap
# period; then benches/soak/report.py explains every failed call from what the relay, SIPp
# and pointsman's /metrics saw. See benches/README.md.
#
#   carrier SIPp -> relay "carrier" -> pointsman -> relay "primary"   -> SIPp primary
#                                               -> relay "secondary" -> SIPp secondary
#
# Loopback only; bounded by --duration; every process it starts is killed when it exits.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() {
	cat <<'EOF'
usage: benches/soak/run.sh [options]
  --duration S     seconds of calls (default 600)
  --rate N         calls/s (default 500)
  --seed N         the relay's seed: each link and direction draws the same decisions again (default 1)
  --loss P         probability a datagram is lost, each link and direction (default 0.02)
  --dup P          probability a datagram is delivered twice (default 0.01)
  --reorder P      probability a datagram is held back 40 ms, so later ones overtake it (default 0.01)
  --jitter D       each datagram waits a uniform 0..D (default 20ms)
  --flap S         the primary's link is blackholed every other S seconds, up first (default 30; 0: never)
  --ip IP          loopback address to use (default 127.0.0.1)
  --port-base N    first port (default 25300; uses N..N+52 and SIPp's media ports N+2000..N+6000)
  --out DIR        where logs and results go (default: a new /tmp/pointsman-soak.XXXXXX)
  --no-build       use the release binaries already built
EOF
}

DURATION=600 RATE=500 SEED=1 LOSS=0.02 DUP=0.01 REORDER=0.01 JITTER=20ms FLAP=30
IP=127.0.0.1 PORT_BASE=25300 OUT="" BUILD=1
while [[ $# -gt 0 ]]; do
	case "$1" in
	--duration) DURATION="$2"; shift 2 ;;
	--rate) RATE="$2"; shift 2 ;;
	--seed) SEED="$2"; shift 2 ;;
	--loss) LOSS="$2"; shift 2 ;;
	--dup) DUP="$2"; shift 2 ;;
	--reorder) REORDER="$2"; shift 2 ;;
	--jitter) JITTER="$2"; shift 2 ;;
	--flap) FLAP="$2"; shift 2 ;;
	--ip) IP="$2"; shift 2 ;;
	--port-base) PORT_BASE="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	--no-build) BUILD=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
	esac
done
for v in DURATION RATE SEED FLAP PORT_BASE; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || { echo "${v,,}: expected a whole number, got '${!v}'" >&2; exit 2; }
done
[[ $IP == 127.* ]] || { echo "--ip: the soak stays on the loopback (127.0.0.0/8)" >&2; exit 2; }

P_PROXY=$PORT_BASE
P_PRIMARY=$((PORT_BASE + 10))
P_SECONDARY=$((PORT_BASE + 20))
P_CARRIER=$((PORT_BASE + 30))
P_ADMIN=$((PORT_BASE + 40))
# The relay's fronts: the carrier calls R_CARRIER (pointsman advertises it, so ACK and BYE come
# that way too); pointsman's destinations are R_PRIMARY and R_SECONDARY.
R_CARRIER=$((PORT_BASE + 50))
R_PRIMARY=$((PORT_BASE + 51))
R_SECONDARY=$((PORT_BASE + 52))

for tool in sipp python3; do
	command -v "$tool" >/dev/null || { echo "missing: $tool (sipp: apt-get install sip-tester)" >&2; exit 1; }
done
# The report's checks catch what they are for, or the soak is not worth running.
python3 "$HERE/report.py" selftest
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/pointsman"
RELAY="$TARGET_DIR/release/impair"
if [[ $BUILD == 1 ]]; then
	echo "building pointsman and the impairment relay (release)..."
	(cd "$ROOT" && cargo build --release -p pointsman --bin pointsman --quiet && cargo build --release -p pointsman-bench-tools --bin impair --quiet)
fi
[[ -x "$BIN" && -x "$RELAY" ]] || { echo "no release build at $TARGET_DIR (drop --no-build)" >&2; exit 1; }

OUT="${OUT:-$(mktemp -d /tmp/pointsman-soak.XXXXXX)}"
mkdir -p "$OUT"
cd "$OUT"

# start, stop, every process stopped on exit, fetch.
source "$ROOT/benches/common.sh"

metrics() {
	fetch "http://$IP:$P_ADMIN/metrics" "$1"
}

# Waits (60 s at most) until pointsman's admin API shows every destination up: its probes
# cross the relay, so this also says the relay and both clouds are in place.
wait_up() {
	python3 - "http://$IP:$P_ADMIN/destinations" <<'EOF'
import json, sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        body = json.loads(urllib.request.urlopen(sys.argv[1], timeout=2).read())
        rows = body if isinstance(body, list) else body.get("destinations", [])
        if rows and all(r.get("state") == "up" for r in rows):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF
}

SIPP_COMMON=(-nostdin -i "$IP" -mi "$IP" -buff_size 4194304 -trace_stat -fd 1 -trace_err -trace_calldebug)
TOTAL=$((DURATION + 120))

# The clouds: the soak's answering trunk. A SIPp UAS plays one scenario, so the relay answers
# pointsman's OPTIONS probes on the clouds' links (the probes and answers impaired, blackholed
# with the primary), and a probe tells whether the link to the cloud is up.
for c in primary:$P_PRIMARY:2000 secondary:$P_SECONDARY:4000; do
	IFS=: read -r name port media <<<"$c"
	LOG="$OUT/$name.out" start sipp -sf "$HERE/cloud_uas.xml" -p "$port" -default_behaviors none \
		-mp $((PORT_BASE + media)) "${SIPP_COMMON[@]}" -stf "$OUT/$name.csv" \
		-error_file "$OUT/$name.err" -timeout "${TOTAL}s"
done

FLAP_ARG=()
((FLAP > 0)) && FLAP_ARG=(--flap "primary:${FLAP}s")
LOG="$OUT/relay.out" start "$RELAY" --seed "$SEED" --loss "$LOSS" --dup "$DUP" --reorder "$REORDER" \
	--jitter "$JITTER" "${FLAP_ARG[@]}" --log "$OUT/relay.log" --stats "$OUT/relay.json" \
	--answer-options primary --answer-options secondary \
	--link "carrier=$IP:$R_CARRIER>$IP:$P_PROXY" \
	--link "primary=$IP:$R_PRIMARY>$IP:$P_PRIMARY" \
	--link "secondary=$IP:$R_SECONDARY>$IP:$P_SECONDARY"
RELAY_PID=$STARTED

cat >"$OUT/pointsman.toml" <<EOF
# Written by benches/soak/run.sh.
[node]
id = 1
# The carrier reaches pointsman through the relay: Record-Route names the relay's front, so the
# carrier's ACK and BYE cross the impaired link too.
advertise = "$IP:$R_CARRIER"

[[listen]]
transport = "udp"
address = "$IP:$P_PROXY"

[admin]
listen = "$IP:$P_ADMIN"

# Probed every second through the relay (a probe times out after 500 ms): a primary that comes
# back is taken back after 3 answered probes, one that goes is down after 3 lost ones.
[[destination]]
name = "primary"
address = "$IP:$R_PRIMARY"
provisional_timeout = "3s"
probe_interval = "1s"
probe_timeout = "500ms"
failure_threshold = 3
recovery_threshold = 3

[[destination]]
name = "secondary"
address = "$IP:$R_SECONDARY"
provisional_timeout = "3s"
probe_interval = "1s"
probe_timeout = "500ms"
failure_threshold = 3
recovery_threshold = 3

[[route]]
name = "default"
destinations = ["primary", "secondary"]
EOF
LOG="$OUT/pointsman.log" start "$BIN" run --config "$OUT/pointsman.toml"
PROXY_PID=$STARTED
if ! wait_up; then
	echo "pointsman's destinations did not come up within 60 s; its log:" >&2
	tail -20 "$OUT/pointsman.log" >&2
	exit 1
fi

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
cat <<EOF
pointsman fault-injection soak: $RATE calls/s for $DURATION s, seed $SEED; every link: loss $LOSS, dup $DUP, reorder $REORDER, jitter $JITTER; primary flaps every ${FLAP} s
$(nproc) cores, kernel $(uname -r), commit $COMMIT
runs in $OUT
EOF
metrics "$OUT/metrics_before.txt"
# The carrier waits 45 s for each answer, longer than an outage of the primary: a call whose
# 2xx a retransmission brings after the outage still completes.
(
	exec sipp -sf "$HERE/carrier_uac.xml" "$IP:$R_CARRIER" -p "$P_CARRIER" -mp $((PORT_BASE + 6000)) \
		"${SIPP_COMMON[@]}" -stf "$OUT/carrier.csv" -error_file "$OUT/carrier.err" \
		-r "$RATE" -m $((RATE * DURATION)) -l $((RATE * 80 + 200)) \
		-recv_timeout 45000 -timeout "${TOTAL}s"
) >"$OUT/carrier.out" 2>&1 &
UAC=$!
PIDS+=("$UAC")

# RSS of pointsman (kB) every 10 s of the calls, seconds since they began; 0: before them.
rss_kb() { awk '/^VmRSS:/ {print $2}' /proc/"$PROXY_PID"/status 2>/dev/null || echo 0; }
echo "0 $(rss_kb)" >"$OUT/rss.txt"
SECONDS=0
next=10
while kill -0 "$UAC" 2>/dev/null; do
	sleep 1
	if ((SECONDS >= next)); then
		rss="$(rss_kb)"
		echo "$SECONDS $rss" >>"$OUT/rss.txt"
		printf '  %4d s  RSS %6.1f MB  %s\n' "$SECONDS" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" \
			"$(python3 "$ROOT/benches/load/report.py" progress "$OUT/carrier.csv")"
		next=$((next + 10))
	fi
done
wait "$UAC" 2>/dev/null || true

# Late copies, the clouds' 2xx retransmissions (32 s) and their time-wait end before the counts.
echo "calls done; 40 s for the last retransmissions..."
sleep 40
metrics "$OUT/metrics_after.txt"
echo "$SECONDS $(rss_kb)" >>"$OUT/rss.txt"
stop "$RELAY_PID"
cleanup
cat >"$OUT/meta.env" <<EOF
rate=$RATE
duration=$DURATION
seed=$SEED
loss=$LOSS
dup=$DUP
reorder=$REORDER
jitter=$JITTER
flap=$FLAP
commit=$COMMIT
EOF
python3 "$HERE/report.py" report "$OUT" | tee "$OUT/report.md"
