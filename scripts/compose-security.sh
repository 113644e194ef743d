#!/usr/bin/env bash
# Security for docker-compose.yml, run inside the oxbow image by two one-shot services:
#   compose-security.sh secrets   before the brokers: a development CA and certificates (oxbow certs create),
#                                 the cluster secret and a password per user, in the shared secrets volume
#                                 (made once, reused after)
#   compose-security.sh grant     once the brokers are healthy, as the admin: the service users, their ACLs
#                                 and the topics, from system/least-privilege.conf (the file oxbow-local uses)
set -euo pipefail
dir=/var/lib/oxbow-secret
conf=${LEAST_PRIVILEGE:-/etc/oxbow/least-privilege.conf}
users() { awk '$1 == "acl" && !seen[$2]++ { print $2 }' "$conf"; }

case "${1:-}" in
  secrets)
    umask 077
    [ -s "$dir/broker.pem" ] || oxbow certs create --dir "$dir" --hosts broker-1,broker-2,broker-3,localhost,127.0.0.1 >/dev/null
    for name in cluster admin $(users); do
      file="$dir/$name.password"
      [ "$name" = cluster ] && file="$dir/cluster.secret"
      [ -s "$file" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file"
    done
    echo "secrets ready in $dir"
    ;;
  grant)
    for user in $(users); do
      oxbow user create "$user" --user-password-file "$dir/$user.password"
    done
    while read -r kind user resource pattern name operation; do
      [ "$kind" = acl ] || continue
      prefixed=()
      [ "$pattern" = prefixed ] && prefixed=(--prefixed)
      oxbow acl add --principal "User:$user" --operation "$operation" "--$resource" "$name" "${prefixed[@]}"
    done < "$conf"
    while read -r kind name partitions _; do
      [ "$kind" = topic ] || continue
      if ! out=$(oxbow topic create "$name" --partitions "$partitions" --replication-factor 3 2>&1); then
        grep -q TOPIC_ALREADY_EXISTS <<<"$out" || { echo "$out" >&2; exit 1; }
      fi
    done < "$conf"
    echo "users, ACLs and topics granted"
    ;;
  *)
    echo "usage: $0 secrets|grant" >&2
    exit 2
    ;;
esac
