"""Text deltas of one generation merged into one event per short window, so a fast model costs per window, not per token.

A model streaming 150 tokens a second to a user's tabs would otherwise pay the whole event path (encode, event log,
reducer, writer, one frame per tab) 150 times a second for a few bytes each. The coalescer lets a delta leave at once
when none left during the last `window` seconds (a slow model's tokens are not delayed at all), and holds the deltas
that arrive faster than that: they leave together, as one `chat:message:delta` whose content is their text in order,
with the first delta after the window since the last one ends, or from a timer half a window later when the model
has gone quiet (held text waits at most 1.5 windows), and always before the generation's next other event, so that
order is kept (a status, a snapshot or the final `chat:completion` never overtakes text).

Clients see the same text; only the number of delta events changes, which the protocol leaves free (a delta appends
its content, whatever its length).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Emit = Callable[[Mapping[str, Any]], Awaitable[Any]]

DELTA = "chat:message:delta"


def plain_delta_text(event: Mapping[str, Any]) -> str | None:
    """The text of a delta that carries nothing but `{type, data: {content: str}}` (only those merge), else None."""
    if event.get("type") != DELTA or len(event) != 2:
        return None
    data = event.get("data")
    if type(data) is not dict or len(data) != 1:
        return None
    content = data.get("content")
    return content if type(content) is str else None


class DeltaCoalescer:
    """Holds a generation's fast deltas and sends them as one event per `window` seconds (see the module doc).

    `add(text)` is the per-token path: it only appends, and says when the caller should `await flush()` now.
    Every other event of the generation goes through `send`, which sends the held text first.
    """

    __slots__ = ("_emit", "_inflight", "_loop", "_next", "_pending", "_timer", "_window")

    def __init__(self, emit: Emit, window: float) -> None:
        self._emit = emit
        self._window = window
        self._loop = asyncio.get_running_loop()
        self._pending: list[str] = []
        self._next = 0.0  # loop time from which a delta may leave at once
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Task[None] | None = None  # a timer's send, awaited before the next send

    def add(self, text: str) -> bool:
        """Hold `text`; True when the window is over and the caller should `await flush()` at once."""
        self._pending.append(text)
        now = self._loop.time()
        if now >= self._next:
            return True
        if self._timer is None:
            # A steady model's next token flushes in line once the window is over (no timer, no task); the timer,
            # half a window later, only sends what a model that went quiet left behind.
            self._timer = self._loop.call_later(self._next - now + self._window / 2, self._on_timer)
        return False

    async def flush(self) -> None:
        """Send the held text now (after any send a timer started), as one delta."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inflight = self._inflight
        if inflight is not None:
            # Shielded: a stop that cancels the generation here must not cut a delta that is half sent; the
            # send stays awaited (so the stop's own event still follows it) until it has ended.
            try:
                await asyncio.shield(inflight)
            finally:
                if inflight.done() and self._inflight is inflight:
                    self._inflight = None
        if self._pending:
            await self._emit(self._take())

    async def send(self, event: Mapping[str, Any]) -> None:
        """Send a non-mergeable event of the generation, after the text held before it."""
        if self._pending or self._inflight is not None:
            await self.flush()
        await self._emit(event)

    def _take(self) -> dict[str, Any]:
        text = self._pending[0] if len(self._pending) == 1 else "".join(self._pending)
        self._pending = []
        self._next = self._loop.time() + self._window
        return {"type": DELTA, "data": {"content": text}}

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending:
            self._inflight = self._loop.create_task(self._send_after(self._inflight, self._take()))

    async def _send_after(self, before: asyncio.Task[None] | None, event: dict[str, Any]) -> None:
        if before is not None:
            await before
        await self._emit(event)
