"""Who is present in a room, for any client or app: the online members of a channel, the editors of a note.

Everything is read from the SessionStore and the document roster, which are fleet-wide in Redis mode and expire
by TTL, so a process killed with SIGKILL leaves no ghost behind once the presence TTL has passed.

Live changes: when a user's first session comes (`join`) or last session goes (`leave`, also when the upkeep
drops an expired session of a dead process), `events:presence` `{room, type, user}` goes to each of the user's
channel rooms, and the outgoing webhooks get `user.online` / `user.offline`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.backends.broker import Broker
from chatwire.backends.sessions import SessionStore
from chatwire.db.models import User
from chatwire.db.repos.users import UserRepo
from chatwire.errors import invalid, not_found
from chatwire.services.channels import ChannelService
from chatwire.services.notes import NoteService
from chatwire.services.rooms import channel_room, doc_room

log = logging.getLogger("chatwire.presence")

PRESENCE_EVENT = "events:presence"

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


class RoomPresence:
    def __init__(
        self,
        sessions: SessionStore,
        users: UserRepo,
        broker: Broker,
        channels: ChannelService,
        notes: NoteService,
        notify: Notify | None = None,
    ) -> None:
        self.sessions = sessions
        self.users = users
        self.broker = broker
        self.channels = channels
        self.notes = notes
        self.notify = notify

    # reads

    async def channel(self, channel_id: str, user: User | None) -> dict[str, Any]:
        """Members of the channel with at least one live session (members only; `None` is the server API)."""
        if user is None:
            await self.channels.get_channel(channel_id)
        else:
            await self.channels.require_member(channel_id, user)
        members = set(await self.channels.repo.member_ids(channel_id))
        online = [uid for uid in await self.sessions.online_user_ids() if uid in members]
        return await self._users_json(f"channel:{channel_id}", online)

    async def note(self, note_id: str, user: User | None) -> dict[str, Any]:
        """Users with a session in the note's collaborative document (read access; `None`: the server API)."""
        if user is None:
            if await self.notes.repo.get(note_id) is None:
                raise not_found("note")
        else:
            await self.notes.require(note_id, user, "read")
        sids = await self.broker.room_sids(doc_room(f"note:{note_id}"))
        users: dict[str, int] = {}
        for sid in sids:
            info = await self.sessions.get(sid)
            if info is not None:
                users[info.user_id] = users.get(info.user_id, 0) + 1
        return await self._users_json(f"note:{note_id}", list(users), users)

    async def _users_json(
        self, room: str, user_ids: list[str], sessions: dict[str, int] | None = None
    ) -> dict[str, Any]:
        found = {u.id: u for u in await self.users.get_many(user_ids)}
        out = []
        for uid in sorted(user_ids):
            count = sessions[uid] if sessions is not None else len(await self.sessions.sids_of(uid))
            if count == 0:
                continue
            u = found.get(uid)
            out.append({"id": uid, "name": u.name if u else uid, "sessions": count})
        return {"room": room, "users": out, "count": len(out)}

    async def room(self, room: str) -> dict[str, Any]:
        """The server API's view: `channel:{id}` or `note:{id}`, without a user's access check."""
        kind, _, ident = room.partition(":")
        if kind == "channel" and ident:
            return await self.channel(ident, None)
        if kind == "note" and ident:
            return await self.note(ident, None)
        raise invalid("room must be channel:{id} or note:{id}")

    # changes

    async def changed(self, user_id: str, name: str, *, online: bool) -> None:
        """The session store said the user's first session came (`join`) or last one went (`leave`)."""
        await self._changed(user_id, name, "join" if online else "leave")

    async def _changed(self, user_id: str, name: str, kind: str) -> None:
        person = {"id": user_id, "name": name}
        # The webhook's outbox row first: once anyone has seen the change live, it is also queued durably.
        if self.notify is not None:
            await self.notify("user.online" if kind == "join" else "user.offline", {"user": person})
        for channel_id in await self.channels.channel_ids(user_id):
            room = channel_room(channel_id)
            try:
                await self.broker.emit(
                    PRESENCE_EVENT, {"room": room, "type": kind, "user": person}, room=room
                )
            except Exception:
                log.exception("presence event not sent", extra={"room": room})
