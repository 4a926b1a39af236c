#!/usr/bin/env bash
# What the anycast pair costs: CPU per call with replication on and off, link bytes per call,
# and the latency a message that lands on the wrong node gains by being handed to its owner.
# Node 1 alone, then node 1 replicating to node 2, then every cloud response landing on node 2
# (tests/pair.rs, pair_bench): two pointsman processes in network namespaces the bench makes
# (198.18.0.0/15, no link to the host), SIPp carrier and clouds. Needs root, iproute2, SIPp.
#
#   benches/pair/run.sh [--rate 1000] [--seconds 10] [--rounds 3] [--batch 4ms]
#
# --rounds: how many times the lone and replicating rows alternate (the median ratio is last);
# --batch: the nodes' [cluster] batch (without it, pointsman's default).
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=1000
SECONDS_EACH=10
BATCH=
ROUNDS=3
while [[ $# -gt 0 ]]; do
	case "$1" in
	--rate) RATE="$2"; shift 2 ;;
	--seconds) SECONDS_EACH="$2"; shift 2 ;;
	--batch) BATCH="$2"; shift 2 ;;
	--rounds) ROUNDS="$2"; shift 2 ;;
	-h | --help) sed -n 2,11p "$0"; exit 0 ;;
	*) echo "unknown option: $1" >&2; exit 2 ;;
	esac
done
[[ "$RATE" =~ ^[0-9]+$ && "$SECONDS_EACH" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[0-9]+$ ]] || { echo "rate, seconds and rounds are whole numbers" >&2; exit 2; }
[[ -z "$BATCH" || "$BATCH" =~ ^[0-9]+(ms|s)$ ]] || { echo "batch is a duration such as 1ms or 0s" >&2; exit 2; }
if [[ -n "$BATCH" ]]; then export POINTSMAN_PAIR_BATCH="$BATCH"; fi
POINTSMAN_PAIR_RATE="$RATE" POINTSMAN_PAIR_SECONDS="$SECONDS_EACH" POINTSMAN_PAIR_ROUNDS="$ROUNDS" \
	cargo test --release -p pointsman-e2e --test pair pair_bench -- --ignored --nocapture 2>&1 |
	grep -E '^\|'
