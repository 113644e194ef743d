"""What a client knows of the cluster: brokers, topics and partition leaders, one connection per broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Optional

from .connection import Connection, Security
from .errors import BrokerError, ConnectionLost, OxbowError, RequestTimeout
from .protocol import Api


@dataclass
class ClientConfig:
    """Where the cluster is and how to talk to it. ``bootstrap_servers``: ``"host:port,host:port"``."""

    bootstrap_servers: str
    client_id: str = "oxbow-python"
    security: Security = field(default_factory=Security)
    request_timeout: float = 30.0
    #: Pause between attempts after a retriable error.
    retry_backoff: float = 0.1


@dataclass
class PartitionInfo:
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]


class Cluster:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.brokers: dict[int, str] = {}
        self.topics: dict[str, list[PartitionInfo]] = {}
        self.controller_id = -1
        self._connections: dict[str, Connection] = {}
        self._lock = asyncio.Lock()

    async def connection(self, address: str) -> Connection:
        async with self._lock:
            existing = self._connections.get(address)
            if existing is not None and not existing.closed:
                return existing
            connection = await Connection.open(address, self.config.client_id, self.config.security, self.config.request_timeout)
            self._connections[address] = connection
            return connection

    async def any_connection(self) -> Connection:
        """A connection to a known broker, else to a bootstrap server (the first that answers)."""
        candidates = list(self.brokers.values()) + [a.strip() for a in self.config.bootstrap_servers.split(",") if a.strip()]
        last: Optional[Exception] = None
        for address in dict.fromkeys(candidates):
            try:
                return await self.connection(address)
            except (ConnectionLost, RequestTimeout, OxbowError) as error:
                last = error
        raise ConnectionLost(f"no broker reachable ({last})")

    async def node(self, node_id: int) -> Connection:
        if node_id not in self.brokers:
            await self.refresh()
        address = self.brokers.get(node_id)
        if address is None:
            raise BrokerError(41, f"broker {node_id} is not known to be alive")
        return await self.connection(address)

    async def call_any(self, api_key: int, body: dict[str, Any]) -> Any:
        """Calls a broker, trying the others on a connection failure or a retriable whole-request error."""
        candidates = list(self.brokers.values()) + [a.strip() for a in self.config.bootstrap_servers.split(",") if a.strip()]
        last: Optional[Exception] = None
        for address in dict.fromkeys(candidates):
            try:
                connection = await self.connection(address)
                return await connection.call(api_key, body, self.config.request_timeout)
            except (ConnectionLost, RequestTimeout) as error:
                last = error
            except BrokerError as error:
                if not error.retriable:
                    raise
                last = error
        raise last or ConnectionLost("no broker reachable")

    async def refresh(self, topics: Optional[list[str]] = None) -> dict[str, Any]:
        """Metadata for ``topics`` (None: all); updates the brokers and the known leaders."""
        response = await self.call_any(Api.METADATA, {"topics": topics})
        self.brokers = {b["node_id"]: f"{b['host']}:{b['port']}" for b in response["brokers"]}
        self.controller_id = response["controller_id"]
        for topic in response["topics"]:
            if topic["error_code"] == 0:
                self.topics[topic["name"]] = [
                    PartitionInfo(p["partition"], p["leader"], p["leader_epoch"], p["replicas"], p["isr"])
                    for p in sorted(topic["partitions"], key=lambda p: p["partition"])
                ]
            else:
                self.topics.pop(topic["name"], None)
        return response

    async def partitions(self, topic: str) -> list[PartitionInfo]:
        if topic not in self.topics:
            response = await self.refresh([topic])
            for entry in response["topics"]:
                if entry["name"] == topic and entry["error_code"]:
                    raise BrokerError(entry["error_code"], f"topic '{topic}'")
        return self.topics[topic]

    async def leader(self, topic: str, partition: int) -> Connection:
        partitions = await self.partitions(topic)
        if partition >= len(partitions):
            raise BrokerError(3, f"{topic} has no partition {partition}")
        leader = partitions[partition].leader
        if leader < 0:
            raise BrokerError(15, f"{topic}/{partition} has no leader right now")
        return await self.node(leader)

    def invalidate(self, topic: str) -> None:
        self.topics.pop(topic, None)

    async def coordinator(self, group_id: str) -> Connection:
        response = await self.call_any(Api.FIND_COORDINATOR, {"group_id": group_id})
        if response["error_code"]:
            raise BrokerError(response["error_code"], f"finding the coordinator of {group_id}")
        address = f"{response['host']}:{response['port']}"
        self.brokers.setdefault(response["node_id"], address)
        return await self.connection(address)

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        await asyncio.sleep(0)
