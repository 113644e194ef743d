#!/usr/bin/env bash
# Latency at a fixed rate, for setting builds side by side (run alternately: this host is noisy).
# Usage: scripts/bench-tails.sh [BIN_DIR ...]   (default: target/release, built first)
# For each of ROUNDS rounds (default 3) and each BIN_DIR in turn: a fresh broker on a data directory under
# TMPDIR (TMPDIR=/dev/shm: in memory), then `oxbow perf produce` and `oxbow perf e2e`, NUM_RECORDS (default
# 4,000,000) of 100 B at RATE records/s (default 800,000), acks=1, LINGER_MS (default 0.5). The client is the
# first BIN_DIR's, so that only the broker differs; with VARY=client the broker is the first BIN_DIR's and the
# client each BIN_DIR's in turn. Prints records/s and p50 / p95 / p99 / p99.9 in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release -p oxbow-broker -p oxbow-cli
  set -- target/release
fi
BINS=()
for dir in "$@"; do BINS+=("$(cd "$dir" && pwd)"); done
VARY=${VARY:-broker}
case $VARY in broker | client) ;; *) echo "VARY must be broker or client, not $VARY" >&2; exit 2 ;; esac
CLIENT=${BINS[0]}/oxbow
BROKER=${BINS[0]}/oxbow-broker
RATE=${RATE:-800000}
NUM_RECORDS=${NUM_RECORDS:-4000000}
LINGER_MS=${LINGER_MS:-0.5}
PORT=9586
DATA=$(mktemp -d)
PID=
# `|| true`: under `set -e` a failing command ends the trap early.
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:$PORT

# Runs one perf command; prints "records/s p50 p95 p99 p99.9".
measure() {
  "$CLIENT" perf "$@" --num-records "$NUM_RECORDS" --record-size 100 --throughput "$RATE" \
    --linger-ms "$LINGER_MS" --json 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_ms"]; print("{:,} records/s, p50 {} p95 {} p99 {} p99.9 {} ms".format(int(d["records_per_second"]), l["p50"], l["p95"], l["p99"], l["p99_9"]))'
}

for round in $(seq "${ROUNDS:-3}"); do
  for bin in "${BINS[@]}"; do
    if [ "$VARY" = client ]; then CLIENT=$bin/oxbow; else BROKER=$bin/oxbow-broker; fi
    rm -rf "$DATA/broker"
    "$BROKER" --data-dir "$DATA/broker" --listen "127.0.0.1:$PORT" >/dev/null 2>"$DATA/broker.log" &
    PID=$!
    for _ in $(seq 300); do "$CLIENT" topic list >/dev/null 2>&1 && break; sleep 0.1; done
    echo "round $round, $bin: produce $(measure produce --topic tails --acks 1)"
    echo "round $round, $bin: e2e     $(measure e2e --topic tails-e2e)"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  done
done
