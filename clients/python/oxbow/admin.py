"""The asyncio admin client: topics, configs, groups and the cluster."""

from __future__ import annotations

from typing import Any, Optional

from .cluster import ClientConfig, Cluster
from .errors import BrokerError, OxbowError
from .protocol import Api


class Admin:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.cluster = Cluster(config)

    async def __aenter__(self) -> "Admin":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_topic(
        self, name: str, partitions: int = 1, replication_factor: Optional[int] = None, configs: Optional[dict[str, str]] = None
    ) -> None:
        """Creates a topic; ``replication_factor`` None takes the cluster's default (the brokers' count, at most 3)."""
        if replication_factor is None:
            cluster = await self.describe_cluster()
            replication_factor = max(1, min(3, len([b for b in cluster["brokers"] if not b["fenced"]])))
        response = await self.cluster.call_any(
            Api.CREATE_TOPICS,
            {
                "topics": [{"name": name, "partitions": partitions, "replication_factor": replication_factor, "configs": configs or {}}],
                "validate_only": False,
            },
        )
        result = response["topics"][0]
        if result["error_code"]:
            raise BrokerError(result["error_code"], result.get("error_message"))

    async def delete_topic(self, name: str) -> None:
        response = await self.cluster.call_any(Api.DELETE_TOPICS, {"names": [name]})
        result = response["topics"][0]
        if result["error_code"]:
            raise BrokerError(result["error_code"], result.get("error_message"))

    async def list_topics(self) -> list[str]:
        response = await self.cluster.refresh(None)
        return sorted(t["name"] for t in response["topics"] if t["error_code"] == 0)

    async def describe_topic(self, name: str) -> dict[str, Any]:
        """Partitions (offsets as their leaders report them) and configs of a topic."""
        response = await self.cluster.call_any(Api.DESCRIBE_TOPICS, {"names": [name]})
        topic = response["topics"][0]
        if topic["error_code"]:
            raise BrokerError(topic["error_code"], topic.get("error_message"))
        for leader in {p["leader"] for p in topic["partitions"] if p["leader"] >= 0}:
            try:
                connection = await self.cluster.node(leader)
                theirs = (await connection.call(Api.DESCRIBE_TOPICS, {"names": [name]}, self.config.request_timeout))["topics"][0]
            except OxbowError:
                continue
            for mine in topic["partitions"]:
                for p in theirs["partitions"]:
                    if p["partition"] == mine["partition"] and mine["leader"] == leader:
                        mine.update({k: p[k] for k in ("log_start_offset", "high_watermark", "log_end_offset", "size_bytes") if k in p})
        return topic

    async def alter_configs(self, topic: str, set: Optional[dict[str, str]] = None, delete: Optional[list[str]] = None) -> None:
        response = await self.cluster.call_any(Api.ALTER_CONFIGS, {"topic": topic, "set": set or {}, "delete": delete or []})
        if response["error_code"]:
            raise BrokerError(response["error_code"], response.get("error_message"))

    async def describe_cluster(self) -> dict[str, Any]:
        return await self.cluster.call_any(Api.DESCRIBE_CLUSTER, {})

    async def list_groups(self) -> list[dict[str, Any]]:
        """Every group of the cluster: each broker coordinates some, so every live broker is asked."""
        cluster = await self.describe_cluster()
        groups: dict[str, dict[str, Any]] = {}
        for broker in cluster["brokers"]:
            if broker["fenced"]:
                continue
            connection = await self.cluster.connection(f"{broker['host']}:{broker['port']}")
            for group in (await connection.call(Api.LIST_GROUPS, {}, self.config.request_timeout))["groups"]:
                groups[group["group_id"]] = group
        return [groups[g] for g in sorted(groups)]

    async def describe_group(self, group_id: str) -> dict[str, Any]:
        coordinator = await self.cluster.coordinator(group_id)
        response = await coordinator.call(Api.DESCRIBE_GROUPS, {"group_ids": [group_id]}, self.config.request_timeout)
        group = response["groups"][0]
        if group["error_code"]:
            raise BrokerError(group["error_code"], f"group {group_id}")
        return group

    async def close(self) -> None:
        await self.cluster.close()
