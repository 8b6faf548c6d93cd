"""The user directory: who a signed-in user may find (to start a dm, add to a channel, share a note with)."""

from __future__ import annotations

from typing import Any

from chatwire.backends.sessions import SessionStore
from chatwire.db.models import User
from chatwire.db.repos.users import UserRepo
from chatwire.errors import not_found

PAGE_SIZE = 30


class UserDirectory:
    def __init__(self, users: UserRepo, sessions: SessionStore) -> None:
        self.users = users
        self.sessions = sessions

    async def search(self, viewer: User, query: str, page: int) -> dict[str, Any]:
        """One page of users whose name contains `query`, in Open WebUI's `{users, total}` shape. Everyone sees
        ids, names and who is online; emails only for the viewer's own entry, or for an admin (who may also
        search by email)."""
        admin = viewer.role == "admin"
        found, total = await self.users.search(
            query, skip=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, by_email=admin
        )
        online = set(await self.sessions.online_user_ids())
        return {"users": [self._entry(viewer, u, online) for u in found], "total": total}

    async def info(self, viewer: User, user_id: str) -> dict[str, Any]:
        """One user's directory entry (the same fields as a search result)."""
        user = await self.users.get(user_id)
        if user is None:
            raise not_found("user")
        return self._entry(viewer, user, set(await self.sessions.online_user_ids()))

    @staticmethod
    def _entry(viewer: User, user: User, online: set[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": user.id, "name": user.name, "is_active": user.id in online}
        if viewer.role == "admin" or user.id == viewer.id:
            entry["email"] = user.email
            entry["role"] = user.role
        return entry
