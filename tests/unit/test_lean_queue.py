"""LeanQueue behaves like the asyncio.Queue subset Engine.IO's sockets use."""

from __future__ import annotations

import asyncio

import pytest

from chatwire.transport.sio_server import LeanQueue


async def test_items_come_out_in_order_and_get_waits_for_one() -> None:
    q = LeanQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    await q.put("a")
    q.put_nowait("b")
    assert await getter == "a"
    assert q.qsize() == 1 and not q.empty()
    assert q.get_nowait() == "b"
    assert q.empty()
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_a_timed_out_get_loses_nothing() -> None:
    q = LeanQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.01)
    q.put_nowait(1)
    assert await asyncio.wait_for(q.get(), 1) == 1


async def test_a_woken_getter_that_is_cancelled_passes_the_item_on() -> None:
    q = LeanQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("x")
    first.cancel()
    assert await asyncio.wait_for(second, 1) == "x"


async def test_join_waits_for_task_done() -> None:
    q = LeanQueue()
    await q.join()  # nothing unfinished
    q.put_nowait(1)
    joined = asyncio.ensure_future(q.join())
    await asyncio.sleep(0)
    assert not joined.done()
    q.get_nowait()
    q.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        q.task_done()


async def test_before_put_runs_before_the_item_is_queued() -> None:
    q = LeanQueue()
    seen: list[int] = []
    q.before_put = lambda: seen.append(q.qsize())
    q.put_nowait("close")
    assert seen == [0] and q.get_nowait() == "close"
