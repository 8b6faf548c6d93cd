"""Backends for the contract suites: each interface is tested against memory AND real Redis."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, service_unavailable


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A real Redis client and a key prefix unique to one test; its keys are deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL)
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
        if keys:
            await client.delete(*keys)
        await client.aclose()
