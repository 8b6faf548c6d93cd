"""How chatwire reaches Redis: one server, a primary found through Redis Sentinel, or a Redis Cluster.

Every client retries connection errors with back-off, so a Redis restart or a Sentinel failover costs a retry
instead of a failed request. `RedisTarget` carries the topology and makes clients; the backends take its `cluster`
flag to name keys (in a cluster, the keys one script or transaction touches share a hash tag, so they live in one
slot; elsewhere keys keep their plain names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What any chatwire client may be: a plain (or Sentinel-managed) client, or a cluster client.
AnyRedis = aioredis.Redis | RedisCluster

DEFAULT_SENTINEL_PORT = 26379


def _retry() -> dict[str, Any]:
    return {
        "socket_connect_timeout": 2,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    }


def parse_sentinel_hosts(hosts: list[str]) -> list[tuple[str, int]]:
    """`["h1:26379", "h2"]` -> `[("h1", 26379), ("h2", 26379)]`; a bad entry raises ValueError naming it."""
    out: list[tuple[str, int]] = []
    for raw in hosts:
        host, sep, port = raw.strip().rpartition(":")
        if not sep:
            host, port = port, str(DEFAULT_SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a host:port sentinel address: {raw!r}")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass(frozen=True)
class RedisTarget:
    """Where the fleet's Redis is. `url` gives credentials and database (and the address, without Sentinel)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"
    sentinel_password: str = ""
    cluster: bool = False
    _sentinel: list[Sentinel] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> RedisTarget:
        return cls(
            url=settings.redis_url,
            sentinels=tuple(parse_sentinel_hosts(settings.redis_sentinel_hosts)),
            service=settings.redis_sentinel_service,
            sentinel_password=settings.redis_sentinel_password,
            cluster=settings.redis_cluster,
        )

    @property
    def mode(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "single"

    def client(self, **overrides: Any) -> AnyRedis:
        """A new client for this target (its own connection pool)."""
        options = {**_retry(), "health_check_interval": 10, **overrides}
        if self.cluster:
            options.pop("health_check_interval", None)
            return RedisCluster.from_url(self.url, **options)
        if self.sentinels:
            parsed: dict[str, Any] = dict(parse_url(self.url))
            for key in ("username", "password", "db", "ssl"):
                if key in parsed:
                    options.setdefault(key, parsed[key])
            return self.sentinel().master_for(self.service, redis_class=aioredis.Redis, **options)
        return aioredis.Redis.from_url(self.url, **options)

    def sentinel(self) -> Sentinel:
        """The one Sentinel handle of this target (it asks the sentinels where the primary is)."""
        if not self._sentinel:
            kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
            if self.sentinel_password:
                kwargs["password"] = self.sentinel_password
            self._sentinel.append(
                Sentinel(list(self.sentinels), sentinel_kwargs=kwargs, socket_connect_timeout=2)
            )
        return self._sentinel[0]

    async def primary_id(self, client: AnyRedis, key: str) -> str:
        """The replication id of the primary that holds `key`: it changes when a replica is promoted (or a
        primary restarts), which is when acknowledged writes may have been lost."""
        if isinstance(client, RedisCluster):
            await client.initialize()  # the slot map (a no-op once known)
            node = client.get_node_from_key(key)
            info = await client.info("replication", target_nodes=node)
        else:
            info = await client.info("replication")
        return str(info.get("master_replid", ""))


def make_client(target: RedisTarget | str) -> AnyRedis:
    """A client for a target, or for a plain `redis://` URL."""
    return (RedisTarget(target) if isinstance(target, str) else target).client()
