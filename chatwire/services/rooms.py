"""Room names and user-wide room membership (every session of a user enters or leaves together)."""

from __future__ import annotations

from chatwire.backends.broker import Broker
from chatwire.backends.sessions import SessionStore


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def channel_room(channel_id: str) -> str:
    return f"channel:{channel_id}"


def note_room(note_id: str) -> str:
    return f"note:{note_id}"


def doc_room(document_id: str) -> str:
    return f"doc_{document_id}"


class Rooms:
    """Moves all sessions of a user in or out of a room, wherever those sessions are connected."""

    def __init__(self, broker: Broker, sessions: SessionStore) -> None:
        self.broker = broker
        self.sessions = sessions

    async def add_user(self, user_id: str, room: str) -> None:
        for sid in await self.sessions.sids_of(user_id):
            await self.broker.enter_room(sid, room)

    async def remove_user(self, user_id: str, room: str) -> None:
        for sid in await self.sessions.sids_of(user_id):
            await self.broker.leave_room(sid, room)
