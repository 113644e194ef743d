#!/usr/bin/env bash
# Many partitions and restart time, on one release-mode broker in a temporary data directory:
#  1. PARTITIONS (10,000) partitions in topics of 1,000: time to create them, broker RSS and open files,
#     idle CPU over 10 s, metadata and topic-create latency with them all present, time until the last
#     partition takes a write after a clean restart and after kill -9;
#  2. RECOVERY_GB (20) GB of 1 KB records produced over 1,000 partitions by 8 producers, then: kill -9 under
#     load and restart (page cache warm), the same with the page cache dropped (as after a machine crash),
#     a clean restart with the cache dropped.
# Usage: scripts/bench-scale.sh   (root for dropping the page cache; needs RECOVERY_GB + 6 GB of free disk)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oxbow-broker -p oxbow-cli
BIN=$PWD/target/release
DATA=$(mktemp -d)
PORT=${BENCH_PORT:-9395}
PARTITIONS=${PARTITIONS:-10000}
RECOVERY_GB=${RECOVERY_GB:-20}
export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:$PORT
BROKER=
trap 'kill -9 $BROKER 2>/dev/null || true; rm -rf "$DATA"' EXIT

start() { # data dir
  "$BIN/oxbow-broker" --data-dir "$1" --listen "127.0.0.1:$PORT" >/dev/null 2>>"$DATA/broker.log" &
  BROKER=$!
}
seconds_since() { python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }
# Waits until partition $2 of topic $1 takes a write.
writable() { until echo x | "$BIN/oxbow" produce "$1" --partition "$2" >/dev/null 2>&1; do sleep 0.05; done; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$BROKER/stat"; }
stop() { kill "$BROKER"; while kill -0 "$BROKER" 2>/dev/null; do sleep 0.1; done; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

echo "== $PARTITIONS partitions"
start "$DATA/many"
until "$BIN/oxbow" topic list >/dev/null 2>&1; do sleep 0.1; done
TOPICS=$((PARTITIONS / 1000))
started=$(date +%s.%N)
for t in $(seq 1 "$TOPICS"); do "$BIN/oxbow" topic create "many$t" --partitions 1000 >/dev/null; done
echo "created $PARTITIONS partitions in $(seconds_since "$started") s"
writable "many$TOPICS" 999
sleep 3
echo "broker: $(awk '/VmRSS/ {print $2 / 1024 " MiB resident"}' /proc/$BROKER/status), $(ls /proc/$BROKER/fd | wc -l) open files"
before=$(cpu_ticks); sleep 10; after=$(cpu_ticks)
echo "idle: $((after - before)) ms of CPU per second with $PARTITIONS partitions"
started=$(date +%s.%N); "$BIN/oxbow" topic list >/dev/null; echo "topic list (metadata): $(seconds_since "$started") s"
started=$(date +%s.%N); "$BIN/oxbow" topic create one-more >/dev/null; echo "create one more topic: $(seconds_since "$started") s"
stop
started=$(date +%s.%N); start "$DATA/many"; writable "many$TOPICS" 999
echo "clean restart: the last partition writable after $(seconds_since "$started") s"
kill -9 "$BROKER"; sleep 0.2
started=$(date +%s.%N); start "$DATA/many"; writable "many$TOPICS" 999
echo "kill -9 restart: the last partition writable after $(seconds_since "$started") s"
stop
rm -rf "$DATA/many"

echo "== recovery with $RECOVERY_GB GB in 1000 partitions"
start "$DATA/big"
until "$BIN/oxbow" topic list >/dev/null 2>&1; do sleep 0.1; done
"$BIN/oxbow" topic create big --partitions 1000 >/dev/null
"$BIN/oxbow" perf produce --topic big --producers 8 --num-records $((RECOVERY_GB * 1000000)) --record-size 1000 --acks 1 --json >/dev/null
echo "stored: $(du -sh "$DATA/big" | cut -f1)"
sleep 6 # a checkpoint of the recovery points
for cache in warm dropped; do
  "$BIN/oxbow" perf produce --topic big --producers 8 --num-records 3000000 --record-size 1000 --acks 1 --json >/dev/null 2>&1 &
  LOAD=$!
  sleep 8
  kill -9 "$BROKER"; kill "$LOAD" 2>/dev/null || true; wait "$LOAD" 2>/dev/null || true
  [ "$cache" = dropped ] && drop_caches
  started=$(date +%s.%N); start "$DATA/big"; writable big 999
  checked=$(grep -o 'checked_bytes=[0-9]*' "$DATA/broker.log" | cut -d= -f2 | awk '{s += $1} END {printf "%.0f", s / 1e6}')
  : >"$DATA/broker.log"
  echo "kill -9 under load, page cache $cache: the last partition writable after $(seconds_since "$started") s ($checked MB checked)"
  sleep 6
done
stop
drop_caches
started=$(date +%s.%N); start "$DATA/big"; writable big 999
echo "clean restart, page cache dropped: the last partition writable after $(seconds_since "$started") s"
rm -f "$DATA/big/recovery-points"; stop; rm -f "$DATA/big/recovery-points"; drop_caches
started=$(date +%s.%N); start "$DATA/big"; writable big 999
echo "start without recovery points, page cache dropped: the last partition writable after $(seconds_since "$started") s"
stop
