"""Presence (heartbeats, who is online) and the model usage pool behind GET /api/usage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chatwire.backends.sessions import Removed, SessionStore
from chatwire.db.models import User
from chatwire.db.repos.users import UserRepo
from chatwire.services.channels import ChannelService
from chatwire.util import now_s

LAST_ACTIVE_WRITE_INTERVAL = 60.0


class PresenceService:
    def __init__(
        self,
        sessions: SessionStore,
        users: UserRepo,
        channels: ChannelService | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.users = users
        # Told when a user comes online or goes offline, to announce it in the user's channels.
        self.channels = channels
        self.clock = clock
        # When each user's last_active_at was last written. An entry older than the write interval no longer
        # holds a write back, so those are swept out (once an interval): the table holds the users who wrote in
        # the last one or two intervals, not every user who ever sent a heartbeat.
        self._last_write: dict[str, float] = {}
        self._swept_at = clock()

    async def came_online(self, user: User) -> None:
        """The session store said registering a session brought the user's first one (fleet-wide): announce it."""
        if self.channels is not None:
            await self.channels.announce_presence(user.id, user.name, user.role, online=True)

    async def sessions_ended(self, ended: list[Removed]) -> None:
        """Sessions were removed (disconnect) or expired (TTL): announce the users whose last live session one of
        them was, as the store decided at removal (once per user, however many of their sessions end at once)."""
        if self.channels is None:
            return
        for removed in ended:
            if removed.last:
                info = removed.info
                await self.channels.announce_presence(info.user_id, info.name, info.role, online=False)

    async def online(self, user_ids: list[str]) -> set[str]:
        """Which of `user_ids` have a live session on any process."""
        wanted = set(user_ids)
        return wanted & set(await self.sessions.online_user_ids())

    async def heartbeat(self, sid: str, user_id: str) -> None:
        """Refresh the session's TTL; write the user's last_active_at at most once a minute."""
        await self.sessions.touch([sid])
        now = self.clock()
        if now - self._swept_at >= LAST_ACTIVE_WRITE_INTERVAL:
            self._swept_at = now
            self._last_write = {
                u: at for u, at in self._last_write.items() if now - at < LAST_ACTIVE_WRITE_INTERVAL
            }
        if now - self._last_write.get(user_id, float("-inf")) >= LAST_ACTIVE_WRITE_INTERVAL:
            self._last_write[user_id] = now
            await self.users.touch(user_id, now_s())

    def write_times_held(self) -> int:
        """Users whose last write of last_active_at is remembered (bounded by the sweep above)."""
        return len(self._last_write)

    async def usage(self, sid: str, model: str) -> None:
        await self.sessions.record_usage(sid, model)

    async def snapshot(self) -> dict[str, Any]:
        return {
            "model_ids": await self.sessions.active_models(),
            "user_count": len(await self.sessions.online_user_ids()),
        }

    def forget(self, user_id: str) -> None:
        self._last_write.pop(user_id, None)
