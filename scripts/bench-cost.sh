#!/usr/bin/env bash
# What records cost in CPU, for setting two builds side by side (run them alternately: this host is noisy).
# Usage: scripts/bench-cost.sh [BIN_DIR]   (default: target/release, built first)
#   clients: CPU-seconds per million 100 B records of `oxbow perf produce` (with --send-batch 1000 and with a
#            callback per record) and `oxbow perf consume`, /usr/bin/time around the tool, one fresh broker;
#   RF=3:    800,000 records of 1 KB, then 5,000,000 of 100 B, with acks=all into three fresh brokers:
#            records/s, and the CPU the brokers and the client used (from /proc/<pid>/stat and /usr/bin/time);
#   one:     the same two runs with acks=1 into one fresh broker (what RF=3 is set beside).
# PRODUCE_FLAGS adds flags to those two runs (say --batch-size 1048576).
# THROUGHPUT_MB=n offers n MB/s in the RF=3 and one-broker runs instead of as much as they take (for latency).
# COST_ONLY=clients|rf3|one runs one part. TMPDIR=/dev/shm puts the data directories in memory (no disk).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${1:-}" ]; then cargo build --release -p oxbow-broker -p oxbow-cli; fi
BIN=$(cd "${1:-target/release}" && pwd)
DATA=$(mktemp -d)
PIDS=()
# `|| true`: under `set -e` a failing command (kill of an empty list, wait on a killed broker) ends the trap early.
trap 'kill ${PIDS[*]} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
TICKS=$(getconf CLK_TCK)

wait_up() { for _ in $(seq 300); do "$BIN/oxbow" topic list >/dev/null 2>&1 && return; sleep 0.1; done; }
brokers_cpu_ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# Runs a tool under /usr/bin/time; prints "records/s client-CPU-seconds".
timed() {
  /usr/bin/time -f "%U %S" -o "$DATA/time" "$@" --json 2>/dev/null | tail -1 >"$DATA/out"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); u,s=map(float,open(sys.argv[2]).read().split()); print(int(d["records_per_second"]), u+s, d["latency_ms"]["p50"], d["latency_ms"]["p99"])' "$DATA/out" "$DATA/time"
}

part() { [ -z "${COST_ONLY:-}" ] || [ "$COST_ONLY" = "$1" ]; }

# 1 KB and 100 B records into topic rf3 with acks=$2: records/s, broker and client CPU.
produce_runs() {
  for run in "1000 800000" "100 5000000"; do
    read -r size count <<<"$run"
    sync
    python3 -c "b = b'\x01' * (4000 << 20)"
    before=$(brokers_cpu_ticks)
    start=$(date +%s.%N)
    rate_flag=()
    if [ -n "${THROUGHPUT_MB:-}" ]; then rate_flag=(--throughput $((THROUGHPUT_MB * 1000000 / size))); fi
    read -r rate cpu p50 p99 < <(timed "$BIN/oxbow" perf produce --topic rf3 --num-records "$count" --record-size "$size" --acks "$2" "${rate_flag[@]}" ${PRODUCE_FLAGS:-})
    wall=$(python3 -c "import time; print(time.time() - $start)")
    after=$(brokers_cpu_ticks)
    python3 -c 'import sys; label, size, count, rate, cpu, ticks, hz, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]); b = ticks / hz; mb = size * count / 1e6
print(f"{label} {size} B acks={sys.argv[9]}: {rate:,} records/s ({rate * size / 1e6:.0f} MB/s); brokers {b:.2f} CPU-s ({b * 1000 / mb:.2f} ms per MB), client {cpu:.2f} CPU-s; {(b + cpu) / wall:.2f} of 2 cores busy; latency p50 {sys.argv[10]} p99 {sys.argv[11]} ms")' \
      "$1" "$size" "$count" "$rate" "$cpu" $((after - before)) "$TICKS" "$wall" "$2" "$p50" "$p99"
  done
}

if part clients; then
  "$BIN/oxbow-broker" --data-dir "$DATA/one" --listen 127.0.0.1:9581 >/dev/null 2>"$DATA/one.log" &
  PIDS=($!)
  export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:9581
  wait_up
  N=5000000
  for case in "produce, send_batch 1000|perf produce --topic groups --send-batch 1000 --acks 1 --record-size 100" \
              "produce, callback per record|perf produce --topic singles --acks 1 --record-size 100" \
              "consume|perf consume --topic groups"; do
    read -r rate cpu _ < <(timed "$BIN/oxbow" ${case#*|} --num-records $N)
    python3 -c 'import sys; print(f"{sys.argv[1]}: {int(sys.argv[2]):,} records/s, {float(sys.argv[3]) / 5:.3f} client CPU-s per million")' "${case%%|*}" "$rate" "$cpu"
  done
  kill "${PIDS[@]}"; wait 2>/dev/null || true; PIDS=()
fi

if part rf3; then
  PORTS=(9582 9583 9584)
  CONTROLLERS="1@127.0.0.1:${PORTS[0]},2@127.0.0.1:${PORTS[1]},3@127.0.0.1:${PORTS[2]}"
  for i in 0 1 2; do
    OXBOW__CLUSTER__CONTROLLERS=$CONTROLLERS OXBOW__CLUSTER__SECRET_FILE="$DATA/secret" "$BIN/oxbow-broker" \
      --node-id $((i + 1)) --data-dir "$DATA/rf3-$i" --listen "127.0.0.1:${PORTS[$i]}" >/dev/null 2>"$DATA/rf3-$i.log" &
    PIDS+=($!)
  done
  export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}
  for _ in $(seq 300); do
    "$BIN/oxbow" topic create rf3 --replication-factor 3 --config min.insync.replicas=2 >/dev/null 2>&1 && break
    sleep 0.2
  done
  produce_runs "RF=3" all
fi

if part one; then
  if [ ${#PIDS[@]} -gt 0 ]; then kill "${PIDS[@]}"; wait 2>/dev/null || true; PIDS=(); fi
  "$BIN/oxbow-broker" --data-dir "$DATA/alone" --listen 127.0.0.1:9585 >/dev/null 2>"$DATA/alone.log" &
  PIDS=($!)
  export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:9585
  wait_up
  "$BIN/oxbow" topic create rf3 >/dev/null
  produce_runs "one broker" 1
fi
