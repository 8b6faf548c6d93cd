"""Failed attempts per key in a sliding window (sign-in guessing limits): memory for one process, Redis for a fleet,
so that a guesser who spreads tries over the fleet's processes meets one limit, not one per process."""

from __future__ import annotations

from typing import Protocol


class AttemptLog(Protocol):
    """At most `limit` failures per key in the last `window` seconds (both fixed at construction); a limit of 0
    means no limit."""

    async def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None while it is under its limit."""
        ...

    async def add(self, key: str) -> None:
        """Count one failure of `key` now."""
        ...

    async def clear(self, key: str) -> None:
        """Forget `key`'s failures (its owner proved who they are)."""
        ...


class AttemptLogFactory(Protocol):
    """Makes the AttemptLog called `name` (one per kind of key: accounts, addresses)."""

    def __call__(self, name: str, limit: int, window: float) -> AttemptLog: ...
