"""BlobStore in memory (one process; the contract suite runs it beside the Redis one)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable


class MemoryBlobStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._blobs: dict[str, tuple[float, bytes]] = {}

    async def put(self, data: bytes, ttl: float) -> str:
        now = self._clock()
        self._blobs = {k: v for k, v in self._blobs.items() if v[0] > now}
        key = uuid.uuid4().hex
        self._blobs[key] = (now + ttl, bytes(data))
        return key

    async def get(self, key: str) -> bytes | None:
        item = self._blobs.get(key)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]
