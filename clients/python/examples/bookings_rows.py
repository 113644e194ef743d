"""Reads the lab-booking system's `bookings` topic into rows (a list of dicts, one per booking), the shape
pandas.DataFrame(rows) takes, without making pandas a dependency; prints bookings per city.

    python3 clients/python/examples/bookings_rows.py --bootstrap 127.0.0.1:9092 \
        [--ca-file data/local/secrets/ca.pem --user admin --password-file data/local/secrets/admin.password]
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import msgpack

import oxbow


def booking_rows(config: oxbow.ConsumerConfig, topic: str = "bookings") -> list[dict[str, Any]]:
    """Every booking event so far, as a flat row with its log position."""
    with oxbow.Consumer(config) as consumer:
        consumer.assign_topic(topic)
        rows = []
        for record in consumer.records(timeout=2.0):
            event = msgpack.unpackb(record["value"], raw=False)  # BookingService writes MessagePack maps
            rows.append({**event, "partition": record["partition"], "offset": record["offset"]})
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--ca-file")
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    args = parser.parse_args()
    password = open(args.password_file).read().strip() if args.password_file else None
    security = oxbow.Security(tls_ca_file=args.ca_file, user=args.user, password=password)
    rows = booking_rows(oxbow.ConsumerConfig(args.bootstrap, security=security, auto_offset_reset="earliest"))
    per_city = collections.Counter(row["city"] for row in rows)
    print(f"{len(rows)} bookings")
    for city, n in sorted(per_city.items()):
        print(f"{city:12} {n}")


if __name__ == "__main__":
    main()
