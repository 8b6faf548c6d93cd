"""AttemptLog contract: failures per key in a sliding window, a wait once `limit` is reached, cleared on success;
the same in memory and in Redis (one server and a Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from chatwire.backends.attempts import AttemptLog
from chatwire.backends.attempts_memory import MemoryAttemptLog
from chatwire.backends.attempts_redis import RedisAttemptLog
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for

Make = Callable[[int, float], AttemptLog]


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    if request.param == "memory":
        yield lambda limit, window: MemoryAttemptLog(limit, window)
    else:
        async with redis_prefix(target_for(request)) as (client, prefix):
            yield lambda limit, window: RedisAttemptLog(client, prefix, "signin", limit, window)


async def test_the_limit_th_failure_makes_the_key_wait_about_a_window(make: Make) -> None:
    log = make(3, 60)
    for _ in range(2):
        await log.add("ada@example.com")
        assert await log.retry_after("ada@example.com") is None
    await log.add("ada@example.com")
    wait = await log.retry_after("ada@example.com")
    assert wait is not None and 55 < wait <= 60
    assert await log.retry_after("bob@example.com") is None  # keys are counted apart


async def test_clear_forgets_the_failures_of_one_key(make: Make) -> None:
    log = make(2, 60)
    for key in ("ada", "bob"):
        await log.add(key)
        await log.add(key)
    await log.clear("ada")
    assert await log.retry_after("ada") is None
    assert await log.retry_after("bob") is not None


async def test_failures_older_than_the_window_no_longer_count(make: Make) -> None:
    log = make(2, 0.3)
    await log.add("10.0.0.1")
    await log.add("10.0.0.1")
    assert await log.retry_after("10.0.0.1") is not None
    await asyncio.sleep(0.4)
    assert await log.retry_after("10.0.0.1") is None
    await log.add("10.0.0.1")  # one fresh failure is under the limit again
    assert await log.retry_after("10.0.0.1") is None


async def test_many_failures_keep_the_wait_within_one_window(make: Make) -> None:
    log = make(3, 60)
    for _ in range(20):
        await log.add("flood")
    wait = await log.retry_after("flood")
    assert wait is not None and wait <= 60


async def test_a_zero_limit_never_refuses(make: Make) -> None:
    log = make(0, 60)
    for _ in range(5):
        await log.add("anyone")
    assert await log.retry_after("anyone") is None


async def test_keys_of_any_text_are_kept_apart(make: Make) -> None:
    log = make(1, 60)
    odd = ["ådå@例え.jp", "a" * 300 + "@example.com", "key with spaces", "::1"]
    await log.add(odd[0])
    assert await log.retry_after(odd[0]) is not None
    for key in odd[1:]:
        assert await log.retry_after(key) is None
