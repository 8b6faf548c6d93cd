"""DeltaCoalescer: fast deltas merge into one event per window, slow ones leave at once, order is always kept."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from chatwire.services.coalesce import DELTA, DeltaCoalescer, plain_delta_text

WINDOW = 0.05


class Recorder:
    """An emit that records each event with the loop time it was sent; `delays[i]`: the i-th send takes that long
    (a slow reader's backpressure)."""

    def __init__(self, delays: dict[int, float] | None = None) -> None:
        self.sent: list[tuple[float, Mapping[str, Any]]] = []
        self.delays = delays or {}
        self.calls = 0

    async def __call__(self, event: Mapping[str, Any]) -> None:
        delay = self.delays.get(self.calls, 0.0)
        self.calls += 1
        if delay:
            await asyncio.sleep(delay)
        self.sent.append((asyncio.get_running_loop().time(), event))

    @property
    def events(self) -> list[Mapping[str, Any]]:
        return [e for _, e in self.sent]

    @property
    def texts(self) -> list[str]:
        return [e["data"]["content"] for e in self.events if e["type"] == DELTA]


async def feed(c: DeltaCoalescer, text: str) -> None:
    if c.add(text):
        await c.flush()


def delta(text: str) -> dict[str, Any]:
    return {"type": DELTA, "data": {"content": text}}


@pytest.mark.asyncio
async def test_fast_tokens_merge_and_the_first_leaves_at_once() -> None:
    out = Recorder()
    c = DeltaCoalescer(out, WINDOW)
    for word in ["a ", "b ", "c ", "d "]:
        await feed(c, word)
    assert out.texts == ["a "]  # the first went at once; the rest wait for the window
    await asyncio.sleep(WINDOW * 1.2)
    assert out.texts == ["a "]  # no further token came to flush them in line
    await asyncio.sleep(WINDOW * 0.6)  # the model went quiet: the timer, 1.5 windows on, sends them
    assert out.texts == ["a ", "b c d "]
    await c.flush()
    assert out.texts == ["a ", "b c d "]  # nothing left, nothing sent twice


@pytest.mark.asyncio
async def test_slow_tokens_are_not_delayed() -> None:
    out = Recorder()
    c = DeltaCoalescer(out, WINDOW)
    loop = asyncio.get_running_loop()
    for word in ["one ", "two ", "three"]:
        before = loop.time()
        await feed(c, word)
        assert out.sent[-1][0] - before < WINDOW / 2  # sent in the same turn, no timer involved
        await asyncio.sleep(WINDOW * 1.5)
    assert out.texts == ["one ", "two ", "three"]


@pytest.mark.asyncio
async def test_other_events_never_overtake_held_text() -> None:
    out = Recorder()
    c = DeltaCoalescer(out, WINDOW)
    await feed(c, "x ")
    await feed(c, "y ")
    await c.send({"type": "status", "data": {"description": "thinking"}})
    await feed(c, "z")
    await c.send({"type": "chat:completion", "data": {"done": True}})
    assert [e["type"] for e in out.events] == [DELTA, DELTA, "status", DELTA, "chat:completion"]
    assert out.texts == ["x ", "y ", "z"]


@pytest.mark.asyncio
async def test_a_timer_send_in_flight_is_awaited_before_the_next_event() -> None:
    out = Recorder({1: 2 * WINDOW})  # the timer's send takes two windows
    c = DeltaCoalescer(out, WINDOW)
    await feed(c, "1 ")  # leaves at once
    await feed(c, "2 ")
    await feed(c, "3 ")
    await asyncio.sleep(WINDOW * 1.7)  # the timer has started sending "2 3 " and is not done
    await feed(c, "4 ")
    await c.send({"type": "chat:completion", "data": {"done": True}})
    assert [e["data"].get("content") for e in out.events] == ["1 ", "2 3 ", "4 ", None]


@pytest.mark.asyncio
async def test_a_stop_during_a_timer_send_keeps_order() -> None:
    out = Recorder({1: 2 * WINDOW})
    c = DeltaCoalescer(out, WINDOW)

    async def generation() -> None:
        try:
            await feed(c, "a ")
            await feed(c, "b ")
            await asyncio.sleep(WINDOW * 1.7)  # the timer's send of "b " is under way
            await c.flush()  # cancelled while waiting for it
        except asyncio.CancelledError:
            await c.send({"type": "chat:tasks:cancel", "data": {}})
            raise

    task = asyncio.create_task(generation())
    await asyncio.sleep(WINDOW * 2)
    assert out.texts == ["a "]  # "b " is still being sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e["type"] for e in out.events] == [DELTA, DELTA, "chat:tasks:cancel"]
    assert out.texts == ["a ", "b "]


@pytest.mark.asyncio
async def test_the_first_token_after_the_window_flushes_in_line() -> None:
    out = Recorder()
    c = DeltaCoalescer(out, WINDOW)
    await feed(c, "a ")
    assert not c.add("b ")
    await asyncio.sleep(WINDOW * 1.1)
    assert c.add("c ")  # the window is over: the caller sends "b c " now, before the timer would
    await c.flush()
    assert out.texts == ["a ", "b c "]
    await asyncio.sleep(WINDOW)
    assert out.texts == ["a ", "b c "]  # the timer was cancelled, nothing sent twice


@pytest.mark.asyncio
async def test_many_tokens_in_one_window_cost_one_event() -> None:
    out = Recorder()
    c = DeltaCoalescer(out, 10.0)
    words = [f"w{i} " for i in range(1000)]
    for w in words:
        await feed(c, w)
    await c.flush()
    assert len(out.events) == 2
    assert "".join(out.texts) == "".join(words)


def test_only_plain_deltas_merge() -> None:
    assert plain_delta_text(delta("hi")) == "hi"
    assert plain_delta_text({"type": "message", "data": {"content": "hi"}}) is None
    assert plain_delta_text({"type": DELTA, "data": {"content": "hi", "extra": 1}}) is None
    assert plain_delta_text({"type": DELTA, "data": {"content": 5}}) is None
    assert plain_delta_text({"type": DELTA, "data": "hi"}) is None
    assert plain_delta_text({"type": DELTA, "data": {"content": "hi"}, "id": "x"}) is None
