"""The asyncio producer: records are batched per partition (up to ``batch_bytes``, waiting at most ``linger``),
sent to the partition's leader with ``acks``, retried through leader changes until ``delivery_timeout``;
idempotent by default (a producer id and per-partition sequence numbers, so a retried batch is stored once).
One batch per partition is in flight at a time, so records of a partition are stored in the order sent."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from . import compression, protocol
from .cluster import ClientConfig, Cluster
from .errors import BrokerError, ConnectionLost, OxbowError, RequestTimeout, UnknownOutcome
from .protocol import Api

Bytesish = Union[bytes, bytearray, str, None]


@dataclass
class ProducerConfig(ClientConfig):
    #: -1 (all in-sync replicas), 1 (the leader) or 0 (no answer at all).
    acks: int = -1
    idempotent: bool = True
    linger: float = 0.005
    batch_bytes: int = 1024 * 1024
    delivery_timeout: float = 120.0
    #: Records waiting in the producer at most; ``send`` waits for room up to ``max_block``.
    buffer_records: int = 100_000
    max_block: float = 60.0
    #: Batch compression: "none", "gzip", "snappy", "lz4" or "zstd" (the last three need their packages).
    compression: str = "none"


@dataclass
class RecordMetadata:
    topic: str
    partition: int
    #: None with acks=0, and for a retried batch the broker stored earlier but no longer remembers.
    offset: Optional[int]


def _bytes(value: Bytesish) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


@dataclass
class _Pending:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, Optional[bytes]]]
    timestamp: int
    future: "asyncio.Future[RecordMetadata]"
    size: int


@dataclass
class _PartitionQueue:
    records: list[_Pending] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: Optional[asyncio.Task[None]] = None
    sequence: int = 0


class Producer:
    def __init__(self, config: ProducerConfig) -> None:
        self.config = config
        self._codec = compression.codec_id(config.compression)
        self.cluster = Cluster(config)
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._producer: Optional[tuple[int, int]] = None
        self._producer_lock = asyncio.Lock()
        self._buffered = 0
        self._room = asyncio.Condition()
        self._closed = False

    async def __aenter__(self) -> "Producer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(
        self,
        topic: str,
        value: Bytesish = None,
        key: Bytesish = None,
        headers: Optional[list[tuple[str, Bytesish]]] = None,
        partition: Optional[int] = None,
        timestamp: Optional[int] = None,
        on_delivery: Optional[Callable[[Optional[RecordMetadata], Optional[Exception]], None]] = None,
    ) -> "asyncio.Future[RecordMetadata]":
        """Queues a record; the returned future resolves once it is acknowledged (or fails)."""
        if self._closed:
            raise OxbowError("the producer is closed")
        key_bytes, value_bytes = _bytes(key), _bytes(value)
        header_list = [(name, _bytes(v)) for name, v in (headers or [])]
        partitions = await self.cluster.partitions(topic)
        if partition is None:
            if key_bytes is not None:
                partition = protocol.partition_for_key(key_bytes, len(partitions))
            else:
                partition = self._sticky.setdefault(topic, next(self._round_robin) % len(partitions))
        elif not 0 <= partition < len(partitions):
            raise BrokerError(3, f"{topic} has no partition {partition}")
        async with self._room:
            try:
                await asyncio.wait_for(self._room.wait_for(lambda: self._buffered < self.config.buffer_records), self.config.max_block)
            except asyncio.TimeoutError as error:
                raise OxbowError(f"the producer's buffer stayed full for {self.config.max_block} s") from error
            self._buffered += 1
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        if on_delivery is not None:
            future.add_done_callback(lambda f: on_delivery(None if f.exception() else f.result(), f.exception()))
        size = 21 + len(key_bytes or b"") + len(value_bytes or b"") + sum(len(n) + len(v or b"") + 6 for n, v in header_list)
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = _PartitionQueue()
            queue.task = asyncio.get_running_loop().create_task(self._drain(topic, partition, queue))
        queue.records.append(_Pending(key_bytes, value_bytes, header_list, timestamp or protocol.now_ms(), future, size))
        queue.wake.set()
        return future

    async def send_and_wait(self, topic: str, value: Bytesish = None, **kwargs: object) -> RecordMetadata:
        return await (await self.send(topic, value, **kwargs))  # type: ignore[arg-type]

    async def flush(self) -> None:
        """Waits until every record sent so far is acknowledged or failed."""
        waiting = [p.future for q in self._queues.values() for p in q.records]
        while True:
            async with self._room:
                if self._buffered == 0:
                    return
            if waiting:
                await asyncio.gather(*waiting, return_exceptions=True)
            await asyncio.sleep(0.001)
            waiting = [p.future for q in self._queues.values() for p in q.records]

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        for queue in self._queues.values():
            if queue.task:
                queue.task.cancel()
        await self.cluster.close()

    async def _producer_id(self) -> tuple[int, int]:
        async with self._producer_lock:
            if self._producer is None:
                response = await self.cluster.call_any(Api.INIT_PRODUCER_ID, {})
                if response["error_code"]:
                    raise BrokerError(response["error_code"], response.get("error_message"))
                self._producer = (response["producer_id"], response["producer_epoch"])
                for queue in self._queues.values():
                    queue.sequence = 0
            return self._producer

    async def _drain(self, topic: str, partition: int, queue: _PartitionQueue) -> None:
        while True:
            await queue.wake.wait()
            queue.wake.clear()
            if not queue.records:
                continue
            oldest = queue.records[0].timestamp / 1000
            linger_left = self.config.linger - (time.time() - oldest)
            size = sum(p.size for p in queue.records)
            if linger_left > 0 and size < self.config.batch_bytes:
                try:
                    await asyncio.wait_for(queue.wake.wait(), linger_left)
                    queue.wake.clear()
                except asyncio.TimeoutError:
                    pass
            while queue.records:
                batch: list[_Pending] = []
                size = 0
                while queue.records and (not batch or size + queue.records[0].size <= self.config.batch_bytes):
                    pending = queue.records.pop(0)
                    batch.append(pending)
                    size += pending.size
                if topic in self._sticky and self._sticky[topic] == partition:
                    self._sticky.pop(topic, None)  # keyless records move on to the next partition
                await self._send_batch(topic, partition, queue, batch)
                async with self._room:
                    self._buffered -= len(batch)
                    self._room.notify_all()

    async def _send_batch(self, topic: str, partition: int, queue: _PartitionQueue, batch: list[_Pending]) -> None:
        started = time.monotonic()
        attempt = 0
        maybe_stored = False
        producer_id, epoch, sequence = -1, -1, -1
        if self.config.idempotent:
            try:
                producer_id, epoch = await self._producer_id()
            except OxbowError as error:
                return self._fail(batch, error)
            sequence = queue.sequence
        data = protocol.encode_batch(
            [(p.key, p.value, p.headers, p.timestamp) for p in batch], producer_id, epoch, sequence, self._codec
        )
        request = {
            "acks": self.config.acks,
            "timeout_ms": int(min(self.config.request_timeout, self.config.delivery_timeout) * 1000),
            "topics": [{"name": topic, "partitions": [{"partition": partition, "records": data}]}],
        }
        while True:
            attempt += 1
            try:
                connection = await self.cluster.leader(topic, partition)
                if self.config.acks == 0:
                    await connection.call(Api.PRODUCE, request, self.config.request_timeout, expect_response=False)
                    return self._succeed(batch, topic, partition, None, sequence, queue)
                response = await connection.call(Api.PRODUCE, request, self.config.request_timeout)
                answer = response["topics"][0]["partitions"][0]
                code = answer["error_code"]
                if code == 0:
                    return self._succeed(batch, topic, partition, answer["base_offset"], sequence, queue)
                if code == 38:  # DUPLICATE_SEQUENCE_NUMBER: stored before, offsets forgotten
                    return self._succeed(batch, topic, partition, None, sequence, queue)
                error: Exception = BrokerError(code, answer.get("error_message"))
                maybe_stored |= code in (14, 15, 18, 36)
            except (ConnectionLost, RequestTimeout) as failure:
                error, maybe_stored = failure, True
            except BrokerError as failure:
                error = failure
            retriable = getattr(error, "retriable", False) or (
                isinstance(error, BrokerError) and error.code in (37, 39) and maybe_stored
            )
            if not retriable or time.monotonic() - started >= self.config.delivery_timeout:
                if self.config.idempotent:
                    self._producer = None  # the partition's sequence has a gap now: start over under a new id
                return self._fail(batch, UnknownOutcome(error) if maybe_stored else error)
            self.cluster.invalidate(topic)
            await asyncio.sleep(min(self.config.retry_backoff * min(attempt, 3), 1.0))

    def _succeed(self, batch: list[_Pending], topic: str, partition: int, base_offset: Optional[int], sequence: int, queue: _PartitionQueue) -> None:
        if sequence >= 0:
            queue.sequence = sequence + len(batch)
        for n, pending in enumerate(batch):
            if not pending.future.done():
                pending.future.set_result(RecordMetadata(topic, partition, None if base_offset is None else base_offset + n))

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)
