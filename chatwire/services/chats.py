"""Chats as stored records: create, list, read in Open WebUI's shape, read markers."""

from __future__ import annotations

import contextlib
from typing import Any

from chatwire.backends.broker import Broker
from chatwire.backends.eventlog import EventLog
from chatwire.db.models import Chat, User
from chatwire.db.repos.chats import ChatRepo, chat_to_json
from chatwire.errors import not_found
from chatwire.services.events import ChatEvents
from chatwire.services.reducer import is_persisted_chat
from chatwire.services.rooms import user_room
from chatwire.util import now_s

CHAT_EVENT = "events"


def _tag(name: str, user_id: str) -> dict[str, Any]:
    """A tag in Open WebUI's TagModel shape (its id is the lower-cased name with underscores)."""
    return {"id": name.replace(" ", "_").lower(), "name": name, "user_id": user_id, "meta": None}


class ChatService:
    def __init__(self, repo: ChatRepo, broker: Broker, events: EventLog | None = None) -> None:
        self.repo = repo
        self.broker = broker
        self.events = events
        # The chat event pipeline (set by the container), for consistent reads of chats being streamed.
        self.pipeline: Any = None

    async def own_chat(self, chat_id: str, user: User) -> Chat:
        """The chat, if it belongs to `user` (admins may read any); `not_found` otherwise."""
        chat = await self.repo.get(chat_id)
        if chat is None or (chat.user_id != user.id and user.role != "admin"):
            raise not_found("chat")
        return chat

    async def create(self, user: User, chat: dict[str, Any]) -> dict[str, Any]:
        record = await self.repo.create(user.id, chat)
        return chat_to_json(record)

    async def list_for(self, user: User, skip: int, limit: int) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id,
                "title": c.title,
                "updated_at": c.updated_at,
                "created_at": c.created_at,
                "last_read_at": c.last_read_at,
            }
            for c in await self.repo.list_for_user(user.id, skip, limit)
        ]

    async def get(self, chat_id: str, user: User) -> dict[str, Any]:
        """The chat, plus (new) `stream_offset`: `user-join {since: stream_offset}` replays what follows."""
        await self.own_chat(chat_id, user)
        quiet = self.pipeline.quiet(chat_id) if self.pipeline is not None else contextlib.nullcontext()
        async with quiet:  # the stored chat and the stream's head describe the same moment
            offset = await self.events.head() if self.events is not None else None
            record = await self.repo.get_with_messages(chat_id)
        if record is None:
            raise not_found("chat")
        chat = chat_to_json(record)
        if offset is not None:
            chat["stream_offset"] = offset
        return chat

    async def update(self, chat_id: str, user: User, chat: dict[str, Any]) -> dict[str, Any]:
        """Merge the client's chat (title, history, other keys) into the stored one; the owner only.

        Events in flight for the chat are written first, so the merge sees what was streamed; an answer still
        streaming keeps the writer's row (ChatRepo.update)."""
        await self._owned(chat_id, user)
        quiet = self.pipeline.quiet(chat_id) if self.pipeline is not None else contextlib.nullcontext()
        async with quiet:
            record = await self.repo.update(chat_id, chat)
        if record is None:
            raise not_found("chat")
        if "title" in chat:
            await self._tell_list(user.id, chat_id, {"title": record.chat.title})
        return chat_to_json(record)

    async def delete(self, chat_id: str, user: User, stop: Any = None) -> bool:
        """Delete the user's chat (an admin may delete any), after stopping its generations (`stop`)."""
        chat = await self.own_chat(chat_id, user)
        if stop is not None:
            await stop(chat_id, user)
        await self.repo.delete(chat_id)
        await self._tell_list(chat.user_id, chat_id, {"deleted": True})
        return True

    async def tags(self, user: User) -> list[dict[str, Any]]:
        """The tags of the user's chats in Open WebUI's TagModel shape."""
        return [_tag(name, user.id) for name in await self.repo.tags_of_user(user.id)]

    async def chat_tags(self, chat_id: str, user: User) -> list[dict[str, Any]]:
        """One chat's tags (kept in `meta.tags`), in the same shape as `tags`; owner or admin."""
        chat = await self.own_chat(chat_id, user)
        names = (chat.meta or {}).get("tags") or []
        return [_tag(name, chat.user_id) for name in names if isinstance(name, str) and name]

    async def _owned(self, chat_id: str, user: User) -> Chat:
        chat = await self.repo.get(chat_id)
        if chat is None or chat.user_id != user.id:
            raise not_found("chat")
        return chat

    async def _tell_list(self, user_id: str, chat_id: str, data: dict[str, Any]) -> None:
        await self.broker.emit(
            CHAT_EVENT,
            {"chat_id": chat_id, "data": {"type": "chat:list", "data": {"chat_id": chat_id, **data}}},
            room=user_room(user_id),
        )

    async def mark_read(self, chat_id: str, user: User) -> int:
        """Store the user's read time of their own chat and tell all their tabs."""
        chat = await self.repo.get(chat_id)
        if chat is None or chat.user_id != user.id:
            raise not_found("chat")
        at = now_s()
        await self.repo.set_last_read(chat_id, at)
        await self.broker.emit(
            CHAT_EVENT,
            {
                "chat_id": chat_id,
                "data": {"type": "chat:list", "data": {"chat_id": chat_id, "last_read_at": at}},
            },
            room=user_room(user.id),
        )
        return at

    async def emit_event(
        self, chat_id: str, message_id: str, event: dict[str, Any], user: User, events: ChatEvents
    ) -> None:
        """Emit one event into a message of the user's chat (an admin's goes to the chat owner's tabs).

        Unpersisted chats (`local:`, `temporary:`) reach the caller's own tabs and are not stored.
        """
        owner = user.id
        if is_persisted_chat(chat_id):
            owner = (await self.own_chat(chat_id, user)).user_id
        await events.emit(owner, chat_id, message_id, event)
