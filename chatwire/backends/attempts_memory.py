"""The in-process AttemptLog: a bounded deque of failure times per key, a bounded number of keys."""

from __future__ import annotations

import time
from collections import OrderedDict, deque


class MemoryAttemptLog:
    """At most `limit` timestamps a key and `max_keys` keys (the least recently failed goes first), so a flood of
    keys costs bounded memory and O(1) per check."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hits)

    async def retry_after(self, key: str) -> float | None:
        return self.retry_after_at(key, time.monotonic())

    def retry_after_at(self, key: str, now: float) -> float | None:
        """`retry_after` at a given monotonic time (tests move the clock)."""
        hits = self._hits.get(key)
        if not self.limit or hits is None:
            return None
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits[0] + self.window - now if len(hits) >= self.limit else None

    async def add(self, key: str) -> None:
        if not self.limit:
            return
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        hits.append(time.monotonic())

    async def clear(self, key: str) -> None:
        self._hits.pop(key, None)


def memory_attempt_log(name: str, limit: int, window: float) -> MemoryAttemptLog:
    """The AttemptLogFactory of an embedded server (`name` only matters to shared stores)."""
    return MemoryAttemptLog(limit, window)
