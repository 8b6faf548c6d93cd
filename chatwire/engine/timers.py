"""A hashed timer wheel: thousands of per-connection deadlines (pings, timeouts) share one event-loop timer."""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable

log = logging.getLogger(__name__)


def _nothing() -> None:
    """The callback of a cancelled timer."""


class Timer:
    """One scheduled callback; `cancel()` makes the wheel skip it (lazy removal, O(1)). `TimerWheel.move` schedules
    the same timer again (a heartbeat keeps one timer for the life of its session)."""

    __slots__ = ("callback", "cancelled", "deadline", "tick")

    def __init__(self, deadline: float, callback: Callable[[], None], tick: int) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False  # cancelled, or fired and not scheduled again
        self.tick = tick  # the bucket it waits in; an entry left in another bucket by `move` is skipped

    def cancel(self) -> None:
        self.cancelled = True
        # The timer waits in its bucket until its deadline; what the callback holds (a closed session, its
        # connection and buffers) must not wait with it.
        self.callback = _nothing


class TimerWheel:
    """Buckets deadlines by `resolution` seconds (rounded up, so nothing fires early) behind a single loop handle."""

    def __init__(self, resolution: float = 0.005) -> None:
        self.resolution = resolution
        self._buckets: dict[int, list[Timer]] = {}
        self._ticks: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_tick: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    def now(self) -> float:
        """The loop clock the deadlines are measured on."""
        return self._now()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, no earlier than `delay` seconds from now."""
        return self.call_at(self._now() + delay, callback)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, no earlier than `deadline` on the loop clock."""
        self._now()
        timer = Timer(deadline, callback, math.ceil(deadline / self.resolution))
        self._insert(timer)
        return timer

    def move(self, timer: Timer, deadline: float) -> None:
        """Schedule `timer` (pending or already fired) for `deadline` instead; nothing for a cancelled one. No new
        object: its old entry, if any, stays in its bucket and is skipped there."""
        if timer.callback is _nothing:
            return
        tick = math.ceil(deadline / self.resolution)
        timer.deadline = deadline
        if tick == timer.tick and not timer.cancelled:
            return  # already waiting in that bucket
        timer.tick = tick
        timer.cancelled = False
        self._insert(timer)

    def _insert(self, timer: Timer) -> None:
        tick = timer.tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [timer]
            heapq.heappush(self._ticks, tick)
            if self._armed_tick is None or tick < self._armed_tick:
                self._arm(tick)
        else:
            bucket.append(timer)

    def _arm(self, tick: int) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed_tick = tick
        self._handle = self._loop.call_at(tick * self.resolution, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_tick = None
        # the loop may run a handle a hair before its time; a millionth of a tick of slack keeps that from spinning
        now_tick = math.floor(self._now() / self.resolution + 1e-6)
        while self._ticks and self._ticks[0] <= now_tick:
            tick = heapq.heappop(self._ticks)
            for timer in self._buckets.pop(tick, ()):
                if not timer.cancelled and timer.tick == tick:
                    timer.cancelled = True
                    try:
                        timer.callback()
                    except Exception:
                        log.exception("timer callback failed")
        if self._ticks:
            self._arm(self._ticks[0])

    def __len__(self) -> int:
        return sum(
            1 for tick, bucket in self._buckets.items() for t in bucket if not t.cancelled and t.tick == tick
        )
