"""Backends for the contract suites: each interface is tested against memory AND real Redis (one server, and a
private three-node Redis Cluster: parameter `cluster`)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatwire.backends.redis_client import RedisTarget
from tests.conftest import REDIS_URL, service_unavailable

# The Redis parameters of a contract fixture: the shared Redis, and a Redis Cluster.
REDIS_KINDS = ["redis", "cluster"]


def target_for(request: pytest.FixtureRequest) -> RedisTarget:
    """The Redis a parametrised fixture runs on (`cluster` starts the session's private cluster)."""
    if request.param == "cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster"), cluster=True)
    return RedisTarget(REDIS_URL)


@contextlib.asynccontextmanager
async def redis_prefix(target: RedisTarget | None = None) -> AsyncIterator[tuple[Any, str]]:
    """A real Redis client and a key prefix unique to one test; its keys are deleted afterwards."""
    target = target or RedisTarget(REDIS_URL)
    client: Any = target.client()
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        service_unavailable("Redis", exc)
    prefix = f"cwtest:{uuid.uuid4().hex[:10]}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        for key in keys:  # one by one: in a cluster the keys live in many slots
            await client.delete(key)
        await client.aclose()
