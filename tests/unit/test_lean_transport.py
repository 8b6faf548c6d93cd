"""The small parts of the lean websocket transport: the timer wheel and uvicorn's write gate."""

from __future__ import annotations

import asyncio

from chatwire.transport.eio_ws import Wheel
from chatwire.transport.uvicorn_ws import WriteGate


async def test_wheel_calls_every_entry_once_and_never_early() -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[str, float]] = []
    done = asyncio.Event()
    due: dict[str, float] = {}

    def callback(name: str) -> None:
        calls.append((name, loop.time()))
        if len(calls) == len(due):
            done.set()

    wheel = Wheel(callback, tick=0.01)
    start = loop.time()
    for i, delay in enumerate((0.03, 0.0, 0.05, 0.03)):
        name = f"e{i}"
        due[name] = start + delay
        wheel.at(due[name], name)
    assert len(wheel.buckets) == 3  # entries due in the same tick share one loop timer
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(name for name, _ in calls) == sorted(due)
    assert all(when >= due[name] - 1e-6 for name, when in calls)
    assert wheel.buckets == {}


async def test_wheel_keeps_going_when_a_callback_fails() -> None:
    seen: list[int] = []
    done = asyncio.Event()

    def callback(n: int) -> None:
        if n == 1:
            raise RuntimeError("boom")
        seen.append(n)
        if n == 2:
            done.set()

    wheel = Wheel(callback, tick=0.01)
    now = asyncio.get_running_loop().time()
    for n in (1, 2):
        wheel.at(now, n)
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [2]


async def test_write_gate_blocks_senders_only_while_closed() -> None:
    gate = WriteGate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    waiters = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert gate._waiters is None  # nothing kept once nobody waits


async def test_a_cancelled_write_gate_waiter_leaves_nothing_behind() -> None:
    gate = WriteGate()
    gate.clear()
    waiter = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert not gate._waiters
    gate.set()
    assert gate.is_set()
