"""SessionStore contract: memory and Redis behave the same, including expiry by TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatwire.backends.sessions import SessionInfo, SessionStore
from chatwire.backends.sessions_memory import MemorySessionStore
from chatwire.backends.sessions_redis import RedisSessionStore
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for

PRESENCE_TTL = 0.6
USAGE_TTL = 0.3


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(PRESENCE_TTL, USAGE_TTL)
    else:
        target = target_for(request)
        async with redis_prefix(target) as (client, prefix):
            yield RedisSessionStore(client, prefix, PRESENCE_TTL, USAGE_TTL, cluster=target.cluster)


def info(sid: str, user: str, host: str = "h1", jti: str | None = None) -> SessionInfo:
    return SessionInfo(sid=sid, user_id=user, name=user.upper(), role="user", jti=jti, host=host)


async def test_add_get_remove(store: SessionStore) -> None:
    await store.add(info("s1", "u1", jti="j1"))
    await store.add(info("s2", "u1"))
    await store.add(info("s3", "u2", host="h2"))
    got = await store.get("s1")
    assert (
        got is not None and got.user_id == "u1" and got.jti == "j1" and got.host == "h1" and got.name == "U1"
    )
    assert await store.sids_of("u1") == ["s1", "s2"]
    assert await store.online_user_ids() == ["u1", "u2"]
    removed = await store.remove("s1")
    assert removed is not None and removed.info.sid == "s1" and not removed.last  # "s2" is still live
    assert await store.get("s1") is None
    assert await store.sids_of("u1") == ["s2"]
    await store.remove("s2")
    assert await store.online_user_ids() == ["u2"]
    assert await store.remove("nope") is None


async def test_sessions_expire_unless_touched(store: SessionStore) -> None:
    await store.add(info("s1", "u1"))
    await store.add(info("s2", "u2"))
    for _ in range(4):
        await asyncio.sleep(PRESENCE_TTL / 3)
        await store.touch(["s1"])
    assert await store.get("s2") is None
    assert await store.sids_of("u2") == []
    assert await store.online_user_ids() == ["u1"]
    await store.purge_expired()
    assert await store.get("s1") is not None
    assert await store.online_user_ids() == ["u1"]


async def test_usage_expires_and_leaves_with_the_session(store: SessionStore) -> None:
    await store.add(info("s1", "u1"))
    await store.add(info("s2", "u2"))
    await store.record_usage("s1", "llama")
    await store.record_usage("s2", "gpt")
    assert await store.active_models() == ["gpt", "llama"]
    await store.remove("s2")
    assert await store.active_models() == ["llama"]
    # The usage expires while the session lives on (touched, as its heartbeats would, however slow the machine).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + USAGE_TTL + 0.1
    while loop.time() < deadline:
        await store.touch(["s1"])
        await asyncio.sleep(0.05)
    assert await store.active_models() == []
    await store.record_usage("s1", "llama")
    await store.purge_expired()
    assert await store.active_models() == ["llama"]


async def test_touch_of_unknown_session_creates_nothing(store: SessionStore) -> None:
    await store.add(info("s1", "u1"))
    assert await store.touch(["ghost", "s1"]) == ["ghost"]
    assert await store.get("ghost") is None
    assert await store.online_user_ids() == ["u1"]


async def test_one_user_comes_online_and_goes_offline_once_however_many_sessions(store: SessionStore) -> None:
    # Concurrent adds (several connections to Redis at once): exactly one of them brought the user online.
    first = await asyncio.gather(*(store.add(info(f"s{i}", "u1")) for i in range(20)))
    assert sorted(first) == [False] * 19 + [True]
    assert await store.add(info("s0", "u1")) is False  # the same session again is no news
    assert await store.add(info("t0", "u2")) is True
    removed = await asyncio.gather(*(store.remove(f"s{i}") for i in range(20)))
    assert [r.last for r in removed if r is not None].count(True) == 1
    assert len([r for r in removed if r is not None]) == 20
    assert await store.remove("s3") is None
    assert await store.online_user_ids() == ["u2"]
    # Offline, the user's next session brings them online again.
    assert await store.add(info("s99", "u1")) is True


async def test_the_last_live_session_decides_even_with_expired_ones_around(store: SessionStore) -> None:
    await store.add(info("old", "u1"))
    await asyncio.sleep(PRESENCE_TTL * 1.5)  # "old" expires (its process died), nobody purged it yet
    assert await store.add(info("new", "u1")) is False  # never announced offline: no second online either
    gone = await store.remove("new")
    assert gone is not None and gone.last  # "old" is not live: the user is offline now
    assert await store.touch(["new"]) == ["new"]  # a late refresh does not put the user back on the roster
    purged = await store.purge_expired()
    assert [(r.info.sid, r.last) for r in purged] == [("old", False)]  # already announced: once is enough
    assert await store.add(info("again", "u1")) is True


async def test_an_expired_last_session_goes_offline_at_purge(store: SessionStore) -> None:
    await store.add(info("s1", "u1"))
    await store.add(info("s2", "u1"))
    await asyncio.sleep(PRESENCE_TTL * 1.5)
    purged = await store.purge_expired()
    assert sorted(r.info.sid for r in purged) == ["s1", "s2"]
    assert [r.last for r in purged].count(True) == 1


async def test_nobody_sees_a_removed_last_session_user_still_online(store: SessionStore) -> None:
    # Removal is one step: a reader that finds the session gone never finds its user still on the roster.
    seen_online_after_removal = 0
    for round_ in range(40):
        sid = f"s{round_}"
        await store.add(info(sid, "u1"))
        stop = asyncio.Event()

        async def watch(sid: str = sid, stop: asyncio.Event = stop) -> int:
            bad = 0
            while not stop.is_set():
                gone = await store.get(sid) is None
                if gone and "u1" in await store.online_user_ids():
                    bad += 1
                await asyncio.sleep(0)
            return bad

        watchers = [asyncio.create_task(watch()) for _ in range(3)]
        await asyncio.sleep(0)
        removed = await store.remove(sid)
        assert removed is not None and removed.last
        stop.set()
        seen_online_after_removal += sum(await asyncio.gather(*watchers))
    assert seen_online_after_removal == 0
    assert await store.online_user_ids() == []
