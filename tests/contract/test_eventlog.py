"""Contract of the EventLog, run against every implementation: memory and Redis (fleet mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from chatwire.backends.eventlog import EventLog, ParkedSession, format_offset, is_recoverable, parse_offset
from chatwire.backends.eventlog_memory import MemoryEventLog
from chatwire.backends.eventlog_redis import RedisEventLog
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Made:
    log: EventLog
    clock: Clock
    # Builds a second log over the "same" storage after a restart (memory: a new, empty one).
    restart: Callable[[], EventLog]


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def made(request: pytest.FixtureRequest) -> AsyncIterator[Made]:
    clock = Clock()
    if request.param == "memory":
        log = MemoryEventLog(max_per_room=5, max_age=60, clock=clock)
        yield Made(log, clock, lambda: MemoryEventLog(max_per_room=5, max_age=60, clock=clock))
        await log.close()
        return
    target = target_for(request)
    async with redis_prefix(target) as (client, prefix):

        def make(p: str) -> RedisEventLog:
            return RedisEventLog(
                client,
                p,
                max_per_room=5,
                max_age=60,
                clock=clock,
                cluster=target.cluster,
                primary_id=lambda: target.primary_id(client, p + "epoch"),
            )

        # Redis runs without persistence: a restart is an empty store, simulated by a fresh key prefix.
        yield Made(make(prefix), clock, lambda: make(prefix + "after-restart:"))


async def test_offsets_increase_across_rooms_and_read_merges_in_order(made: Made) -> None:
    log = made.log
    start = await log.head()
    a1 = await log.append("user:a", "events", {"n": 1})
    c1 = await log.append("channel:c", "events:channel", {"n": 2})
    a2 = await log.append("user:a", "events", {"n": 3}, skip_sid="s1")
    await log.append("user:b", "events", {"n": 4})
    assert a1.seq < c1.seq < a2.seq
    assert parse_offset(a2.offset) == (await log.epoch(), a2.seq)
    got = await log.read(start, ["user:a", "channel:c"])
    assert got is not None
    assert [e.data["n"] for e in got] == [1, 2, 3]
    assert got[2].skip_sid == "s1" and got[2].event == "events" and got[2].room == "user:a"
    after_first = await log.read(a1.offset, ["user:a", "channel:c"])
    assert after_first is not None and [e.data["n"] for e in after_first] == [2, 3]
    assert await log.read(await log.head(), ["user:a"]) == []


async def test_size_bound_makes_older_offsets_unrecoverable(made: Made) -> None:
    log = made.log
    start = await log.head()
    entries = [await log.append("user:a", "events", {"n": i}) for i in range(8)]
    assert await log.read(start, ["user:a"]) is None  # 3 of the 8 were trimmed: never a silent gap
    kept = await log.read(entries[2].offset, ["user:a"])
    assert kept is not None and [e.data["n"] for e in kept] == [3, 4, 5, 6, 7]
    # other rooms are not affected by user:a's trimming
    assert await log.read(start, ["user:b"]) == []


async def test_age_bound_makes_older_offsets_unrecoverable(made: Made) -> None:
    log = made.log
    start = await log.head()
    await log.append("user:a", "events", {"n": 1})
    made.clock.now += 30
    second = await log.append("user:a", "events", {"n": 2})
    assert await log.read(start, ["user:a"]) is not None
    made.clock.now += 45  # the first entry is now 75 s old, over the 60 s bound
    assert await log.read(start, ["user:a"]) is None
    rest = await log.read(format_offset(await log.epoch(), second.seq - 1), ["user:a"])
    assert rest is not None and [e.data["n"] for e in rest] == [2]


async def test_foreign_epoch_malformed_and_future_offsets_are_refused(made: Made) -> None:
    log = made.log
    await log.append("user:a", "events", {})
    head = await log.head()
    epoch, seq = parse_offset(head) or ("", 0)
    assert await log.read(format_offset("other" + epoch, seq), ["user:a"]) is None
    assert await log.read(format_offset(epoch, seq + 10), ["user:a"]) is None
    for bad in ["", "nodash", "x-", "-5", "e-1x", 5, None]:
        assert await log.read(bad, ["user:a"]) is None  # type: ignore[arg-type]


async def test_restart_changes_epoch(made: Made) -> None:
    before = await made.log.head()
    await made.log.append("user:a", "events", {})
    again = made.restart()
    try:
        assert await again.epoch() != await made.log.epoch()
        assert await again.read(before, ["user:a"]) is None
    finally:
        await again.close()


async def test_parked_session_is_claimed_once_and_expires(made: Made) -> None:
    log = made.log
    parked = ParkedSession("sid1", "u1", ("user:u1", "channel:c"), await log.head())
    await log.park("pid1", parked, ttl=10)
    await log.park("pid2", parked, ttl=10)
    assert await log.claim("pid1") == parked
    assert await log.claim("pid1") is None
    made.clock.now += 11
    assert await log.claim("pid2") is None
    assert await log.claim("unknown") is None


async def test_parking_again_outlives_the_first_parks_expiry(made: Made) -> None:
    log = made.log
    parked = ParkedSession("sid1", "u1", ("user:u1",), await log.head())
    await log.park("pid1", parked, ttl=10)
    made.clock.now += 5
    await log.park("pid1", parked, ttl=10)  # the same tab disconnected again: a new deadline
    made.clock.now += 6  # past the first deadline, before the second
    for i in range(300):  # a mass disconnect: each park also drops what has expired
        await log.park(f"crowd{i}", parked, ttl=3)
    assert await log.claim("pid1") == parked
    made.clock.now += 4
    await log.park("late", parked, ttl=10)
    assert await log.claim("crowd7") is None and await log.claim("crowd299") is None
    assert await log.claim("late") == parked


def test_recoverable_rooms() -> None:
    assert is_recoverable("user:1") and is_recoverable("channel:2")
    assert not is_recoverable("note:1") and not is_recoverable("doc_note:1") and not is_recoverable("sid")
    assert not is_recoverable(None) and not is_recoverable(["user:1"])


def test_typing_indicators_are_ephemeral() -> None:
    from chatwire.backends.eventlog import is_ephemeral

    typing = {"channel_id": "c", "data": {"type": "typing", "data": {"typing": True}}}
    assert is_ephemeral("events:channel", typing)
    assert not is_ephemeral("events:channel", {"channel_id": "c", "data": {"type": "message", "data": {}}})
    assert not is_ephemeral("events", typing)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_a_new_primary_begins_a_new_epoch_once(kind: str, request: pytest.FixtureRequest) -> None:
    """When the primary's replication id changes (a replica was promoted: writes it never got may be lost), a
    read of the old epoch is refused and the log continues in a new epoch; the processes that notice later do
    not begin yet another one."""
    request.param = kind  # type: ignore[attr-defined]
    target = target_for(request)
    primary = {"id": "replid-a"}

    async def primary_id() -> str:
        return primary["id"]

    async with redis_prefix(target) as (client, prefix):
        one, two = (
            RedisEventLog(client, prefix, 50, 60, cluster=target.cluster, primary_id=primary_id)
            for _ in range(2)
        )
        assert not await one.primary_changed()  # first sight: the epoch adopts the primary's id
        start = await one.head()
        first = await one.append("user:u1", "e", {"n": 1})
        assert [e.seq for e in await two.read(start, ["user:u1"]) or []] == [first.seq]

        primary["id"] = "replid-b"  # failover
        assert await two.read(start, ["user:u1"]) is None
        assert await one.read(start, ["user:u1"]) is None
        assert one.rotations + two.rotations == 1
        new_epoch = await one.epoch()
        assert new_epoch != start.rsplit("-", 1)[0]
        after = await one.head()
        second = await two.append("user:u1", "e", {"n": 2})
        assert second.offset.startswith(new_epoch + "-") and second.seq > first.seq
        assert [e.seq for e in await one.read(after, ["user:u1"]) or []] == [second.seq]
