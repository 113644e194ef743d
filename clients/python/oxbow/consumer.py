"""The asyncio consumer: explicit assignment with seek, or a consumer group (``subscribe``) with the
incremental (cooperative) hand-over of docs/protocol.md, a background heartbeat, and commits.

Positions are the next offset to read. ``poll`` fetches from each partition's leader with long polling and
returns records in offset order per partition."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from . import protocol
from .cluster import ClientConfig, Cluster
from .errors import BrokerError, ConnectionLost, CorruptRecords, OxbowError, RequestTimeout
from .protocol import Api, Record

TopicPartition = tuple[str, int]


@dataclass
class ConsumerConfig(ClientConfig):
    group_id: Optional[str] = None
    #: "earliest" or "latest": where a partition without a committed offset starts.
    auto_offset_reset: str = "latest"
    #: Commit the positions of revoked partitions, and all on close (positions of records returned by poll).
    auto_commit: bool = True
    session_timeout: float = 10.0
    #: "cooperative-sticky" (default), "range" or "roundrobin"; every member of a group must use the same.
    strategy: str = "cooperative-sticky"
    group_instance_id: Optional[str] = None
    fetch_max_wait: float = 0.5
    fetch_max_bytes: int = 8 * 1024 * 1024
    partition_max_bytes: int = 4 * 1024 * 1024


class RebalanceListener:
    """Override to act when partitions come and go (called from ``poll``)."""

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        pass

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        """Called before revoked partitions are released; their positions are committed first with auto_commit."""

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit (the member was removed)."""
        self.on_revoked(partitions)


class Consumer:
    def __init__(self, config: ConsumerConfig, listener: Optional[RebalanceListener] = None) -> None:
        self.config = config
        self.cluster = Cluster(config)
        self.listener = listener or RebalanceListener()
        self._positions: dict[TopicPartition, Optional[int]] = {}
        self._high_watermarks: dict[TopicPartition, int] = {}
        self._topics: list[str] = []
        self.member_id = ""
        self.generation = -1
        self._needs_join = False
        self._needs_sync = False
        self._heartbeat: Optional[asyncio.Task[None]] = None
        self._heartbeat_interval = config.session_timeout / 3

    async def __aenter__(self) -> "Consumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- assignment ---------------------------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Reads exactly these partitions (no group); new ones start per ``auto_offset_reset``."""
        self._positions = {tp: self._positions.get(tp) for tp in partitions}

    async def assign_topic(self, topic: str) -> None:
        partitions = await self.cluster.partitions(topic)
        self.assign([tp for tp in self._positions if tp[0] != topic] + [(topic, p.partition) for p in partitions])

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._positions)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._positions[(topic, partition)] = offset

    def position(self, topic: str, partition: int) -> Optional[int]:
        return self._positions.get((topic, partition))

    def lag(self) -> int:
        return sum(
            max(0, self._high_watermarks.get(tp, 0) - position) for tp, position in self._positions.items() if position is not None
        )

    async def subscribe(self, topics: list[str]) -> None:
        """Joins ``config.group_id`` for these topics; the coordinator decides which partitions this member holds."""
        if not self.config.group_id:
            raise OxbowError("subscribe needs ConsumerConfig.group_id")
        self._topics = list(topics)
        self._positions = {}
        await self._join()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    # --- group membership ---------------------------------------------------------------------------------

    async def _group_call(self, api_key: int, body: dict[str, Any]) -> Any:
        """Calls the coordinator, finding it again when it moved."""
        group_id = self.config.group_id
        assert group_id is not None
        deadline = time.monotonic() + self.config.request_timeout
        while True:
            try:
                coordinator = await self.cluster.coordinator(group_id)
                response = await coordinator.call(api_key, body, self.config.request_timeout)
                if response.get("error_code") in (23, 24) and time.monotonic() < deadline:  # coordinator moved or loading
                    await asyncio.sleep(self.config.retry_backoff)
                    continue
                return response
            except (ConnectionLost, RequestTimeout, BrokerError) as error:
                if not getattr(error, "retriable", False) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(self.config.retry_backoff)

    async def _join(self) -> None:
        response = await self._group_call(
            Api.JOIN_GROUP,
            {
                "group_id": self.config.group_id,
                "member_id": self.member_id,
                "group_instance_id": self.config.group_instance_id,
                "topics": self._topics,
                "strategy": self.config.strategy,
                "session_timeout_ms": int(self.config.session_timeout * 1000),
            },
        )
        if response["error_code"] == 26 and self.member_id:  # UNKNOWN_MEMBER_ID: join afresh
            self._lose_all()
            self.member_id = ""
            return await self._join()
        if response["error_code"]:
            raise BrokerError(response["error_code"], response.get("error_message"))
        self.member_id = response["member_id"]
        self.generation = response["generation_id"]
        self._heartbeat_interval = max(0.01, response["heartbeat_interval_ms"] / 1000)
        self._needs_join = False
        await self._sync()

    async def _sync(self) -> None:
        """SyncGroup with what this member holds; releases what it must give up (committing it first)."""
        while True:
            owned: dict[str, list[int]] = {}
            for topic, partition in self._positions:
                owned.setdefault(topic, []).append(partition)
            response = await self._group_call(
                Api.SYNC_GROUP,
                {
                    "group_id": self.config.group_id,
                    "member_id": self.member_id,
                    "owned": [{"topic": t, "partitions": sorted(p)} for t, p in sorted(owned.items())],
                },
            )
            if response["error_code"] == 26:
                self._lose_all()
                self.member_id = ""
                self._needs_join = True
                return
            if response["error_code"] == 28:
                continue
            if response["error_code"]:
                raise BrokerError(response["error_code"], response.get("error_message"))
            self.generation = response["generation_id"]
            target = {(a["topic"], p) for a in response["assignment"] for p in a["partitions"]}
            revoked = sorted(tp for tp in self._positions if tp not in target)
            added = sorted(tp for tp in target if tp not in self._positions)
            self._needs_sync = False
            if added:
                for tp in added:
                    self._positions[tp] = None
                await self._load_committed(added)
                self.listener.on_assigned(added)
            if not revoked:
                return
            if self.config.auto_commit:
                await self.commit(revoked)
            self.listener.on_revoked(revoked)
            for tp in revoked:
                self._positions.pop(tp, None)
            # Sync again without them: that releases them to their next holder.

    def _lose_all(self) -> None:
        lost = sorted(self._positions)
        self._positions = {}
        if lost:
            self.listener.on_lost(lost)

    async def _load_committed(self, partitions: list[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        response = await self._group_call(
            Api.OFFSET_FETCH,
            {"group_id": self.config.group_id, "topics": [{"topic": t, "partitions": p} for t, p in by_topic.items()]},
        )
        if response["error_code"]:
            raise BrokerError(response["error_code"])
        for entry in response["offsets"]:
            tp = (entry["topic"], entry["partition"])
            if tp in self._positions and entry["offset"] >= 0:
                self._positions[tp] = entry["offset"]

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if not self.member_id:
                continue
            try:
                response = await self._group_call(Api.HEARTBEAT, {"group_id": self.config.group_id, "member_id": self.member_id})
            except OxbowError:
                continue
            code = response["error_code"]
            if code == 28:
                self._needs_sync = True
            elif code in (26, 29):
                self._needs_join = True

    async def commit(self, only: Optional[list[TopicPartition]] = None) -> None:
        """Commits the positions (of ``only``, else of every held partition with a known position)."""
        positions = {tp: p for tp, p in self._positions.items() if p is not None and (only is None or tp in only)}
        if not positions:
            return
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), offset in sorted(positions.items()):
            by_topic.setdefault(topic, []).append({"partition": partition, "offset": offset, "metadata": None})
        response = await self._group_call(
            Api.OFFSET_COMMIT,
            {
                "group_id": self.config.group_id,
                "member_id": self.member_id,
                "generation_id": self.generation,
                "topics": [{"name": t, "partitions": p} for t, p in by_topic.items()],
            },
        )
        if response["error_code"]:
            raise BrokerError(response["error_code"], response.get("error_message"))
        for topic in response["topics"]:
            for partition in topic["partitions"]:
                if partition["error_code"]:
                    raise BrokerError(partition["error_code"], f"committing {topic['name']}/{partition['partition']}")

    def commit_async(self) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self.commit())

    # --- reading ------------------------------------------------------------------------------------------

    async def _resolve_positions(self) -> None:
        for tp, position in list(self._positions.items()):
            if position is None:
                spec = protocol.EARLIEST if self.config.auto_offset_reset == "earliest" else protocol.LATEST
                self._positions[tp] = await self.list_offset(tp[0], tp[1], spec)

    async def list_offset(self, topic: str, partition: int, timestamp: int) -> int:
        """EARLIEST (-2), LATEST (-1) or the first offset at or after a time (ms since the epoch)."""
        deadline = time.monotonic() + self.config.request_timeout
        while True:
            try:
                connection = await self.cluster.leader(topic, partition)
                response = await connection.call(
                    Api.LIST_OFFSETS,
                    {"topics": [{"name": topic, "partitions": [{"partition": partition, "timestamp": timestamp}]}]},
                    self.config.request_timeout,
                )
                answer = response["topics"][0]["partitions"][0]
                if answer["error_code"]:
                    raise BrokerError(answer["error_code"])
                return answer["offset"]
            except (BrokerError, ConnectionLost, RequestTimeout) as error:
                if not getattr(error, "retriable", False) or time.monotonic() >= deadline:
                    raise
                self.cluster.invalidate(topic)
                await asyncio.sleep(self.config.retry_backoff)

    async def poll(self, timeout: float = 1.0) -> list[Record]:
        """Records after the positions (at most one fetch round), waiting up to ``timeout`` for some."""
        if self.config.group_id and self._topics:
            if self._needs_join:
                await self._join()
            elif self._needs_sync:
                await self._sync()
        if not self._positions:
            await asyncio.sleep(min(timeout, self._heartbeat_interval))
            return []
        await self._resolve_positions()
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in self._positions:
            try:
                partitions = await self.cluster.partitions(tp[0])
                leader = partitions[tp[1]].leader
            except (BrokerError, IndexError):
                continue
            by_leader.setdefault(leader, []).append(tp)
        wait_ms = int(min(timeout, self.config.fetch_max_wait) * 1000)
        fetches = [self._fetch(leader, tps, wait_ms) for leader, tps in by_leader.items() if leader >= 0]
        if not fetches:
            await asyncio.sleep(min(timeout, 0.1))
            self.cluster.topics.clear()
            return []
        results = await asyncio.gather(*fetches, return_exceptions=True)
        records: list[Record] = []
        for result in results:
            if isinstance(result, CorruptRecords):
                raise result  # retrying reads the same bytes again
            if isinstance(result, BaseException):
                self.cluster.topics.clear()
                continue
            records.extend(result)
        return records

    async def _fetch(self, leader: int, partitions: list[TopicPartition], wait_ms: int) -> list[Record]:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(
                {"partition": partition, "fetch_offset": self._positions[(topic, partition)], "partition_max_bytes": self.config.partition_max_bytes}
            )
        connection = await self.cluster.node(leader)
        response = await connection.call(
            Api.FETCH,
            {
                "max_wait_ms": wait_ms,
                "min_bytes": 1,
                "max_bytes": self.config.fetch_max_bytes,
                "topics": [{"name": t, "partitions": p} for t, p in by_topic.items()],
            },
            self.config.request_timeout + wait_ms / 1000,
        )
        records: list[Record] = []
        for topic in response["topics"]:
            for answer in topic["partitions"]:
                tp = (topic["name"], answer["partition"])
                if tp not in self._positions or self._positions[tp] is None:
                    continue  # revoked meanwhile
                code = answer["error_code"]
                if code == 4:  # OFFSET_OUT_OF_RANGE: start again by the reset policy
                    self._positions[tp] = None
                    continue
                if code:
                    self.cluster.invalidate(tp[0])
                    continue
                self._high_watermarks[tp] = answer["high_watermark"]
                data = answer["records"]
                position = self._positions[tp]
                assert position is not None
                try:
                    got = list(protocol.decode_batches(tp[0], tp[1], data, position))
                except OxbowError as error:
                    raise CorruptRecords(f"{tp[0]}/{tp[1]} at offset {position}: {error}") from error
                records.extend(got)
                last = protocol.last_offset(data)
                if last is not None and last + 1 > position:
                    self._positions[tp] = last + 1
        return records

    async def records(self, timeout: float = 1.0):  # type: ignore[no-untyped-def]
        """An async iterator of records as dicts, until a poll of ``timeout`` returns nothing."""
        while True:
            batch = await self.poll(timeout)
            if not batch:
                return
            for record in batch:
                yield record.to_dict()

    async def close(self) -> None:
        """Commits (with auto_commit), leaves the group (dynamic members) and stops heartbeating."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self.config.group_id and self.member_id:
            try:
                if self.config.auto_commit:
                    await self.commit()
                if self.config.group_instance_id is None:
                    await self._group_call(Api.LEAVE_GROUP, {"group_id": self.config.group_id, "member_id": self.member_id})
            except OxbowError:
                pass
        await self.cluster.close()


def decode_json(callback: Optional[Callable[[bytes], Any]] = None) -> Callable[[Optional[bytes]], Any]:
    """A value decoder for :meth:`Consumer.records`-style rows (JSON, MessagePack, else text)."""
    import json

    import msgpack

    def decode(value: Optional[bytes]) -> Any:
        if value is None:
            return None
        if callback:
            return callback(value)
        try:
            return json.loads(value)
        except ValueError:
            pass
        try:
            return msgpack.unpackb(value, raw=False)
        except Exception:
            return value.decode(errors="replace")

    return decode
