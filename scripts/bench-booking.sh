#!/usr/bin/env bash
# A booking storm against the real multi-process system on PostgreSQL: three release-mode brokers
# (replication factor 3, min.insync.replicas 2), BookingService, two LabService instances and DataService,
# each its own process, and a throwaway PostgreSQL 15 cluster (fsync on, the defaults). `oxbow-local storm`
# books open-loop at RATE/s for SECONDS s, then BURST_RATE/s for BURST_SECONDS s, and prints accepted/s and
# booking-to-decision latency per phase (BookingService's acceptance time to LabService's decision time,
# read from LabService's tables). Everything lives under target/bench-booking and is stopped at the end.
# Usage: scripts/bench-booking.sh   Environment: RATE (800), STEADY_SECONDS (20), BURST_RATE (3x RATE), BURST_SECONDS (5),
# LAB_INSTANCES (2), SYSTEM_BIN (a directory with another build's oxbow-broker and oxbow-local to measure, e.g. an
# older commit's target/release; the storm itself always comes from this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-800}
SECONDS_STEADY=${STEADY_SECONDS:-20}
BURST_RATE=${BURST_RATE:-$((3 * RATE))}
BURST_SECONDS=${BURST_SECONDS:-5}
LAB_INSTANCES=${LAB_INSTANCES:-2}
PG_BIN=/usr/lib/postgresql/15/bin
cargo build --release -q -p oxbow-broker -p oxbow-system
STORM_BIN=$PWD/target/release
BIN=${SYSTEM_BIN:-$STORM_BIN}
OUT=$PWD/target/bench-booking
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$OUT/pg" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rm -rf "$OUT" && mkdir -p "$OUT"
[ "$(id -u)" = 0 ] && chown postgres "$OUT"
as_pg "$PG_BIN/initdb" -D "$OUT/pg" -U postgres --auth=trust -E UTF8 >/dev/null
PG_PORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" -D "$OUT/pg" -o "-p $PG_PORT -k $OUT -c listen_addresses=127.0.0.1" -w -l "$OUT/postgres.log" start >/dev/null
DB=postgres://postgres@127.0.0.1:$PG_PORT/postgres

ports=("$(free_port)" "$(free_port)" "$(free_port)")
controllers="1@127.0.0.1:${ports[0]},2@127.0.0.1:${ports[1]},3@127.0.0.1:${ports[2]}"
for i in 0 1 2; do
  OXBOW__CLUSTER__DEFAULT_REPLICATION_FACTOR=3 OXBOW__LOG__MIN_INSYNC_REPLICAS=2 RUST_LOG=warn \
    "$BIN/oxbow-broker" --node-id $((i + 1)) --listen "127.0.0.1:${ports[$i]}" --data-dir "$OUT/broker-$((i + 1))" \
    --controllers "$controllers" --cluster-secret-file "$OUT/cluster.secret" >/dev/null 2>"$OUT/broker-$((i + 1)).log" &
  pids+=($!)
  [ $i = 0 ] && { for _ in $(seq 50); do [ -s "$OUT/cluster.secret" ] && break; sleep 0.1; done; }
done
BOOTSTRAP="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"

service() { # kind name port
  local prefix=$(echo "$1" | tr a-z A-Z)
  env "${prefix}__BROKER__BOOTSTRAP=$BOOTSTRAP" "${prefix}__BROKER__REPLICATION_FACTOR=3" \
    "${prefix}__HTTP__LISTEN=127.0.0.1:$3" "${prefix}__LOG__LEVEL=warn" \
    "${prefix}__DATABASE__URL=$DB" "${prefix}__DATABASE__DATA_DIR=$OUT/$2" \
    "$BIN/oxbow-local" service "$1" >/dev/null 2>"$OUT/$2.log" &
  pids+=($!)
}
BOOKING_PORT=$(free_port)
service booking booking "$BOOKING_PORT"
ready=("$BOOKING_PORT")
for n in $(seq "$LAB_INSTANCES"); do
  port=$(free_port); service lab "lab-$n" "$port"; ready+=("$port")
done
port=$(free_port); service data data "$port"; ready+=("$port")
for port in "${ready[@]}"; do
  for _ in $(seq 300); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "127.0.0.1:$port/readyz" >/dev/null || { echo "the service on $port is not ready" >&2; tail -5 "$OUT"/*.log >&2; exit 1; }
done

echo "== storm: $RATE/s for $SECONDS_STEADY s, then $BURST_RATE/s for $BURST_SECONDS s; $LAB_INSTANCES LabService instances" >&2
"$STORM_BIN/oxbow-local" storm --booking "127.0.0.1:$BOOKING_PORT" --rate "$RATE" --seconds "$SECONDS_STEADY" \
  --burst-rate "$BURST_RATE" --burst-seconds "$BURST_SECONDS" --database-url "$DB" | tee "$OUT/report.md"
