"""The Python client against real brokers (one, and three): round trips with the Rust CLI, a Python and a
Rust member sharing a group, idempotent retries through a leader kill, resuming from committed offsets."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

import oxbow
from oxbow import aio

from conftest import Broker, cli, eventually


def test_records_round_trip_with_the_rust_cli(broker: Broker) -> None:
    config = oxbow.ClientConfig(broker.addr)
    with oxbow.Admin(config) as admin:
        admin.create_topic("texts", partitions=1, replication_factor=1)
        with pytest.raises(oxbow.BrokerError) as refused:
            admin.create_topic("texts", partitions=1, replication_factor=1)
        assert (refused.value.code, refused.value.name) == (6, "TOPIC_ALREADY_EXISTS")
    big = "x" * (1024 * 1024)
    lines = [("k1", "plain"), ("κλειδί", "värde ✓ 日本"), ("k3", ""), ("k4", big)]
    # Python writes, the Rust CLI reads.
    with oxbow.Producer(oxbow.ProducerConfig(broker.addr, batch_bytes=4 * 1024 * 1024)) as producer:
        headers = [("trace", "t-1"), ("lang", "ελληνικά")]
        futures = [producer.send("texts", value, key=key, headers=headers) for key, value in lines]
        offsets = [f.result(30).offset for f in futures]
    assert offsets == [0, 1, 2, 3]
    out = cli(broker.addr, "consume", "texts", "--from-beginning", "--print-headers", "--print-key", "--max-messages", "4", "--timeout-ms", "10000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\n")[:4] == [f"trace:t-1,lang:ελληνικά\t{k}\t{v}" for k, v in lines]
    # The Rust CLI writes, Python reads, byte for byte.
    sent = "".join(f"{k}|{v}\n" for k, v in lines).encode()
    out = cli(broker.addr, "produce", "texts", "--key-separator", "|", "--header", "from=cli", "--header", "lang=日本語", stdin=sent)
    assert out.returncode == 0, out.stderr
    with oxbow.Consumer(oxbow.ConsumerConfig(broker.addr, auto_offset_reset="earliest")) as consumer:
        consumer.assign([("texts", 0)])
        consumer.seek("texts", 0, 4)
        rows = consumer.to_records(timeout=2.0)
    assert [(r["key"], r["value"]) for r in rows] == [(k.encode(), v.encode()) for k, v in lines]
    assert all(r["headers"] == [("from", b"cli"), ("lang", "日本語".encode())] for r in rows)
    assert [r["offset"] for r in rows] == [4, 5, 6, 7]


def test_headers_nulls_and_keyed_partitioning_round_trip(broker: Broker) -> None:
    config = oxbow.ClientConfig(broker.addr)
    with oxbow.Admin(config) as admin:
        admin.create_topic("events", partitions=4, replication_factor=1)
    with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
        sent = [
            producer.send("events", f"v{n}", key=f"learner-{n % 7}", headers=[("trace", f"t{n}"), ("none", None)])
            for n in range(200)
        ]
        producer.send("events", None, key="learner-1").result(10)  # a tombstone
        metadata = [f.result(30) for f in sent]
    for n, meta in enumerate(metadata):
        assert meta.partition == oxbow.partition_for_key(f"learner-{n % 7}".encode(), 4)
    with oxbow.Consumer(oxbow.ConsumerConfig(broker.addr, auto_offset_reset="earliest")) as consumer:
        consumer.assign_topic("events")
        rows = consumer.to_records(timeout=2.0)
    assert len(rows) == 201
    by_value = {r["value"]: r for r in rows}
    assert by_value[b"v5"]["headers"] == [("trace", b"t5"), ("none", None)]
    assert by_value[None]["key"] == b"learner-1"
    # The Rust CLI places keys the same way: it reads learner-3's records only on their partition.
    part = str(oxbow.partition_for_key(b"learner-3", 4))
    out = cli(broker.addr, "consume", "events", "--partition", part, "--offset", "0", "--print-key", "--timeout-ms", "3000")
    assert sum(1 for line in out.stdout.decode().splitlines() if line.startswith("learner-3\t")) == len(
        [n for n in range(200) if n % 7 == 3]
    )


def test_a_python_and_a_rust_member_share_a_group_without_owning_a_partition_twice(broker: Broker) -> None:
    with oxbow.Admin(oxbow.ClientConfig(broker.addr)) as admin:
        admin.create_topic("shared", partitions=6, replication_factor=1)
        with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
            for f in [producer.send("shared", f"r{n}", key=f"k{n}") for n in range(600)]:
                f.result(30)
        rust = subprocess.Popen(
            [oxbow_cli(), "--bootstrap-server", broker.addr, "consume", "shared", "--group", "mixed", "--from-beginning",
             "--session-timeout-ms", "6000", "--timeout-ms", "60000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            eventually("the Rust member to join", lambda: len(members(admin, "mixed")) == 1)
            consumer = oxbow.Consumer(oxbow.ConsumerConfig(broker.addr, group_id="mixed", auto_offset_reset="earliest", session_timeout=6.0))
            consumer.subscribe(["shared"])
            overlaps: list[object] = []
            deadline = time.monotonic() + 60
            stable = 0
            while time.monotonic() < deadline and stable < 5:
                consumer.poll(0.5)
                group = admin.describe_group("mixed")
                held = [tp for m in group["members"] for a in m["assignment"] for tp in ((a["topic"], p) for p in a["partitions"])]
                if len(held) != len(set(held)):
                    overlaps.append(group)
                both_hold = len(group["members"]) == 2 and all(m["assignment"] for m in group["members"])
                stable = stable + 1 if both_hold and len(held) == 6 else 0
            assert not overlaps, f"a partition was held by two members: {overlaps}"
            assert stable >= 5, f"the group never settled with both members: {admin.describe_group('mixed')}"
            mine = consumer.assignment()
            assert 0 < len(mine) < 6
            # New records: each goes to exactly one of the two members, by partition.
            with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
                for f in [producer.send("shared", f"s{n}", key=f"k{n}") for n in range(600)]:
                    f.result(30)
            expected = {f"s{n}" for n in range(600) if ("shared", oxbow.partition_for_key(f"k{n}".encode(), 6)) in mine}
            python_got: list[str] = []
            deadline = time.monotonic() + 30
            while len(python_got) < len(expected) and time.monotonic() < deadline:
                python_got.extend(r.value.decode() for r in consumer.poll(0.5) if r.value.startswith(b"s"))
            assert sorted(python_got) == sorted(expected)
            consumer.commit()
            consumer.close()
        finally:
            rust.terminate()
            out, _ = rust.communicate(timeout=20)
    rust_got = {line for line in out.decode().splitlines() if line.startswith("s")}
    assert rust_got.isdisjoint(python_got), "a record read by both members"
    assert rust_got | set(python_got) == {f"s{n}" for n in range(600)}, "every new record read by one of them"


def members(admin: oxbow.Admin, group_id: str) -> list[dict[str, object]]:
    """The group's members; none while the group does not exist yet (UNKNOWN_MEMBER_ID, state Dead)."""
    try:
        return admin.describe_group(group_id)["members"]
    except oxbow.BrokerError as error:
        if error.code == 26:
            return []
        raise


def oxbow_cli() -> str:
    from conftest import CLI_BIN

    return CLI_BIN


def test_a_consumer_resumes_from_its_committed_offset(broker: Broker) -> None:
    with oxbow.Admin(oxbow.ClientConfig(broker.addr)) as admin:
        admin.create_topic("resume", partitions=1, replication_factor=1)
    with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
        for f in [producer.send("resume", f"r{n}") for n in range(100)]:
            f.result(30)
    config = oxbow.ConsumerConfig(broker.addr, group_id="reader", auto_offset_reset="earliest", auto_commit=False)
    first = oxbow.Consumer(config)
    first.subscribe(["resume"])
    got: list[bytes] = []
    while len(got) < 40:
        got.extend(r.value for r in first.poll(1.0))
    first.seek("resume", 0, 40)
    first.commit()
    first.close()
    second = oxbow.Consumer(config)
    second.subscribe(["resume"])
    rows: list[oxbow.Record] = []
    deadline = time.monotonic() + 30
    while len(rows) < 60 and time.monotonic() < deadline:
        rows.extend(second.poll(1.0))
    second.close()
    assert rows[0].offset == 40 and rows[0].value == b"r40"
    assert [r.offset for r in rows] == list(range(40, 100))


def test_idempotent_retries_through_a_leader_kill_store_every_record_once(cluster: list[Broker]) -> None:
    bootstrap = ",".join(b.addr for b in cluster)

    async def run() -> tuple[list[str], list[str]]:
        admin = aio.Admin(oxbow.ClientConfig(bootstrap))
        for _ in range(100):
            try:
                await admin.create_topic("jepsen", partitions=1, replication_factor=3)
                break
            except oxbow.OxbowError:
                await asyncio.sleep(0.2)
        topic = await admin.describe_topic("jepsen")
        await admin.close()
        leader = topic["partitions"][0]["leader"]
        producer = aio.Producer(aio.ProducerConfig(bootstrap, linger=0.002, delivery_timeout=60.0, request_timeout=5.0))
        acked: list[str] = []
        unknown: list[str] = []
        pending = []
        for n in range(3000):
            value = f"v{n}"
            future = await producer.send("jepsen", value, partition=0)
            pending.append((value, future))
            if n == 1000:
                cluster[leader - 1].kill9()
            if n % 100 == 0:
                await asyncio.sleep(0.01)
        for value, future in pending:
            try:
                await future
                acked.append(value)
            except oxbow.UnknownOutcome:
                unknown.append(value)
        await producer.close()
        return acked, unknown

    acked, unknown = asyncio.run(run())
    assert len(acked) + len(unknown) == 3000
    assert len(acked) >= 2900, f"most records acknowledged through the failover ({len(unknown)} unknown)"
    with oxbow.Consumer(oxbow.ConsumerConfig(bootstrap, auto_offset_reset="earliest")) as consumer:
        consumer.assign([("jepsen", 0)])
        stored = [r["value"].decode() for r in consumer.to_records(timeout=3.0)]
    duplicates = {v for v in stored if stored.count(v) > 1}
    assert not duplicates, f"stored twice: {sorted(duplicates)[:10]}"
    lost = set(acked) - set(stored)
    assert not lost, f"acknowledged but lost: {sorted(lost)[:10]}"
    assert stored == sorted(stored, key=lambda v: int(v[1:])), "stored in the order sent"


def test_a_topic_of_the_longest_name_is_created_deleted_and_created_again(broker: Broker) -> None:
    name = "t" * 249
    with oxbow.Admin(oxbow.ClientConfig(broker.addr)) as admin:
        admin.create_topic(name, partitions=1, replication_factor=1)
        with pytest.raises(oxbow.BrokerError) as refused:
            admin.create_topic(name + "x", partitions=1, replication_factor=1)
        assert refused.value.name == "INVALID_TOPIC_NAME"
        admin.delete_topic(name)
        eventually("the topic to be gone", lambda: name not in admin.list_topics())
        admin.create_topic(name, partitions=1, replication_factor=1)
    with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
        assert producer.send_and_wait(name, "again").offset == 0


def test_acks_0_gets_no_answer_and_a_refused_batch_is_dropped_silently(broker: Broker) -> None:
    async def run() -> None:
        from oxbow.connection import Connection
        from oxbow.protocol import Api, encode_batch

        admin = aio.Admin(oxbow.ClientConfig(broker.addr))
        await admin.create_topic("quiet", partitions=1, replication_factor=1)
        await admin.close()
        connection = await Connection.open(broker.addr)
        bad = bytearray(encode_batch([(None, b"corrupt", [], 1)]))
        bad[-1] ^= 0xFF  # the CRC no longer matches
        for records in (bytes(bad), encode_batch([(None, b"fine", [], 1)])):
            body = {"acks": 0, "timeout_ms": 1000, "topics": [{"name": "quiet", "partitions": [{"partition": 0, "records": records}]}]}
            await connection.call(Api.PRODUCE, body, expect_response=False)
        # The same corrupt batch with acks=1 is answered CORRUPT_MESSAGE, per partition; the connection works on.
        body = {"acks": 1, "timeout_ms": 1000, "topics": [{"name": "quiet", "partitions": [{"partition": 0, "records": bytes(bad)}]}]}
        answer = await connection.call(Api.PRODUCE, body)
        assert answer["topics"][0]["partitions"][0]["error_code"] == 2
        fetched = await connection.call(
            Api.FETCH,
            {"max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
             "topics": [{"name": "quiet", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}]},
        )
        records = fetched["topics"][0]["partitions"][0]["records"]
        from oxbow.protocol import decode_batches

        assert [r.value for r in decode_batches("quiet", 0, records)] == [b"fine"]
        # Nothing to return: an empty bin, not nil, and no diverging_epoch for a consumer.
        at_end = await connection.call(
            Api.FETCH,
            {"max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
             "topics": [{"name": "quiet", "partitions": [{"partition": 0, "fetch_offset": 1, "partition_max_bytes": 1 << 20}]}]},
        )
        partition = at_end["topics"][0]["partitions"][0]
        assert partition["records"] == b"" and "diverging_epoch" not in partition
        connection.close()

    asyncio.run(run())


def test_every_codec_round_trips_with_the_rust_cli_and_a_missing_package_is_named(broker: Broker) -> None:
    from oxbow import compression

    config = oxbow.ClientConfig(broker.addr)
    with oxbow.Admin(config) as admin:
        admin.create_topic("packed", partitions=1, replication_factor=1)
    lines = [(f"learner-{i}", f"why does my loop {i} return the wrong value") for i in range(20)]
    offset = 0
    for codec in compression.CODECS:
        if codec not in compression.available():
            # A batch of this codec from the Rust CLI is refused by this Python with a clear error.
            out = cli(broker.addr, "produce", "packed", "--compression", codec, stdin=b"x\n")
            assert out.returncode == 0, out.stderr
            with oxbow.Consumer(oxbow.ConsumerConfig(broker.addr)) as consumer:
                consumer.assign([("packed", 0)])
                consumer.seek("packed", 0, offset)
                with pytest.raises(oxbow.OxbowError, match=compression._PACKAGES[codec]):
                    consumer.poll(timeout=5.0)
            offset += 1
            continue
        # Python compresses, the Rust CLI reads.
        with oxbow.Producer(oxbow.ProducerConfig(broker.addr, compression=codec)) as producer:
            futures = [producer.send("packed", value, key=key) for key, value in lines]
            assert [f.result(30).offset for f in futures] == list(range(offset, offset + 20))
        out = cli(broker.addr, "consume", "packed", "--partition", "0", "--offset", str(offset), "--print-key", "--max-messages", "20", "--timeout-ms", "10000")
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().split("\n")[:20] == [f"{k}\t{v}" for k, v in lines], codec
        # The Rust CLI compresses, Python reads.
        sent = "".join(f"{k}|{v}\n" for k, v in lines).encode()
        out = cli(broker.addr, "produce", "packed", "--key-separator", "|", "--compression", codec, stdin=sent)
        assert out.returncode == 0, out.stderr
        with oxbow.Consumer(oxbow.ConsumerConfig(broker.addr)) as consumer:
            consumer.assign([("packed", 0)])
            consumer.seek("packed", 0, offset + 20)
            rows = consumer.to_records(timeout=2.0)
        assert [(r["key"], r["value"]) for r in rows] == [(k.encode(), v.encode()) for k, v in lines], codec
        offset += 40
    # Python refuses to produce with a codec it cannot compress, before connecting.
    with pytest.raises(ValueError, match="brotli"):
        oxbow.Producer(oxbow.ProducerConfig(broker.addr, compression="brotli"))
