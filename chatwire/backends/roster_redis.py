"""Who is in a room across the fleet, for the rooms that need it (collaborative documents list their sessions).

One Redis set per room; a process adds and removes its own sessions. Entries of a process that died are filtered
out by the session store's TTL (a dead process's sessions expire), so the list never shows ghosts for long.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.backends.redis_client import AnyRedis


class RedisRoster:
    def __init__(self, client: AnyRedis, prefix: str, alive: Callable[[str], Awaitable[bool]]) -> None:
        self.r: Any = client
        self.p = prefix + "roster:"
        self.alive = alive

    async def add(self, room: str, sid: str) -> None:
        await self.r.sadd(self.p + room, sid)

    async def remove(self, room: str, sid: str) -> None:
        await self.r.srem(self.p + room, sid)

    async def members(self, room: str) -> list[str]:
        sids = sorted(
            s.decode() if isinstance(s, bytes) else str(s) for s in await self.r.smembers(self.p + room)
        )
        live = [sid for sid in sids if await self.alive(sid)]
        gone = set(sids) - set(live)
        if gone:
            await self.r.srem(self.p + room, *gone)
        return live
