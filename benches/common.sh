# What the benches share (sourced by benches/load/run.sh and benches/soak/run.sh): every process
# a bench starts goes through `start`, and all of them are stopped when the bench exits,
# normally, on error or on Ctrl-C; `fetch` saves an admin API page (pointsman's /metrics).

PIDS=()

cleanup() {
	local pid
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid="${PIDS[i]}"
		kill -TERM "$pid" 2>/dev/null || true
	done
	sleep 0.3
	for pid in "${PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping everything this bench started"; exit 130' INT TERM

# Starts "$@" in the background, logging to $LOG; sets STARTED to its pid.
start() {
	"$@" >"$LOG" 2>&1 &
	STARTED=$!
	PIDS+=("$STARTED")
}

# Stops one pid this script started (TERM, then KILL) and forgets it.
stop() {
	local pid="$1" keep=() p
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# Saves the body of URL into FILE (none if it cannot be read in 5 s).
fetch() {
	python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
		"$1" >"$2" 2>/dev/null || rm -f "$2"
}
