"""The SessionStore: which user each live session belongs to, presence by TTL, and the model usage pool.

Presence expires on its own: a session not refreshed within the TTL is gone, so a crashed process leaves no
ghosts. Live processes refresh their sessions periodically.

The store also decides when a user comes online and goes offline, once per transition however many tabs connect
or leave at once, on however many processes: `add` says whether it brought the user's first session, `remove`
(and `purge_expired`) whether it took the last one. The store keeps a roster of users announced online for that,
changed in the same atomic step as the session itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SessionInfo:
    sid: str
    user_id: str
    name: str
    role: str
    jti: str | None = None
    host: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Removed:
    """A session taken out of the store, and whether it was its user's last live one anywhere (the user went
    offline: exactly one removal says so per transition)."""

    info: SessionInfo
    last: bool


class SessionStore(Protocol):
    async def add(self, info: SessionInfo) -> bool:
        """Register an authenticated session (replaces an earlier entry for the same sid); True when the user was
        not online before (this is the first session: the user came online)."""
        ...

    async def remove(self, sid: str) -> Removed | None:
        """Take the session out; None when the store does not know it."""
        ...

    async def get(self, sid: str) -> SessionInfo | None: ...

    async def sids_of(self, user_id: str) -> list[str]:
        """Live sessions of a user."""
        ...

    async def touch(self, sids: list[str]) -> list[str]:
        """Refresh the presence TTL of these sessions; returns those the store does not know (any more)."""
        ...

    async def online_user_ids(self) -> list[str]:
        """Users with at least one live session."""
        ...

    async def record_usage(self, sid: str, model: str) -> None:
        """Note that `sid` uses `model` now; the entry expires after the usage TTL."""
        ...

    async def active_models(self) -> list[str]:
        """Models used by any live session within the usage TTL."""
        ...

    async def purge_expired(self) -> list[Removed]:
        """Drop expired sessions and usage entries; returns the sessions dropped."""
        ...
