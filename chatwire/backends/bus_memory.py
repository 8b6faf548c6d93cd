"""An in-process Bus: several 'processes' in one interpreter share a MemoryHub (used by tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from chatwire.backends.bus import GapHandler, Handler


class MemoryHub:
    """The shared medium of MemoryBus instances."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBus]] = defaultdict(set)


class MemoryBus:
    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._topics: set[str] = set()

    async def start(self, handler: Handler) -> None:
        if self._task is not None:
            raise RuntimeError("bus already started")

        async def pump() -> None:
            while True:
                topic, payload = await self._queue.get()
                with contextlib.suppress(Exception):
                    await handler(topic, payload)

        self._task = asyncio.create_task(pump(), name="chatwire-memory-bus")

    async def stop(self) -> None:
        await self.unsubscribe(*self._topics)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def on_gap(self, handler: GapHandler) -> None:
        """An in-process bus never loses its subscription: there is no gap to report."""

    async def subscribe(self, *topics: str) -> None:
        for topic in topics:
            self._topics.add(topic)
            self.hub.subscribers[topic].add(self)

    async def unsubscribe(self, *topics: str) -> None:
        for topic in topics:
            self._topics.discard(topic)
            subs = self.hub.subscribers.get(topic)
            if subs is not None:
                subs.discard(self)
                if not subs:
                    del self.hub.subscribers[topic]

    async def publish(self, topic: str, payload: bytes) -> int:
        subs = list(self.hub.subscribers.get(topic, ()))
        for bus in subs:
            bus.receive(topic, payload)
        return len(subs)

    def receive(self, topic: str, payload: bytes) -> None:
        """Queue a message published on the hub for this bus's listener (in publication order)."""
        self._queue.put_nowait((topic, payload))

    def channel_name(self, topic: str) -> str:
        return topic

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()
