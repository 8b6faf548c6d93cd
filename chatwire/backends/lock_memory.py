"""In-process lease lock (one process: the embedded mode)."""

from __future__ import annotations

import time


class MemoryLock:
    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    def _holder(self, name: str) -> str | None:
        held = self._held.get(name)
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        holder = self._holder(name)
        if holder is not None and holder != owner:
            return False
        self._held[name] = (owner, time.monotonic() + ttl)
        return True

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        if self._holder(name) != owner:
            return False
        self._held[name] = (owner, time.monotonic() + ttl)
        return True

    async def release(self, name: str, owner: str) -> bool:
        if self._holder(name) != owner:
            return False
        del self._held[name]
        return True
