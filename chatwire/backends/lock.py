"""A named lease lock: held by one owner at a time, renewed and released only by that owner (compare-and-set),
and free again by itself when the owner stops renewing (its process died)."""

from __future__ import annotations

from typing import Protocol


class Lock(Protocol):
    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lock if free; True when `owner` holds it afterwards (also when it already did)."""
        ...

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease; False (and no change) when `owner` does not hold it."""
        ...

    async def release(self, name: str, owner: str) -> bool:
        """Free the lock; False (and no change) when `owner` does not hold it."""
        ...
