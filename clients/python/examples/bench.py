"""Produce and consume N records of SIZE bytes with the Python client; prints records/s for each.

    python3 clients/python/examples/bench.py --bootstrap 127.0.0.1:9092 [--records 200000] [--size 100] [--blocking]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import oxbow
from oxbow import aio


async def run_async(bootstrap: str, topic: str, n: int, value: bytes) -> tuple[float, float]:
    async with aio.Producer(aio.ProducerConfig(bootstrap)) as producer:
        started = time.perf_counter()
        futures = [await producer.send(topic, value, partition=0) for _ in range(n)]
        await producer.flush()
        await asyncio.gather(*futures)
        produce = n / (time.perf_counter() - started)
    consumer = aio.Consumer(aio.ConsumerConfig(bootstrap, auto_offset_reset="earliest"))
    consumer.assign([(topic, 0)])
    started = time.perf_counter()
    read = 0
    while read < n:
        read += len(await consumer.poll(1.0))
    consume = n / (time.perf_counter() - started)
    await consumer.close()
    return produce, consume


def run_blocking(bootstrap: str, topic: str, n: int, value: bytes) -> tuple[float, float]:
    with oxbow.Producer(oxbow.ProducerConfig(bootstrap)) as producer:
        started = time.perf_counter()
        futures = [producer.send(topic, value, partition=0) for _ in range(n)]
        producer.flush()
        for future in futures:
            future.result()
        produce = n / (time.perf_counter() - started)
    with oxbow.Consumer(oxbow.ConsumerConfig(bootstrap, auto_offset_reset="earliest")) as consumer:
        consumer.assign([(topic, 0)])
        started = time.perf_counter()
        read = 0
        while read < n:
            read += len(consumer.poll(1.0))
        consume = n / (time.perf_counter() - started)
    return produce, consume


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--blocking", action="store_true")
    args = parser.parse_args()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    with oxbow.Admin(oxbow.ClientConfig(args.bootstrap)) as admin:
        admin.create_topic(topic, partitions=1)
    value = b"x" * args.size
    if args.blocking:
        produce, consume = run_blocking(args.bootstrap, topic, args.records, value)
    else:
        produce, consume = asyncio.run(run_async(args.bootstrap, topic, args.records, value))
    crc = "C crc32c" if oxbow.protocol.CRC32C_ACCELERATED else "pure-Python CRC-32C"
    api = "blocking" if args.blocking else "asyncio"
    print(f"{api}, {crc}: produce {produce:,.0f} records/s, consume {consume:,.0f} records/s ({args.records} x {args.size} B)")


if __name__ == "__main__":
    main()
