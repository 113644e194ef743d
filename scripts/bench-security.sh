#!/usr/bin/env bash
# The cost of security: the same produce and consume scenarios against a plaintext broker and a secured one
# (TLS 1.3 on the listener, SCRAM-SHA-256 login, ACLs enforced), alternating, ROUNDS times each, in one run.
# Prints one line per scenario and mode with the median records/s and MB/s. Usage: scripts/bench-security.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oxbow-broker -p oxbow-cli >&2
BIN=$PWD/target/release
DATA=$(mktemp -d)
ROUNDS=${ROUNDS:-3}
PIDS=()
# `|| true`: under `set -e` a failing command (kill of an empty list, wait on a killed broker) ends the trap early.
trap 'kill ${PIDS[*]} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT

"$BIN/oxbow" certs create --dir "$DATA/certs" --hosts localhost,127.0.0.1 >/dev/null
printf 'bench-admin-password' > "$DATA/admin.password"
"$BIN/oxbow-broker" --data-dir "$DATA/plain" --listen 127.0.0.1:9491 >/dev/null 2>"$DATA/plain.log" &
PIDS+=($!)
OXBOW__SECURITY__AUTHENTICATION=scram OXBOW__SECURITY__AUTHORIZATION=acl \
OXBOW__SECURITY__ADMIN_PASSWORD_FILE="$DATA/admin.password" \
OXBOW__SECURITY__TLS_CERT_FILE="$DATA/certs/broker.pem" OXBOW__SECURITY__TLS_KEY_FILE="$DATA/certs/broker.key" \
OXBOW__SECURITY__TLS_CA_FILE="$DATA/certs/ca.pem" \
  "$BIN/oxbow-broker" --data-dir "$DATA/secured" --listen 127.0.0.1:9492 >/dev/null 2>"$DATA/secured.log" &
PIDS+=($!)
plain() { "$BIN/oxbow" --bootstrap-server 127.0.0.1:9491 "$@"; }
# The admin is a super user: the ACL check still runs on every request (and answers yes).
secured() {
  "$BIN/oxbow" --bootstrap-server localhost:9492 --tls-ca-file "$DATA/certs/ca.pem" \
    --user admin --password-file "$DATA/admin.password" "$@"
}
for _ in $(seq 100); do plain topic list >/dev/null 2>&1 && secured topic list >/dev/null 2>&1 && break; sleep 0.1; done

RESULTS=$DATA/results.txt
for round in $(seq "$ROUNDS"); do
  for mode in plain secured; do
    for size in 100 1000; do
      n=$((size == 100 ? 3000000 : 600000))
      topic="t$size-$round"
      sync
      python3 -c "b = b'\x01' * (${BENCH_WARM_MB:-2000} << 20)"
      $mode perf produce --topic "$topic" --num-records $n --record-size $size --acks 1 --json | tail -1 \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print('$mode produce $size', d['records_per_second'], d['mb_per_second'])" >>"$RESULTS"
      $mode perf consume --topic "$topic" --num-records $n --json | tail -1 \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print('$mode consume $size', d['records_per_second'], d['mb_per_second'])" >>"$RESULTS"
    done
  done
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, verb, size, rps, mbps = line.split()
    rows.setdefault((verb, int(size), mode), []).append((float(rps), float(mbps)))
print("| scenario | plaintext records/s (MB/s) | TLS + SCRAM + ACLs records/s (MB/s) | secured / plaintext |")
print("|---|---|---|---|")
for verb in ("produce", "consume"):
    for size in (100, 1000):
        plain = rows[(verb, size, "plain")]; sec = rows[(verb, size, "secured")]
        p = statistics.median(r for r, _ in plain); s = statistics.median(r for r, _ in sec)
        pm = statistics.median(m for _, m in plain); sm = statistics.median(m for _, m in sec)
        print(f"| {verb} {size} B | {p/1e6:.2f} M ({pm:.0f}) | {s/1e6:.2f} M ({sm:.0f}) | {s/p:.0%} |")
PY
