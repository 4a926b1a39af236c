#!/usr/bin/env bash
# pointsman's load bench: a SIPp carrier places calls through the proxy to two SIPp cloud trunks
# (primary, secondary) on the loopback, and one table says what it cost. See benches/README.md.
#
#   benches/load/run.sh [--rate N[,N...]] [--duration S]          fixed rate(s), 20 s each
#   benches/load/run.sh --search [--search-rates LIST]             step search, highest clean rate
#   ... --compare | --baseline kamailio                            Kamailio too, side by side
#   ... --latency                                                  capture the loopback (tcpdump)
#                                                                  for the time inside the proxy
#   ... --floor                                                    a bare UDP forwarder first: the
#                                                                  least any proxy adds here
#   ... --primary normal|503|brownout|silent                       how the primary trunk behaves
#
# It installs nothing, binds only the loopback, stops after a bounded time, and kills every
# process it started when it exits (normally, on error, or on Ctrl-C).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() {
	cat <<'EOF'
usage: benches/load/run.sh [options]

What to run (default: --rate 1000 --duration 20, pointsman only)
  --rate N[,N...]        calls/s; several rates give one row each (default 1000)
  --duration S           seconds of calls per rate (default 20)
  --search               step search for the highest clean rate (<= 0.1 % failed calls, no
                         unexpected message, achieved >= 95 % of target); stops at the first rate
                         that is not clean, then tries the midpoint once
  --search-rates LIST    rates the search steps through (default 500,1000,2000,3000,4000,5000,6000,8000)
  --step-duration S      seconds per search step (default 10)
  --compare, --baseline kamailio
                         run Kamailio (benches/load/kamailio.cfg) after pointsman at each rate and
                         add a ratio row (pointsman / Kamailio)
  --only kamailio        Kamailio alone
  --floor                before the proxies at each rate, run the floor: a bare UDP forwarder
                         (benches/tools/src/bin/udp_floor.rs: one thread, blocking recvfrom/sendto, no
                         SIP) that shows what the machine's scheduler and kernel alone add to a
                         message; use it with --latency (its calls fail at BYE: it keeps no route)
  --primary KIND         primary trunk: normal (default), 503, brownout (100 Trying after 4 s),
                         silent (never answers); the secondary always answers
  --latency              first measure how often the idle machine stalls a busy thread for 5 s
                         (benches/tools/src/bin/cpu_stalls.rs), then capture the loopback with tcpdump
                         to measure the time inside the proxy
                         with kernel timestamps (adds tcpdump's cost to the machine: use it for
                         latency runs, not for the CPU figures)
  --settle S             seconds after a run before the "after" memory sample (default 5)
  --warmup N             place N calls (at up to 50/s) before the idle memory sample, so "idle"
                         is a proxy that has handled calls and is quiet again, as every node in
                         service is, rather than one that never handled a message (default 0)
  --pointsman-log LEVEL  POINTSMAN_LOG for the proxy (default info, as shipped)
  --workers N            pointsman [node] workers (default: its own default, one per core)
  --max-transactions N   pointsman [guard] max_transactions (default: its own, 200000 calls
                         being set up or requests being relayed at once)
  --realtime PRIO        run the proxy's workers under SCHED_FIFO at PRIO (1..99): pointsman
                         [node] realtime_priority, Kamailio real_time=4 rt_policy=2 rt_prio
                         (needs root or CAP_SYS_NICE)
  --slice US             time slice, in microseconds, the workers of pointsman and the floor ask
                         the kernel for under the normal scheduler, always (pointsman [node]
                         scheduler_slice, e.g. 100; 0: the kernel's default). Unset: pointsman
                         as it ships ("auto": 100 us while a worker is lightly loaded, the
                         kernel's when busy) and the floor at 100 us; Kamailio has no such
                         setting
  --pin                  give the proxy a CPU of its own: the proxy (and the floor) on the last
                         CPU, SIPp, tcpdump and this script on the others, as on a bench where
                         the load generator runs on other machines (pointsman then starts one
                         worker, since it sees one CPU; Kamailio keeps its 4 UDP children)
  --ip IP                loopback address to use (default 127.0.0.1)
  --port-base P          proxy port; trunks and carrier use P+10, P+20, P+30 (default 25060)
  --out DIR              where runs are written (default: a new directory under /tmp)
  --no-build             use target/release/pointsman as it is
  -h, --help             this text

Needs: sipp (apt-get install sip-tester), python3; kamailio for --compare (apt-get install
kamailio); tcpdump for --latency (apt-get install tcpdump); cargo unless --no-build.
EOF
}

# ---- options ------------------------------------------------------------------------------------

RATES="1000"
DURATION=20
SEARCH=0
SEARCH_RATES="500,1000,2000,3000,4000,5000,6000,8000"
STEP_DURATION=10
PROXIES="pointsman"
FLOOR=0
PRIMARY="normal"
LATENCY=0
SETTLE=5
WARMUP=0
PM_LOG="info"
WORKERS=""
MAX_TX=""
RT=""
SLICE=""
PIN=0
IP="127.0.0.1"
PORT_BASE=25060
OUT=""
BUILD=1

while [[ $# -gt 0 ]]; do
	case "$1" in
	--rate) RATES="$2"; shift 2 ;;
	--duration) DURATION="$2"; shift 2 ;;
	--search) SEARCH=1; shift ;;
	--search-rates) SEARCH_RATES="$2"; shift 2 ;;
	--step-duration) STEP_DURATION="$2"; shift 2 ;;
	--compare) PROXIES="pointsman kamailio"; shift ;;
	--baseline)
		[[ "${2:-}" == "kamailio" ]] || { echo "--baseline: only 'kamailio' is known" >&2; exit 2; }
		PROXIES="pointsman kamailio"; shift 2 ;;
	--only)
		case "${2:-}" in pointsman | kamailio) PROXIES="$2" ;; *) echo "--only: pointsman or kamailio" >&2; exit 2 ;; esac
		shift 2 ;;
	--primary)
		case "${2:-}" in normal | 503 | brownout | silent) PRIMARY="$2" ;; *) echo "--primary: normal, 503, brownout or silent" >&2; exit 2 ;; esac
		shift 2 ;;
	--latency) LATENCY=1; shift ;;
	--floor) FLOOR=1; shift ;;
	--settle) SETTLE="$2"; shift 2 ;;
	--warmup) WARMUP="$2"; shift 2 ;;
	--pointsman-log) PM_LOG="$2"; shift 2 ;;
	--workers) WORKERS="$2"; shift 2 ;;
	--max-transactions) MAX_TX="$2"; shift 2 ;;
	--realtime) RT="$2"; shift 2 ;;
	--slice) SLICE="$2"; shift 2 ;;
	--pin) PIN=1; shift ;;
	--ip) IP="$2"; shift 2 ;;
	--port-base) PORT_BASE="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	--no-build) BUILD=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
	esac
done

for v in DURATION STEP_DURATION SETTLE PORT_BASE; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || { echo "${v,,}: expected a whole number, got '${!v}'" >&2; exit 2; }
done
for r in ${RATES//,/ } ${SEARCH_RATES//,/ }; do
	[[ "$r" =~ ^[0-9]+$ && "$r" -gt 0 ]] || { echo "rate: expected calls/s as a whole number, got '$r'" >&2; exit 2; }
done

P_PROXY=$PORT_BASE
P_PRIMARY=$((PORT_BASE + 10))
P_SECONDARY=$((PORT_BASE + 20))
P_CARRIER=$((PORT_BASE + 30))
P_ADMIN=$((PORT_BASE + 40))

# ---- tools --------------------------------------------------------------------------------------

missing=0
need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "missing: $1 — install it with: $2" >&2
		missing=1
	fi
}
need sipp "apt-get install sip-tester"
need python3 "apt-get install python3"
[[ " $PROXIES " == *" kamailio "* ]] && need kamailio "apt-get install kamailio"
[[ $LATENCY == 1 ]] && need tcpdump "apt-get install tcpdump"
[[ $BUILD == 1 && (" $PROXIES " == *" pointsman "* || $FLOOR == 1) ]] && need cargo "https://rustup.rs"
[[ $missing == 0 ]] || exit 1

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/pointsman"
FLOOR_BIN="$TARGET_DIR/release/udp_floor"
if [[ $FLOOR == 1 ]]; then
	PROXIES="floor $PROXIES"
	if [[ $BUILD == 1 ]]; then
		echo "building the floor forwarder (release)..."
		(cd "$ROOT" && cargo build --release -p pointsman-bench-tools --bin udp_floor --quiet)
	fi
	[[ -x "$FLOOR_BIN" ]] || { echo "no floor forwarder at $FLOOR_BIN (drop --no-build)" >&2; exit 1; }
fi
STALLS_BIN="$TARGET_DIR/release/cpu_stalls"
if [[ $LATENCY == 1 && $BUILD == 1 ]]; then
	echo "building the stall probe (release)..."
	(cd "$ROOT" && cargo build --release -p pointsman-bench-tools --bin cpu_stalls --quiet)
fi
if [[ " $PROXIES " == *" pointsman "* ]]; then
	if [[ $BUILD == 1 ]]; then
		echo "building pointsman (release)..."
		(cd "$ROOT" && cargo build --release -p pointsman --bin pointsman --quiet)
	fi
	[[ -x "$BIN" ]] || { echo "no pointsman binary at $BIN (drop --no-build)" >&2; exit 1; }
fi

if [[ -z "$OUT" ]]; then
	OUT="$(mktemp -d /tmp/pointsman-load.XXXXXX)"
fi
mkdir -p "$OUT"
CLK_TCK="$(getconf CLK_TCK)"
# Progress: one line rewritten every 2 s on a terminal, a new line every 5 s in a log.
if [[ -t 1 ]]; then CR='\r' NL='' EVERY=2; else CR='' NL='\n' EVERY=5; fi

# With --pin the proxy gets the last CPU and everything else, this script included (so every
# process it starts inherits it), the others.
PROXY_ON=()
if [[ $PIN == 1 ]]; then
	need taskset "apt-get install util-linux"
	[[ $missing == 0 ]] || exit 1
	NCPU="$(nproc)"
	((NCPU >= 2)) || { echo "--pin needs at least 2 CPUs" >&2; exit 2; }
	PROXY_CPU=$((NCPU - 1))
	taskset -pc "0-$((PROXY_CPU - 1))" $$ >/dev/null
	PROXY_ON=(taskset -c "$PROXY_CPU")
fi

# ---- processes ----------------------------------------------------------------------------------

# start, stop, every process stopped on exit, fetch.
source "$ROOT/benches/common.sh"

# The pid and every descendant of it.
tree() {
	local pid="$1" child
	echo "$pid"
	for child in $(pgrep -P "$pid" 2>/dev/null); do
		tree "$child"
	done
}

# utime + stime (clock ticks) summed over the given pids.
cpu_ticks() {
	local total=0 pid stat rest
	for pid in "$@"; do
		stat="$(cat /proc/"$pid"/stat 2>/dev/null)" || continue
		rest="${stat##*) }"
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}

# Proportional set size (kB) summed over the given pids: memory shared between Kamailio's
# processes counts once.
mem_kb() {
	local total=0 pid v
	for pid in "$@"; do
		v="$(awk '/^Pss:/ {print $2; exit}' /proc/"$pid"/smaps_rollup 2>/dev/null)" || v=0
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# Writes pointsman's /metrics into $DIR/$1 (its own transit histogram is read from these).
save_metrics() {
	fetch "http://$IP:$P_ADMIN/metrics" "$DIR/$1"
}

# Waits until something answers OPTIONS on the proxy port (10 s at most).
wait_ready() {
	python3 - "$IP" "$P_PROXY" <<'EOF'
import socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, 0))
s.settimeout(0.2)
me = "%s:%d" % s.getsockname()
deadline = time.time() + 10
n = 0
while time.time() < deadline:
    n += 1
    msg = ("OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ready%d\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:bench@%s>;tag=r%d\r\nTo: <sip:%s:%d>\r\n"
           "Call-ID: bench-ready-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
           % (ip, port, me, n, me, n, ip, port, n))
    s.sendto(msg.encode(), (ip, port))
    try:
        data, _ = s.recvfrom(4096)
        if data.startswith(b"SIP/2.0 200"):
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
EOF
}

scenario_of() {
	case "$1" in
	normal) echo "$HERE/cloud_uas.xml" ;;
	503) echo "$HERE/cloud_503.xml" ;;
	brownout) echo "$HERE/cloud_brownout.xml" ;;
	silent) echo "$HERE/cloud_silent.xml" ;;
	esac
}

SIPP_COMMON=(-nostdin -i "$IP" -mi "$IP" -buff_size 4194304 -trace_stat -fd 1)

# Starts the two trunks into $DIR; sets UAS_PIDS.
start_trunks() {
	local max=$(($1 + 600))
	LOG="$DIR/primary.out" start sipp -sf "$(scenario_of "$PRIMARY")" -p "$P_PRIMARY" -mp $((PORT_BASE + 2000)) \
		"${SIPP_COMMON[@]}" -stf "$DIR/primary.csv" -trace_err -error_file "$DIR/primary.err" -timeout "${max}s"
	UAS_PIDS=("$STARTED")
	LOG="$DIR/secondary.out" start sipp -sf "$HERE/cloud_uas.xml" -p "$P_SECONDARY" -mp $((PORT_BASE + 4000)) \
		"${SIPP_COMMON[@]}" -stf "$DIR/secondary.csv" -trace_err -error_file "$DIR/secondary.err" -timeout "${max}s"
	UAS_PIDS+=("$STARTED")
}

# Starts the proxy into $DIR; sets PROXY_PID.
start_proxy() {
	case "$1" in
	pointsman)
		cat >"$DIR/pointsman.toml" <<EOF
# Written by benches/load/run.sh.
[node]
id = 1
${WORKERS:+workers = $WORKERS}
${RT:+realtime_priority = $RT}
${SLICE:+scheduler_slice = \"${SLICE}us\"}

[[listen]]
transport = "udp"
address = "$IP:$P_PROXY"

[admin]
listen = "$IP:$P_ADMIN"

# One carrier address sends every call: lift the per-source rate limit above the bench's rates.
[guard]
rate = 1000000.0
burst = 2000000.0
${MAX_TX:+max_transactions = $MAX_TX}

# A SIPp trunk plays one scenario, calls, so it does not answer OPTIONS probes: probes off
# (Kamailio's dispatcher does not probe either); calls still count as passive health.
[[destination]]
name = "primary"
address = "$IP:$P_PRIMARY"
provisional_timeout = "3s"
probe = false

[[destination]]
name = "secondary"
address = "$IP:$P_SECONDARY"
provisional_timeout = "3s"
probe = false

[[route]]
name = "default"
destinations = ["primary", "secondary"]
EOF
		LOG="$DIR/proxy.log" start "${PROXY_ON[@]}" env POINTSMAN_LOG="$PM_LOG" "$BIN" run --config "$DIR/pointsman.toml"
		PROXY_PID=$STARTED
		;;
	kamailio)
		printf '1 sip:%s:%d 0 10\n1 sip:%s:%d 0 5\n' "$IP" "$P_PRIMARY" "$IP" "$P_SECONDARY" >"$DIR/dispatcher.list"
		LOG="$DIR/proxy.log" start "${PROXY_ON[@]}" kamailio -DD -E -f "$HERE/kamailio.cfg" -m 1024 -M 16 \
			-Y "$DIR" -P "$DIR/kamailio.pid" \
			-A "BENCH_LISTEN=udp:$IP:$P_PROXY" -A "BENCH_DSLIST=\"$DIR/dispatcher.list\"" \
			${RT:+-A "BENCH_RT=$RT"}
		PROXY_PID=$STARTED
		;;
	floor)
		# Not SIP: nothing answers OPTIONS. Bound to the port once it is in the socket table.
		LOG="$DIR/proxy.log" start "${PROXY_ON[@]}" "$FLOOR_BIN" "$IP:$P_PROXY" "$IP:$P_PRIMARY" "${RT:-0}" ${SLICE:+"$SLICE"}
		PROXY_PID=$STARTED
		sleep 0.5
		return
		;;
	esac
	if ! wait_ready; then
		echo "$1 did not answer OPTIONS on $IP:$P_PROXY within 10 s; its log:" >&2
		tail -20 "$DIR/proxy.log" >&2
		exit 1
	fi
}

# One run: trunks, proxy, calls at $2/s for $3 s; everything it measured goes to $DIR/meta.env.
run_one() {
	local proxy="$1" rate="$2" duration="$3" tag="${4:-}"
	DIR="$OUT/$proxy-$rate${tag:+-$tag}"
	rm -rf "$DIR"
	mkdir -p "$DIR"
	local calls=$((rate * duration))
	# Failover scenarios hold a call ~3 s before it moves on: room for that many open calls.
	local limit=$((rate * 8 + 200))

	start_trunks "$duration"
	start_proxy "$proxy"
	local pids
	mapfile -t pids < <(tree "$PROXY_PID")
	if ((WARMUP > 0)); then
		(
			cd "$DIR"
			exec sipp -sf "$HERE/carrier_uac.xml" "$IP:$P_PROXY" -p "$P_CARRIER" -mp $((PORT_BASE + 6000)) \
				"${SIPP_COMMON[@]}" -stf "$DIR/warmup.csv" -r $((WARMUP < 50 ? WARMUP : 50)) -m "$WARMUP" \
				-recv_timeout 15000 -timeout 60s
		) >"$DIR/warmup.out" 2>&1 || echo "  warm-up calls did not all succeed: $DIR/warmup.out" >&2
		# Past what either proxy keeps of a finished call (pointsman 64·T1 = 32 s, Kamailio 5 s),
		# plus a sweep and a memory check.
		sleep 50
	fi
	sleep 1
	local mem_idle
	mem_idle="$(mem_kb "${pids[@]}")"

	local tcpdump_pid=""
	if [[ $LATENCY == 1 ]]; then
		LOG="$DIR/tcpdump.log" start tcpdump -i lo -n -s 2048 -B 32768 -w "$DIR/capture.pcap" -Z root \
			--time-stamp-precision=nano "udp and host $IP and port $P_PROXY"
		tcpdump_pid=$STARTED
		sleep 1
	fi

	[[ $proxy == pointsman ]] && save_metrics metrics_before.txt
	local cpu_before wall_before
	cpu_before="$(cpu_ticks "${pids[@]}")"
	wall_before="$(date +%s.%N)"
	(
		cd "$DIR"
		exec sipp -sf "$HERE/carrier_uac.xml" "$IP:$P_PROXY" -p "$P_CARRIER" -mp $((PORT_BASE + 6000)) \
			"${SIPP_COMMON[@]}" -stf "$DIR/uac.csv" -trace_screen -screen_file "$DIR/uac.screen" \
			-r "$rate" -rp 1000 -m "$calls" -l "$limit" \
			-recv_timeout 15000 -timeout "$((duration + 60))s" -trace_rtt -rtt_freq 100
	) >"$DIR/uac.out" 2>&1 &
	local uac=$!
	PIDS+=("$uac")

	local peak="$mem_idle" uac_ticks=0 uas_ticks=0 now m t last_cpu="$cpu_before" last_t=0 second=0
	while kill -0 "$uac" 2>/dev/null; do
		sleep 1
		second=$((second + 1))
		m="$(mem_kb "${pids[@]}")"
		((m > peak)) && peak=$m
		echo "$second $m" >>"$DIR/mem.txt"
		t="$(cpu_ticks "$uac")"
		((t > uac_ticks)) && uac_ticks=$t
		if ((second % EVERY == 0)); then
			now="$(cpu_ticks "${pids[@]}")"
			printf "$CR"'  %-9s %5s/s  %s  proxy CPU %3d%%  mem %d MB   '"$NL" "$proxy" "$rate" \
				"$(python3 "$HERE/report.py" progress "$DIR/uac.csv")" \
				$(((now - last_cpu) * 100 / CLK_TCK / EVERY)) $((m / 1024))
			last_cpu=$now
		fi
	done
	wait "$uac" 2>/dev/null || true
	[[ -z "$NL" ]] && printf '\n'
	local cpu_after wall_after
	cpu_after="$(cpu_ticks "${pids[@]}")"
	wall_after="$(date +%s.%N)"
	uas_ticks="$(cpu_ticks "${UAS_PIDS[0]}")"
	local keep=() p
	for p in "${PIDS[@]}"; do [[ "$p" == "$uac" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")

	# The trunks' last calls end (timewait 2 s) and their statistics rows are written.
	sleep 3
	[[ $proxy == pointsman ]] && save_metrics metrics_after.txt
	[[ -n "$tcpdump_pid" ]] && { kill -INT "$tcpdump_pid" 2>/dev/null || true; sleep 0.5; stop "$tcpdump_pid"; }
	sleep "$SETTLE"
	local mem_after hwm
	mem_after="$(mem_kb "${pids[@]}")"
	hwm="$(awk '/^VmHWM:/ {print $2}' /proc/"$PROXY_PID"/status 2>/dev/null || echo 0)"
	cat >"$DIR/meta.env" <<EOF
proxy=$proxy
rate=$rate
duration=$duration
primary=$PRIMARY
clk_tck=$CLK_TCK
cpu_before=$cpu_before
cpu_after=$cpu_after
wall_before=$wall_before
wall_after=$wall_after
uac_cpu_ticks=$uac_ticks
uas_cpu_ticks=$uas_ticks
mem_idle_kb=$mem_idle
mem_peak_kb=$peak
mem_after_kb=$mem_after
hwm_kb=$hwm
processes=${#pids[@]}
port_proxy=$P_PROXY
port_carrier=$P_CARRIER
EOF
	stop "$PROXY_PID"
	for p in "${UAS_PIDS[@]}"; do stop "$p"; done
	RUNS+=("$DIR")
	python3 "$HERE/report.py" check "$DIR" | sed 's/^/  /' || true
	python3 "$HERE/report.py" timeline "$DIR" >"$DIR/timeline.svg" || true
}

# ---- the runs -----------------------------------------------------------------------------------

RUNS=()
cd "$OUT"
cat <<EOF
pointsman load bench: $(nproc --all) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)
proxies: $PROXIES${PROXY_CPU:+ (on CPU $PROXY_CPU, the load on the others)}; primary trunk: $PRIMARY; hold 20 ms; ${IP} ports proxy $P_PROXY, trunks $P_PRIMARY/$P_SECONDARY, carrier $P_CARRIER
runs in $OUT
EOF
# What the machine itself takes from a busy thread (interrupts, the hypervisor): the floor
# under any latency figure, written next to the table.
if [[ $LATENCY == 1 && -x "$STALLS_BIN" ]]; then
	"$STALLS_BIN" 5 | tee "$OUT/stalls.txt" | sed 's/^/machine, idle, one busy thread: /'
fi

if [[ $SEARCH == 1 ]]; then
	for proxy in $PROXIES; do
		echo "== $proxy: step search over ${SEARCH_RATES} calls/s, ${STEP_DURATION} s per step"
		best=0 bad=0
		for rate in ${SEARCH_RATES//,/ }; do
			run_one "$proxy" "$rate" "$STEP_DURATION" step
			if python3 "$HERE/report.py" check "$DIR" >/dev/null; then
				best=$rate
			else
				bad=$rate
				break
			fi
		done
		if ((bad > 0 && best > 0 && bad - best > 200)); then
			mid=$(((best + bad) / 2 / 100 * 100))
			run_one "$proxy" "$mid" "$STEP_DURATION" step
			python3 "$HERE/report.py" check "$DIR" >/dev/null && best=$mid
		fi
		if ((bad == 0)); then
			echo "== $proxy: every step was clean; highest clean rate >= $best calls/s (the search list ends there)"
		else
			echo "== $proxy: highest clean rate $best calls/s (first unclean step: $bad)"
		fi
		echo "$proxy highest_clean=$best first_unclean=$bad" >>"$OUT/search.txt"
	done
else
	for rate in ${RATES//,/ }; do
		for proxy in $PROXIES; do
			echo "== $proxy at $rate calls/s for $DURATION s"
			run_one "$proxy" "$rate" "$DURATION"
		done
	done
fi

echo
python3 "$HERE/report.py" table "${RUNS[@]}" | tee "$OUT/table.txt"
python3 "$HERE/report.py" table --markdown "${RUNS[@]}" >"$OUT/table.md"
[[ -f "$OUT/search.txt" ]] && { echo; cat "$OUT/search.txt"; }
echo
echo "runs, logs and SIPp files: $OUT (table.txt, table.md; each run's timeline.svg)"
