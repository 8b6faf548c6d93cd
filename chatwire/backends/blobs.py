"""BlobStore: short-lived storage for fleet messages too large for pub/sub.

An operation between processes larger than the fleet payload limit is not published itself: its bytes are put
here under a fresh key, in chunks of at most the limit, and a small reference travels on the bus instead; each
receiver takes the bytes by the key and handles the operation as if it had arrived whole. Invariants: `put` has
stored every chunk before it returns (so a reference published afterwards always resolves while the TTL lasts),
and `get` returns exactly the bytes put, or None once they expired.
"""

from __future__ import annotations

from typing import Protocol


class BlobStore(Protocol):
    async def put(self, data: bytes, ttl: float) -> str:
        """Store `data` for `ttl` seconds; returns its key."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None when unknown or expired."""
        ...
