"""What the connect path keeps in memory so that a connect needs no database round trip in the common case.

- `RevocationSet`: every revoked, unexpired token id, loaded from the database once and kept current by this
  process's own sign-outs and, in a fleet, by the other processes' `revoked` messages on the bus. After a bus gap
  (messages may be lost) or while the bus is unhealthy it is not trusted and the database answers instead; it is
  reloaded every `refresh_seconds` in any case, which bounds what a lost message could cost.
- `TokenCache`: the verified claims of recently seen own tokens (signature checked once per token, not per connect);
  an entry never outlives its token's `exp`.
- `UserCache`: user rows for `ttl` seconds, dropped at once on a change made through `UserRepo` (here or, over the
  bus, on another process).
- `MembershipCache`: each user's channel ids for `ttl` seconds, dropped at once on every membership change made
  through `ChannelRepo` (channel created or deleted, members added or removed), here or, over the bus, on another
  process; a bus gap clears it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from chatwire.db.models import User
from chatwire.util import now_s

V = TypeVar("V")


class RevocationSet:
    """Revoked token ids -> expiry (epoch seconds), a mirror of the revoked-token table."""

    def __init__(
        self,
        load: Callable[[], Awaitable[list[tuple[str, int]]]],
        check: Callable[[str], Awaitable[bool]],
        refresh_seconds: float = 60.0,
    ) -> None:
        self._load = load
        self._check = check
        self.refresh_seconds = refresh_seconds
        self._revoked: dict[str, int] = {}
        self._loaded_at: float | None = None
        self._loading: asyncio.Future[None] | None = None
        self._invalidations = 0  # a read that started before an invalidation does not count as fresh
        # False while the fleet bus cannot deliver (the set may miss another process's revocations).
        self.trusted: Callable[[], bool] = lambda: True
        self.loads = 0  # how many times the table was read (tests, metrics)

    def __len__(self) -> int:
        return len(self._revoked)

    def add(self, jti: str, expires_at: int) -> None:
        """A token revoked here or announced by another process."""
        self._revoked[jti] = int(expires_at)

    def invalidate(self) -> None:
        """Messages may have been lost (bus gap): read the table again before the next answer."""
        self._loaded_at = None
        self._invalidations += 1

    async def is_revoked(self, jti: str) -> bool:
        if jti in self._revoked:
            return True
        if not self.trusted():
            return await self._check(jti)
        for _ in range(3):  # a read overtaken by an invalidation does not answer: read again
            loaded = self._loaded_at
            if loaded is not None and time.monotonic() - loaded <= self.refresh_seconds:
                return jti in self._revoked
            await self._reload()
        return await self._check(jti)

    async def _reload(self) -> None:
        """One read of the table however many connects wait for it; the read runs in its own task, so a waiter
        that is cancelled (its client went away) does not cancel it for the others."""
        if self._loading is None:
            task = asyncio.ensure_future(self._read())
            self._loading = task
            task.add_done_callback(self._loaded)
        await asyncio.shield(self._loading)

    def _loaded(self, task: asyncio.Future[None]) -> None:
        self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it; nobody logs "never retrieved"

    async def _read(self) -> None:
        started = time.monotonic()
        invalidations = self._invalidations
        rows = await self._load()
        now = now_s()
        fresh = {jti: exp for jti, exp in rows if exp >= now}
        # Keep what arrived while the read ran (a revocation committed after the read's snapshot).
        for jti, exp in self._revoked.items():
            if exp >= now:
                fresh.setdefault(jti, exp)
        self._revoked = fresh
        if invalidations == self._invalidations:
            self._loaded_at = started
        self.loads += 1


class TokenCache:
    """Token string -> verified claims, for tokens that passed the signature check; bounded, oldest out first."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._claims: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claims)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.get(token) is not None

    def get(self, token: str) -> dict[str, Any] | None:
        claims = self._claims.get(token)
        if claims is None:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            del self._claims[token]  # expired: the full decode names the error
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        if not self.max_entries:
            return
        self._claims[token] = claims
        while len(self._claims) > self.max_entries:
            self._claims.popitem(last=False)


class RowCache(Generic[V]):
    """Key -> (loaded at, value) for `ttl` seconds; `forget` on every change. Bounded, oldest out first.

    A read that started before a change must not store its older value: `put` takes the key's generation read
    before the read began and drops the value if a `forget` came in between."""

    def __init__(self, ttl: float = 30.0, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._rows: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped by `clear`: no read that started before it stores its value

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> V | None:
        hit = self._rows.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.ttl:
            del self._rows[key]
            return None
        return hit[1]

    def generation(self, key: str) -> tuple[int, int]:
        return self._epoch, self._generation.get(key, 0)

    def put(self, key: str, value: V, generation: tuple[int, int]) -> None:
        """Store a value read when the key's generation was `generation` (dropped if it changed since)."""
        if not self.ttl or self.generation(key) != generation:
            return
        self._rows[key] = (time.monotonic(), value)
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def forget(self, key: str) -> None:
        self._rows.pop(key, None)
        self._generation[key] = self._generation.get(key, 0) + 1
        if len(self._generation) > self.max_entries * 2:
            self._generation.clear()  # only reads in flight need it; the new epoch refuses all of theirs
            self._epoch += 1

    def clear(self) -> None:
        """Forget everything, including for reads in flight (they store nothing)."""
        self._rows.clear()
        self._epoch += 1


class UserCache(RowCache[User]):
    """User id -> user row. Sessions of one user share one row."""


class MembershipCache(RowCache[tuple[str, ...]]):
    """User id -> the ids of the channels the user is a member of (the rooms a `user-join` enters)."""
