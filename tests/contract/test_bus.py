"""Bus contract: topic routing, order per topic, and no delivery of unsubscribed topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from chatwire.backends.bus import Bus
from chatwire.backends.bus_memory import MemoryBus, MemoryHub
from chatwire.backends.bus_redis import RedisBus
from tests.contract.conftest import REDIS_KINDS, redis_prefix, target_for


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Bus]]:
    buses: list[Bus] = []
    if request.param == "memory":
        hub = MemoryHub()

        def make() -> Bus:
            buses.append(MemoryBus(hub))
            return buses[-1]
    else:
        target = target_for(request)
        async with redis_prefix(target) as (_client, prefix):

            def make() -> Bus:
                buses.append(RedisBus(target, prefix))
                return buses[-1]

            yield make
            for bus in buses:
                await bus.stop()
            return
    yield make
    for bus in buses:
        await bus.stop()


async def started(bus: Bus) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []

    async def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    await bus.start(handler)
    return got


async def wait_until(cond: Callable[[], bool], timeout: float = 3) -> None:
    """Poll `cond` (the handlers append from another task) until true or timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_routes_by_topic_in_order(make_bus: Callable[[], Bus]) -> None:
    a, b = make_bus(), make_bus()
    got_a, got_b = await started(a), await started(b)
    await a.subscribe("room:x")
    await b.subscribe("room:y")
    assert a.healthy and b.healthy
    for i in range(100):
        await b.publish("room:x", str(i).encode())
    await b.publish("room:y", b"for-b")
    await b.publish("room:z", b"nobody")
    await wait_until(lambda: len(got_a) == 100 and len(got_b) == 1)
    assert [p for _, p in got_a] == [str(i).encode() for i in range(100)]
    assert got_b == [("room:y", b"for-b")]


async def test_unsubscribed_topics_are_not_received(make_bus: Callable[[], Bus]) -> None:
    a, b = make_bus(), make_bus()
    got_a = await started(a)
    await started(b)
    await a.subscribe("t1", "t2")
    await a.unsubscribe("t1")
    await b.publish("t1", b"gone")
    await b.publish("t2", b"kept")
    await wait_until(lambda: len(got_a) >= 1)
    await asyncio.sleep(0.1)
    assert got_a == [("t2", b"kept")]


async def test_an_idle_bus_stays_subscribed(make_bus: Callable[[], Bus]) -> None:
    """Idle periods (when the Redis bus pings its connection) neither drop the subscription nor lose messages."""
    a, b = make_bus(), make_bus()
    got_a = await started(a)
    await started(b)
    await a.subscribe("t")
    await asyncio.sleep(6.5)  # longer than the Redis bus's idle ping interval
    assert a.healthy and getattr(a, "gaps", 0) == 0
    await b.publish("t", b"after-idle")
    await wait_until(lambda: len(got_a) == 1)
    assert got_a == [("t", b"after-idle")]


async def test_a_handler_subscribes_while_handling_a_message(
    make_bus: Callable[[], Bus], caplog: pytest.LogCaptureFixture
) -> None:
    """A room entered over the bus subscribes from inside the bus's own handler; that must neither wait for a
    confirmation only the busy listener could read nor miss what is published once the handler is done."""
    a, b = make_bus(), make_bus()
    got: list[tuple[str, bytes]] = []
    entered = asyncio.Event()

    async def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))
        if topic == "enter":
            await a.subscribe(payload.decode())
            entered.set()

    await a.start(handler)
    await started(b)
    await a.subscribe("enter")
    caplog.set_level("WARNING")
    await b.publish("enter", b"room:new")
    await asyncio.wait_for(entered.wait(), 5)
    await b.publish("room:new", b"hello")
    await wait_until(lambda: ("room:new", b"hello") in got)
    assert not [r for r in caplog.records if "not confirmed" in r.getMessage()]
