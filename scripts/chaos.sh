#!/usr/bin/env bash
# The Jepsen-style suite's long run: every nemesis (kill -9 of the busiest leader, SIGSTOP past the session,
# kill -9 of two brokers, a rolling SIGTERM restart, kill -9 of all three, a broker cut off from the others)
# CYCLES times per seed against three release-mode brokers, four idempotent acks=all producers at RATE
# records/s each and a consumer group of three. Each run's history, report and broker logs go to
# target/chaos/seed-<seed>/; the reports are printed. Exits non-zero if any run finds a safety violation.
# Usage: scripts/chaos.sh [seed...]   (default seeds: 1 2). Environment: CYCLES (3), RATE (400), CHAOS_ARGS
# (more oxbow-chaos flags, say "--max-in-flight 16 --linger-ms 0" for producers that keep 16 batches in flight).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oxbow-broker -p oxbow-chaos
SEEDS=("$@")
[ ${#SEEDS[@]} -eq 0 ] && SEEDS=(1 2)
status=0
for seed in "${SEEDS[@]}"; do
  out=target/chaos/seed-$seed
  rm -rf "$out"
  echo "== seed $seed -> $out" >&2
  if ! target/release/oxbow-chaos --seed "$seed" --cycles "${CYCLES:-3}" --rate "${RATE:-400}" --out "$out" ${CHAOS_ARGS:-}; then
    status=1
  fi
done
exit $status
