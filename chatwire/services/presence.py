"""Presence (heartbeats, who is online) and the model usage pool behind GET /api/usage."""

from __future__ import annotations

import time
from typing import Any

from chatwire.backends.sessions import SessionStore
from chatwire.db.repos.users import UserRepo
from chatwire.util import now_s

LAST_ACTIVE_WRITE_INTERVAL = 60.0


class PresenceService:
    def __init__(self, sessions: SessionStore, users: UserRepo) -> None:
        self.sessions = sessions
        self.users = users
        self._last_write: dict[str, float] = {}

    async def heartbeat(self, sid: str, user_id: str) -> None:
        """Refresh the session's TTL; write the user's last_active_at at most once a minute."""
        await self.sessions.touch([sid])
        now = time.monotonic()
        if now - self._last_write.get(user_id, float("-inf")) >= LAST_ACTIVE_WRITE_INTERVAL:
            self._last_write[user_id] = now
            await self.users.touch(user_id, now_s())

    async def usage(self, sid: str, model: str) -> None:
        await self.sessions.record_usage(sid, model)

    async def snapshot(self) -> dict[str, Any]:
        return {
            "model_ids": await self.sessions.active_models(),
            "user_count": len(await self.sessions.online_user_ids()),
        }

    def forget(self, user_id: str) -> None:
        self._last_write.pop(user_id, None)
