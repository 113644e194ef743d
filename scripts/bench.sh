#!/usr/bin/env bash
# Runs the standard benchmark scenarios against a fresh release-mode broker on this machine and writes
# the results table into docs/benchmarks.md (between the BEGIN/END markers).
# Usage: scripts/bench.sh [--json FILE]
#   --json FILE  also writes every scenario's figures as JSON lines (name, settings, command, records/s,
#                MB/s, latency percentiles, ...) to FILE, to set another system's figures beside them.
# BENCH_ONLY=REGEX runs only the scenarios whose name matches (the table is then printed, not written).
# BENCH_BIN=DIR runs the binaries in DIR instead of building target/release (to set two builds side by side).
# Needs python3 (to read the tools' --json output). Takes about 15 minutes; uses a temporary data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
JSON_OUT=
if [ "${1:-}" = "--json" ]; then
  JSON_OUT=${2:?--json needs a file}
  case $JSON_OUT in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
fi
if [ -z "${BENCH_BIN:-}" ]; then cargo build --release -p oxbow-broker -p oxbow-cli; fi
BIN=${BENCH_BIN:-target/release}
DATA=$(mktemp -d)
PORT=${BENCH_PORT:-9391}
export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:$PORT
"$BIN/oxbow-broker" --data-dir "$DATA/single" --listen "127.0.0.1:$PORT" >/dev/null 2>"$DATA/broker.log" &
BROKER=$!
# `|| true`: under `set -e` a failing command (wait on a killed broker) ends the trap early.
trap 'kill $BROKER 2>/dev/null || true; wait $BROKER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do "$BIN/oxbow" topic list >/dev/null 2>&1 && break; sleep 0.1; done
# The broker's resident memory, sampled every second for the whole single-broker run.
( while kill -0 $BROKER 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$BROKER/status" 2>/dev/null; sleep 1; done ) >"$DATA/rss.txt" &

RESULTS=$DATA/results.jsonl
run() { # name, settings, command...
  local name=$1 settings=$2; shift 2
  if [ -n "${BENCH_ONLY:-}" ] && ! [[ $name =~ $BENCH_ONLY ]]; then return; fi
  echo "== $name: $*" >&2
  # Start each scenario with no dirty pages left by the previous one (writeback would compete with it), and
  # with memory the VM has backed: this VM hands the guest its RAM lazily and takes freed pages back within
  # seconds, so the first write to a page costs a host fault (dd into fresh page cache: ~0.4-0.7 GB/s; into
  # pages freed a moment ago: 4-10 GB/s). Touching (then freeing) BENCH_WARM_MB of anonymous memory just
  # before the scenario gives the page cache recycled pages, as on a machine whose memory is all in use,
  # without writing anything to disk. BENCH_WARM_MB=0 turns this off.
  sync
  python3 -c "b = b'\x01' * (${BENCH_WARM_MB:-4000} << 20)"
  local out
  out=$("$@" --json | tail -1)
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d["name"]=sys.argv[1]; d["settings"]=sys.argv[2]; d["command"]=sys.argv[4]; print(json.dumps(d))' \
    "$name" "$settings" "$out" "oxbow $(echo "${@:2}")" >>"$RESULTS"
  if [ -n "$JSON_OUT" ]; then tail -1 "$RESULTS" >>"$JSON_OUT"; fi
}

"$BIN/oxbow" topic create durable --config flush.ms=0 >/dev/null
run "produce 100 B" "acks=1, flush.ms=1000 (OS writeback), 1 partition, batch 512 KiB, linger 5 ms" \
  "$BIN/oxbow" perf produce --topic p100 --num-records 5000000 --record-size 100 --acks 1
run "produce 100 B, send_batch 1000" "acks=1, flush.ms=1000, 1 partition, records handed over 1000 at a time with one completion (latency per group)" \
  "$BIN/oxbow" perf produce --topic pgroups --num-records 5000000 --record-size 100 --acks 1 --send-batch 1000
run "produce 1 KB" "acks=1, flush.ms=1000, 1 partition, batch 512 KiB, linger 5 ms" \
  "$BIN/oxbow" perf produce --topic p1k --num-records 1000000 --record-size 1000 --acks 1
run "produce 100 B durable" "acks=all, flush.ms=0 (ack after fsync, group commit), 1 partition" \
  "$BIN/oxbow" perf produce --topic durable --num-records 3000000 --record-size 100 --acks all
run "consume 100 B" "page cache, 1 partition, fetch up to 8 MiB per partition" \
  "$BIN/oxbow" perf consume --topic p100 --num-records 5000000
run "consume 1 KB" "page cache, 1 partition" \
  "$BIN/oxbow" perf consume --topic p1k --num-records 1000000
for codec in none lz4 zstd; do
  run "learner activity, $codec" "acks=1, 1 partition, batch 512 KiB, linger 5 ms, compression $codec, as fast as possible" \
    "$BIN/oxbow" perf produce --topic "learners-$codec" --workload learner-activity --num-records 1000000 --compression $codec
done
run "produce 100 B, 1000 partitions, 8 producers" "acks=1, 1000 partitions, 8 producers (one connection each), keyless records spread by the sticky partitioner, batch 512 KiB, linger 5 ms" \
  "$BIN/oxbow" perf produce --topic p1000 --partitions 1000 --producers 8 --num-records 5000000 --record-size 100 --acks 1
PEAK=$(python3 -c 'import json,sys; print(int(([json.loads(l)["records_per_second"] for l in open(sys.argv[1]) if json.loads(l)["name"]=="produce 100 B"] or [2000000])[0]))' "$RESULTS")
HALF=$((PEAK / 2))
run "produce 100 B at 50% of peak" "acks=1, offered $HALF records/s, linger 0.5 ms" \
  "$BIN/oxbow" perf produce --topic half --num-records $((HALF * 8)) --record-size 100 --acks 1 --throughput $HALF --linger-ms 0.5
run "end to end 100 B at 50% of peak" "acks=1, offered $HALF records/s, linger 0.5 ms, consumer in the same process" \
  "$BIN/oxbow" perf e2e --topic e2e --num-records $((HALF * 8)) --throughput $HALF --record-size 100 --linger-ms 0.5
run "learner activity, base rate" "acks=1, 6 partitions, 20 000 events/s, keyed by learner" \
  "$BIN/oxbow" perf produce --topic learners --partitions 6 --workload learner-activity --num-records 200000 --throughput 20000
run "learner activity, 10x" "acks=1, 6 partitions, 200 000 events/s, keyed by learner" \
  "$BIN/oxbow" perf produce --topic learners --partitions 6 --workload learner-activity --num-records 2000000 --throughput 200000
run "learner activity, 10x, group grows 1 to 3" "acks=1, 6 partitions, 200 000 events/s, consumers join at 0, 5 and 10 s, latency send to receipt" \
  "$BIN/oxbow" perf e2e --topic learners-e2e --partitions 6 --workload learner-activity --group analytics --consumers 3 --num-records 6000000 --throughput 200000
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$BROKER/status")
RSS_SAMPLES=$(sort -n "$DATA/rss.txt" | awk 'NR==1 {min=$1} {max=$1} END {printf "%d-%d", min/1024, max/1024}')

# The two latency rows again, on a fresh broker with the first one's data deleted: the machine's proactive
# memory reclaim (kdamond) takes more CPU the more page cache there is (see docs/benchmarks.md).
kill $BROKER; wait $BROKER 2>/dev/null || true
rm -rf "$DATA/single"
"$BIN/oxbow-broker" --data-dir "$DATA/fresh" --listen "127.0.0.1:$PORT" >/dev/null 2>"$DATA/fresh.log" &
BROKER=$!
for _ in $(seq 100); do "$BIN/oxbow" topic list >/dev/null 2>&1 && break; sleep 0.1; done
run "produce 100 B at 50% of peak, fresh broker" "as above, on a fresh broker" \
  "$BIN/oxbow" perf produce --topic half --num-records $((HALF * 8)) --record-size 100 --acks 1 --throughput $HALF --linger-ms 0.5
run "end to end 100 B at 50% of peak, fresh broker" "as above, on a fresh broker" \
  "$BIN/oxbow" perf e2e --topic e2e --num-records $((HALF * 8)) --throughput $HALF --record-size 100 --linger-ms 0.5
kill $BROKER; wait $BROKER 2>/dev/null || true
rm -rf "$DATA/fresh"

# Three brokers on this machine, replication factor 3, min.insync.replicas 2, acks=all.
PORTS=($((PORT + 1)) $((PORT + 2)) $((PORT + 3)))
CONTROLLERS="1@127.0.0.1:${PORTS[0]},2@127.0.0.1:${PORTS[1]},3@127.0.0.1:${PORTS[2]}"
PIDS=()
for i in 0 1 2; do
  OXBOW__CLUSTER__CONTROLLERS=$CONTROLLERS OXBOW__CLUSTER__SECRET_FILE="$DATA/cluster.secret" "$BIN/oxbow-broker" --node-id $((i + 1)) --data-dir "$DATA/rf3-$i" \
    --listen "127.0.0.1:${PORTS[$i]}" >/dev/null 2>"$DATA/rf3-$i.log" &
  PIDS+=($!)
done
trap 'kill ${PIDS[*]} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
export OXBOW_BOOTSTRAP_SERVER=127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}
for _ in $(seq 300); do
  "$BIN/oxbow" topic create rf3 --replication-factor 3 --config min.insync.replicas=2 >/dev/null 2>&1 && break
  sleep 0.2
done
run "produce 100 B, 3 brokers RF=3" "acks=all, replication factor 3, min.insync.replicas=2, flush.ms=1000, 1 partition, idempotent" \
  "$BIN/oxbow" perf produce --topic rf3 --num-records 5000000 --record-size 100 --acks all
run "produce 1 KB, 3 brokers RF=3" "acks=all, replication factor 3, min.insync.replicas=2, flush.ms=1000, 1 partition, idempotent" \
  "$BIN/oxbow" perf produce --topic rf3 --num-records 1000000 --record-size 1000 --acks all

python3 - "$RESULTS" "$RSS_KB" "$RSS_SAMPLES" "${BENCH_WARM_MB:-4000}" <<'PY'
import json, sys, re, subprocess, platform
rows = [json.loads(line) for line in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
table = ["| scenario | records/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | also | settings | command |", "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    l = r["latency_ms"]
    also = []
    if "send_call_ms" in r:
        also.append(f"send call p99 {r['send_call_ms']['p99']:.3f} ms, max {r['send_call_ms']['max']:.1f} ms")
    if r.get("stored_bytes") and "compression" in r["settings"]:
        also.append(f"{r['compression']}: {r['payload_bytes'] / max(r['stored_bytes'], 1):.2f} bytes of keys and values per byte stored")
    if r.get("lag_by_members"):
        also.append("largest lag (records) with " + ", ".join(f"{p['members']} consumer(s): {p['max_lag']:,} (then {p['end_lag']:,})" for p in r["lag_by_members"]))
    table.append(f"| {r['name']} | {r['records_per_second']:,.0f} | {r['mb_per_second']:.1f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['p99_9']:.2f} | {l['max']:.2f} | {'; '.join(also)} | {r['settings']} | `{r['command']}` |")
by_name = {r["name"]: r for r in rows}
if not all(name in by_name for name in ("produce 100 B", "produce 1 KB", "produce 100 B durable", "produce 100 B, 3 brokers RF=3", "produce 1 KB, 3 brokers RF=3")):
    print("\n".join(table))  # a BENCH_ONLY run: the table is shown, docs/benchmarks.md is left as it is
    sys.exit(0)
ratio = lambda a, b: 100 * by_name[a]["records_per_second"] / by_name[b]["records_per_second"]
body = "\n".join([
    f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, broker and client sharing them; {platform.platform()}.",
    f"Before each scenario: `sync`, then {sys.argv[4]} MB of memory touched and freed so that the page cache gets memory the VM has backed (0: not done; see below).",
    f"Broker resident memory: peak (VmHWM) {int(sys.argv[2]) // 1024} MiB; sampled every second over the single-broker runs: {sys.argv[3]} MiB.",
    f"Durable mode: {ratio('produce 100 B durable', 'produce 100 B'):.0f}% of acks=1. Three brokers RF=3 acks=all: {ratio('produce 100 B, 3 brokers RF=3', 'produce 100 B'):.0f}% of one broker (100 B), {ratio('produce 1 KB, 3 brokers RF=3', 'produce 1 KB'):.0f}% (1 KB).",
    "", *table,
])
path = "docs/benchmarks.md"
text = open(path).read()
text = re.sub(r"<!-- BEGIN RESULTS -->.*<!-- END RESULTS -->", "<!-- BEGIN RESULTS -->\n" + body + "\n<!-- END RESULTS -->", text, flags=re.S)
open(path, "w").write(text)
print(body)
PY
