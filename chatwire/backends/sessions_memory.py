"""In-memory SessionStore for the embedded, single-process mode."""

from __future__ import annotations

import time
from collections import defaultdict

from chatwire.backends.sessions import Removed, SessionInfo


class MemorySessionStore:
    """Dicts and monotonic deadlines; every read skips expired entries, so TTL holds without a sweeper.

    No method awaits anything, so each one is atomic with respect to the others (the online roster's rule)."""

    def __init__(self, presence_ttl: float, usage_ttl: float, clock: object = time.monotonic) -> None:
        self.presence_ttl = presence_ttl
        self.usage_ttl = usage_ttl
        self._clock = clock
        self._sessions: dict[str, SessionInfo] = {}
        self._deadline: dict[str, float] = {}
        self._by_user: dict[str, set[str]] = defaultdict(set)
        self._usage: dict[str, dict[str, float]] = defaultdict(dict)  # model -> sid -> deadline
        # Users announced online: in from their first session's add until the removal of their last live one.
        self._online: set[str] = set()

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator,no-any-return]

    def _alive(self, sid: str, now: float) -> bool:
        return self._deadline.get(sid, 0.0) > now

    async def add(self, info: SessionInfo) -> bool:
        old = self._sessions.get(info.sid)
        if old is not None and old.user_id != info.user_id:
            self._by_user[old.user_id].discard(info.sid)
        self._sessions[info.sid] = info
        self._deadline[info.sid] = self._now() + self.presence_ttl
        self._by_user[info.user_id].add(info.sid)
        came_online = info.user_id not in self._online
        self._online.add(info.user_id)
        return came_online

    async def remove(self, sid: str) -> Removed | None:
        info = self._sessions.pop(sid, None)
        self._deadline.pop(sid, None)
        for holders in self._usage.values():
            holders.pop(sid, None)
        if info is None:
            return None
        sids = self._by_user.get(info.user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_user[info.user_id]
        now = self._now()
        last = info.user_id in self._online and not any(self._alive(s, now) for s in sids or ())
        if last:
            self._online.discard(info.user_id)
        return Removed(info, last)

    async def get(self, sid: str) -> SessionInfo | None:
        if not self._alive(sid, self._now()):
            return None
        return self._sessions.get(sid)

    async def sids_of(self, user_id: str) -> list[str]:
        now = self._now()
        return sorted(s for s in self._by_user.get(user_id, ()) if self._alive(s, now))

    async def touch(self, sids: list[str]) -> list[str]:
        deadline = self._now() + self.presence_ttl
        missing = []
        for sid in sids:
            if sid in self._sessions:
                self._deadline[sid] = deadline
            else:
                missing.append(sid)
        return missing

    async def online_user_ids(self) -> list[str]:
        now = self._now()
        return sorted(uid for uid, sids in self._by_user.items() if any(self._alive(s, now) for s in sids))

    async def record_usage(self, sid: str, model: str) -> None:
        self._usage[model][sid] = self._now() + self.usage_ttl

    async def active_models(self) -> list[str]:
        now = self._now()
        return sorted(m for m, holders in self._usage.items() if any(d > now for d in holders.values()))

    async def purge_expired(self) -> list[Removed]:
        now = self._now()
        gone = [sid for sid in self._sessions if not self._alive(sid, now)]
        dropped = [removed for sid in gone if (removed := await self.remove(sid)) is not None]
        for model in list(self._usage):
            holders = {s: d for s, d in self._usage[model].items() if d > now}
            if holders:
                self._usage[model] = holders
            else:
                del self._usage[model]
        return dropped
