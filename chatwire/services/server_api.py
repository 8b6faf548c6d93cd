"""The server API's domain logic: what a trusted backend may do with an API key.

Publish an event to a user, channel, note or document room; manage channels and members as the system; ask
who is online and in which rooms; disconnect a user's sessions. Publishing goes through the Broker, so fleet
routing (and, later, recovery offsets) apply to it like to every other event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chatwire.backends.broker import Broker, EmitsNow
from chatwire.backends.sessions import SessionStore
from chatwire.db.models import User
from chatwire.db.repos.chats import ChatRepo
from chatwire.db.repos.users import UserRepo
from chatwire.errors import invalid, not_found
from chatwire.services.channels import ChannelService, channel_json
from chatwire.services.chats import CHAT_EVENT
from chatwire.services.events import ChatEvents
from chatwire.services.reducer import is_persisted_chat

# The acting identity of server API calls that change channels: an admin that is nobody's account.
SYSTEM_USER = User(
    id="system", name="chatwire", email="system@chatwire.invalid", role="admin", profile_image_url=""
)

ROOM_PATTERN = re.compile(r"^(user:|channel:|note:|doc_)[^\s]{1,200}$")
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting", "message"})
MAX_BATCH = 1000  # events per publish/batch call


def _check_publication(room: str, event: str) -> None:
    if not ROOM_PATTERN.match(room):
        raise invalid("room must be user:{id}, channel:{id}, note:{id} or doc_{id}")
    if event in RESERVED_EVENTS or not event or len(event) > 128:
        raise invalid(f"event name {event[:128]!r} is reserved or invalid")


def is_chat_event(event: str, room: str, data: Any) -> bool:
    """A chat generation event: `events` to a user room with a chat id and a message id."""
    return (
        event == CHAT_EVENT
        and room.startswith("user:")
        and isinstance(data, dict)
        and isinstance(data.get("chat_id"), str)
        and isinstance(data.get("message_id"), str)
    )


class ServerApiService:
    def __init__(
        self,
        broker: Broker,
        sessions: SessionStore,
        users: UserRepo,
        channels: ChannelService,
        chats: ChatRepo,
        events: ChatEvents,
    ) -> None:
        self.broker = broker
        self.sessions = sessions
        self.users = users
        self.channels = channels
        self.chats = chats
        self.events = events
        # A plain call per event where the broker can deliver without awaiting (a batch is many events).
        self._emit_now: Callable[..., bool] | None = broker.emit_now if isinstance(broker, EmitsNow) else None

    # publish

    async def publish(self, room: str, event: str, data: Any) -> dict[str, Any]:
        """Send `event` to `room`; a chat event is also persisted like any other chat event."""
        _check_publication(room, event)
        if is_chat_event(event, room, data):
            user_id = room.removeprefix("user:")
            persisted = await self.publish_chat_event(user_id, data["chat_id"], data["message_id"], data)
            return {"status": True, "persisted": persisted}
        await self.broker.emit(event, data, room=room)
        return {"status": True, "persisted": False}

    async def publish_many(self, items: list[tuple[str, str, Any]]) -> dict[str, Any]:
        """Send each `(room, event, data)` in order (a notice to many users' rooms in one call). Every item is
        checked first, chat events' chats included: a bad item refuses the whole batch and nothing is sent."""
        if len(items) > MAX_BATCH:
            raise invalid(f"at most {MAX_BATCH} events per batch")
        chat_items: set[int] = set()
        for n, (room, event, data) in enumerate(items):
            _check_publication(room, event)
            if is_chat_event(event, room, data):
                chat_items.add(n)
                if is_persisted_chat(data["chat_id"]):
                    chat = await self.chats.get(data["chat_id"])
                    if chat is None or chat.user_id != room.removeprefix("user:"):
                        raise not_found(f"chat {data['chat_id']}")
        persisted = 0
        emit_now = self._emit_now
        for n, (room, event, data) in enumerate(items):
            if n in chat_items:
                user_id = room.removeprefix("user:")
                await self.events.emit(user_id, data["chat_id"], data["message_id"], data.get("data"))
                persisted += is_persisted_chat(data["chat_id"])
            elif emit_now is None or not emit_now(event, data, room=room):
                await self.broker.emit(event, data, room=room)
        return {"status": True, "published": len(items), "persisted": persisted}

    async def publish_chat_event(
        self, user_id: str, chat_id: str, message_id: str, data: dict[str, Any]
    ) -> bool:
        """Emit a chat event through the chat event pipeline: the same ordering, coalescing and persistence as
        every other emitter of that message. Returns whether the chat is persisted."""
        persist = is_persisted_chat(chat_id)
        if persist:
            chat = await self.chats.get(chat_id)
            if chat is None or chat.user_id != user_id:
                raise not_found("chat")
        await self.events.emit(user_id, chat_id, message_id, data.get("data"))
        return persist

    # channels

    async def create_channel(
        self, *, name: str, description: str | None, type: str | None, is_private: bool, user_ids: list[str]
    ) -> dict[str, Any]:
        if type == "dm":
            raise invalid("the server API creates standard or group channels, not dm channels")
        return await self.channels.create(
            SYSTEM_USER,
            name=name,
            description=description,
            type=type,
            is_private=is_private,
            user_ids=user_ids,
            include_creator=False,
        )

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        channel = await self.channels.get_channel(channel_id)
        return channel_json(channel, user_ids=await self.channels.repo.member_ids(channel_id))

    async def add_members(self, channel_id: str, user_ids: list[str]) -> dict[str, Any]:
        return await self.channels.add_members(channel_id, SYSTEM_USER, user_ids)

    async def remove_members(self, channel_id: str, user_ids: list[str]) -> dict[str, Any]:
        return await self.channels.remove_members(channel_id, SYSTEM_USER, user_ids)

    async def delete_channel(self, channel_id: str) -> None:
        await self.channels.delete(channel_id, SYSTEM_USER)

    # presence

    async def user_sessions(self, user_id: str) -> list[dict[str, Any]]:
        out = []
        for sid in await self.sessions.sids_of(user_id):
            out.append({"sid": sid, "rooms": sorted(await self.broker.rooms_of(sid))})
        return out

    async def presence(self, user_id: str | None = None) -> dict[str, Any]:
        """Online users (all, or one) with their sessions and the rooms each session is in."""
        ids = [user_id] if user_id is not None else sorted(await self.sessions.online_user_ids())
        users = {u.id: u for u in await self.users.get_many(ids)}
        online = []
        for uid in ids:
            sessions = await self.user_sessions(uid)
            if sessions:
                user = users.get(uid)
                online.append({"id": uid, "name": user.name if user else None, "sessions": sessions})
        return {"users": online, "user_count": len(online)}

    async def disconnect_user(self, user_id: str) -> int:
        """End every live session of a user (they may reconnect if their token is still valid)."""
        sids = await self.sessions.sids_of(user_id)
        for sid in sids:
            await self.broker.disconnect(sid)
        return len(sids)
