"""Lease-lock contract: one owner at a time, CAS renew/release, free again after the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatwire.backends.lock import Lock
from chatwire.backends.lock_memory import MemoryLock
from chatwire.backends.lock_redis import RedisLock
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def lock(request: pytest.FixtureRequest) -> AsyncIterator[Lock]:
    if request.param == "memory":
        yield MemoryLock()
    else:
        async with redis_prefix(target_for(request)) as (client, prefix):
            yield RedisLock(client, prefix)


async def test_only_the_owner_renews_and_releases(lock: Lock) -> None:
    assert await lock.acquire("cleanup", "a", 5)
    assert await lock.acquire("cleanup", "a", 5)  # re-entrant for the owner
    assert not await lock.acquire("cleanup", "b", 5)
    assert not await lock.renew("cleanup", "b", 5)
    assert not await lock.release("cleanup", "b")
    assert await lock.renew("cleanup", "a", 5)
    assert await lock.release("cleanup", "a")
    assert await lock.acquire("cleanup", "b", 5)


async def test_lock_frees_itself_when_the_owner_stops_renewing(lock: Lock) -> None:
    assert await lock.acquire("cleanup", "a", 0.2)
    await asyncio.sleep(0.3)
    assert not await lock.renew("cleanup", "a", 5)
    assert await lock.acquire("cleanup", "b", 5)
    assert not await lock.release("cleanup", "a")
