"""Channels: membership, messages, threads, reactions, typing and read markers, with their live events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.backends.broker import Broker
from chatwire.db.models import Channel, ChannelMessage, User
from chatwire.db.repos.channels import ChannelRepo
from chatwire.db.repos.users import UserRepo
from chatwire.errors import ChatwireError, ErrorCode, forbidden, not_found
from chatwire.services.auth import ACCESS_ROLES
from chatwire.services.auth_cache import MembershipCache
from chatwire.services.rooms import Rooms, channel_room, user_room
from chatwire.services.singleflight import BatchLoader
from chatwire.util import now_ns

CHANNEL_EVENT = "events:channel"
CHANNEL_TYPES = (None, "group", "dm")


def public_grants(channel: Channel) -> list[dict[str, Any]]:
    """Open WebUI's `access_grants` of a channel: a standard, non-private channel is open to everyone (`*`);
    other channels are reached through membership and list none."""
    if channel.type is not None or channel.is_private:
        return []
    return [{"principal_type": "user", "principal_id": "*", "permission": perm} for perm in ("read", "write")]


def channel_json(channel: Channel, **extra: Any) -> dict[str, Any]:
    return {
        "id": channel.id,
        "user_id": channel.user_id,
        "type": channel.type,
        "name": channel.name,
        "description": channel.description,
        "is_private": channel.is_private,
        "data": channel.data,
        "meta": channel.meta,
        "access_grants": public_grants(channel),
        "created_at": channel.created_at,
        "updated_at": channel.updated_at,
        **extra,
    }


def user_brief(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role}


def member_brief(user: User) -> dict[str, Any]:
    """A member as Open WebUI lists them in a channel (presence is not tracked here: `is_active` is false)."""
    return {**user_brief(user), "profile_image_url": user.profile_image_url, "is_active": False}


class ChannelService:
    def __init__(self, repo: ChannelRepo, users: UserRepo, broker: Broker, rooms: Rooms) -> None:
        self.repo = repo
        self.users = users
        self.broker = broker
        self.rooms = rooms
        # Outgoing webhooks (services/webhooks.py): told about each stored change, after its live event.
        self.notify: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        # Each user's channel ids, read on every user-join; the repo's membership writes (and, in a fleet, the
        # other processes' notices) drop entries. The container shares the auth service's cache.
        self.memberships = MembershipCache()
        # Misses of one loop turn are read in one query: a cold connect storm does not take a pool connection
        # per user-join (5,000 joins once exhausted the pool: internal_error acks).
        self.membership_loader: BatchLoader[tuple[str, ...]] = BatchLoader(self._read_memberships)
        repo.changed_hooks.append(self._memberships_changed)

    def _memberships_changed(self, user_ids: list[str]) -> None:
        for user_id in user_ids:
            self.memberships.forget(user_id)
            self.membership_loader.forget(user_id)

    async def channel_ids(self, user_id: str) -> tuple[str, ...]:
        """The ids of the channels `user_id` belongs to: from the cache, else read with the other misses of the
        same loop turn (then cached)."""
        hit = self.memberships.get(user_id)
        if hit is not None:
            return hit
        return await self.membership_loader.load(user_id) or ()

    async def _read_memberships(self, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """One query for a batch of misses; each answer is cached unless the user's memberships changed meanwhile."""
        generations = {uid: self.memberships.generation(uid) for uid in user_ids}
        rows = await self.repo.channel_ids_for_users(user_ids)
        found = {uid: tuple(rows.get(uid, ())) for uid in user_ids}
        for uid, ids in found.items():
            self.memberships.put(uid, ids, generations[uid])
        return found

    # access

    async def get_channel(self, channel_id: str) -> Channel:
        channel = await self.repo.get(channel_id)
        if channel is None:
            raise not_found("channel")
        return channel

    async def require_member(self, channel_id: str, user: User) -> Channel:
        """The channel, if `user` is a member; `not_found` / `not_member` otherwise."""
        channel = await self.get_channel(channel_id)
        if await self.repo.membership(channel_id, user.id) is None:
            raise ChatwireError(ErrorCode.NOT_MEMBER, "not a member of this channel")
        return channel

    async def _require_manager(self, channel_id: str, user: User) -> Channel:
        channel = await self.get_channel(channel_id)
        if user.role != "admin" and channel.user_id != user.id:
            raise forbidden("only the channel's creator or an admin may do this")
        return channel

    # channels

    async def create(
        self,
        creator: User,
        *,
        name: str,
        description: str | None,
        type: str | None,
        is_private: bool,
        user_ids: list[str],
        data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        include_creator: bool = True,
    ) -> dict[str, Any]:
        if type not in CHANNEL_TYPES:
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "type must be null, 'group' or 'dm'")
        if type is None and creator.role != "admin":
            raise forbidden("only an admin may create a standard channel")
        known = {u.id for u in await self.users.get_many(list(dict.fromkeys(user_ids)))}
        unknown = [uid for uid in user_ids if uid not in known]
        if unknown:
            raise ChatwireError(ErrorCode.NOT_FOUND, f"unknown user ids: {', '.join(unknown[:5])}")
        if type is None and not is_private:
            members = await self.users.list_ids()
        else:
            members = [creator.id, *user_ids] if include_creator else list(user_ids)
        if type == "dm":
            others = [uid for uid in dict.fromkeys(user_ids) if uid != creator.id]
            if len(others) != 1:
                raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "a dm channel has exactly one other user")
            existing = await self._find_dm(creator.id, others[0])
            if existing is not None:
                return channel_json(existing)
        channel = await self.repo.create(
            user_id=creator.id,
            name=name,
            description=description,
            type=type,
            is_private=is_private if type is None else True,
            member_ids=members,
            data=data,
            meta=meta,
        )
        await self._announce(channel, list(dict.fromkeys(members)), creator)
        return channel_json(channel)

    async def _find_dm(self, a: str, b: str) -> Channel | None:
        for channel in await self.repo.list_for_user(a):
            if channel.type == "dm" and set(await self.repo.member_ids(channel.id)) == {a, b}:
                return channel
        return None

    async def _announce(self, channel: Channel, user_ids: list[str], actor: User) -> None:
        """Put the users' sessions in the channel room and tell each user the channel exists."""
        room = channel_room(channel.id)
        for uid in user_ids:
            member = await self.users.get(uid)
            if member is not None and member.role in ACCESS_ROLES:  # a pending account's sessions stay out
                await self.rooms.add_user(uid, room)
            await self.broker.emit(
                CHANNEL_EVENT,
                {
                    "channel_id": channel.id,
                    "message_id": None,
                    "data": {"type": "channel:created", "data": {}},
                    "user": user_brief(actor),
                },
                room=user_room(uid),
            )

    async def list_for(self, user: User) -> list[dict[str, Any]]:
        channels = await self.repo.list_for_user(user.id)
        unread = await self.repo.unread_counts(user.id)
        out = []
        for c in channels:
            extra: dict[str, Any] = {}
            if c.type == "dm":  # Open WebUI names a dm after its other member: it needs the members here
                member_ids = await self.repo.member_ids(c.id)
                extra = {
                    "user_ids": member_ids,
                    "users": [member_brief(m) for m in await self.users.get_many(member_ids)],
                }
            out.append(channel_json(c, unread_count=unread.get(c.id, 0), **extra))
        return out

    async def get_for(self, channel_id: str, user: User) -> dict[str, Any]:
        """The channel for a member, with what Open WebUI's channel page reads: the members (`user_ids`, `users`,
        `user_count`), whether this user may post (`write_access`: every member) and manage it (`is_manager`)."""
        channel = await self.require_member(channel_id, user)
        member = await self.repo.membership(channel_id, user.id)
        member_ids = await self.repo.member_ids(channel_id)
        members = await self.users.get_many(member_ids)
        return channel_json(
            channel,
            user_ids=member_ids,
            users=[member_brief(m) for m in members],
            user_count=len(member_ids),
            is_manager=user.role == "admin" or channel.user_id == user.id,
            write_access=True,
            last_read_at=member.last_read_at if member else None,
        )

    async def add_members(self, channel_id: str, actor: User, user_ids: list[str]) -> dict[str, Any]:
        channel = await self._require_manager(channel_id, actor)
        if channel.type == "dm":
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "the members of a dm channel cannot change")
        known = {u.id for u in await self.users.get_many(user_ids)}
        missing = [uid for uid in user_ids if uid not in known]
        if missing:
            raise ChatwireError(ErrorCode.NOT_FOUND, f"unknown user ids: {', '.join(missing[:5])}")
        added = await self.repo.add_members(channel_id, user_ids)
        await self._announce(channel, added, actor)
        return channel_json(channel, user_ids=await self.repo.member_ids(channel_id))

    async def remove_members(self, channel_id: str, actor: User, user_ids: list[str]) -> dict[str, Any]:
        channel = await self._require_manager(channel_id, actor)
        if channel.type == "dm":
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "the members of a dm channel cannot change")
        removed = await self.repo.remove_members(channel_id, user_ids)
        room = channel_room(channel_id)
        for uid in removed:
            await self.rooms.remove_user(uid, room)
        return channel_json(channel, user_ids=await self.repo.member_ids(channel_id))

    async def delete(self, channel_id: str, actor: User) -> None:
        await self._require_manager(channel_id, actor)
        await self.repo.delete(channel_id)
        await self.broker.close_room(channel_room(channel_id))

    async def join_public_channels(self, users: list[User]) -> None:
        """New accounts join every standard, non-private channel: those are open to all users."""
        if not users:
            return
        for channel in await self.repo.list_public():
            await self.repo.add_members(channel.id, [user.id for user in users])

    async def members(
        self, channel_id: str, user: User, online: Callable[[list[str]], Awaitable[set[str]]]
    ) -> dict[str, Any]:
        """The members of a channel the caller belongs to, by name, each with `is_active` (`online` says which
        ids have a live session now); no emails (members need not know each other's)."""
        await self.require_member(channel_id, user)
        ids = await self.repo.member_ids(channel_id)
        members = await self.users.get_many(ids)
        online_ids = await online(ids)
        members.sort(key=lambda u: (u.name.lower(), u.id))
        return {
            "users": [{**user_brief(u), "is_active": u.id in online_ids} for u in members],
            "total": len(members),
        }

    async def announce_presence(self, user_id: str, name: str, role: str, *, online: bool) -> None:
        """Tell each channel of the user that the user came online or went offline."""
        actor = {"id": user_id, "name": name, "role": role}
        for channel_id in await self.channel_ids(user_id):
            await self.broker.emit(
                CHANNEL_EVENT,
                {
                    "channel_id": channel_id,
                    "message_id": None,
                    "data": {"type": "presence", "data": {"user_id": user_id, "online": online}},
                    "user": actor,
                },
                room=channel_room(channel_id),
            )

    async def room_names_for(self, user_id: str) -> list[str]:
        return [channel_room(cid) for cid in await self.channel_ids(user_id)]

    # messages

    async def _message_json(self, message: ChannelMessage, **extra: Any) -> dict[str, Any]:
        return {**(await self._messages_json([message]))[0], **extra}

    async def _messages_json(self, messages: list[ChannelMessage]) -> list[dict[str, Any]]:
        reactions = await self.repo.reactions_for([m.id for m in messages])
        latest = await self.repo.latest_replies([m.id for m in messages if m.reply_count > 0])
        reactors = {uid for per in reactions.values() for r in per for uid in r["user_ids"]}
        people = {m.user_id for m in messages} | reactors
        authors = {u.id: u for u in await self.users.get_many(list(people))}
        for per in reactions.values():
            for r in per:
                # Open WebUI's shape (`users`) beside chatwire's older `user_ids`.
                r["users"] = [
                    {"id": uid, "name": authors[uid].name if uid in authors else ""} for uid in r["user_ids"]
                ]
        out = []
        for m in messages:
            author = authors.get(m.user_id)
            hook = (m.meta or {}).get("webhook")
            if isinstance(hook, dict) and hook.get("id"):  # posted by an incoming webhook: its own identity
                author = User(id=str(hook["id"]), name=str(hook.get("name") or "Webhook"), role="webhook")
            out.append(
                {
                    "id": m.id,
                    "channel_id": m.channel_id,
                    "user_id": m.user_id,
                    "parent_id": m.parent_id,
                    "content": m.content,
                    "data": m.data,
                    "meta": m.meta,
                    "reply_count": m.reply_count,
                    "latest_reply_at": latest.get(m.id),
                    "is_pinned": bool(m.is_pinned),
                    "pinned_by": m.pinned_by,
                    "pinned_at": m.pinned_at,
                    "reactions": reactions.get(m.id, []),
                    "created_at": m.created_at,
                    "updated_at": m.updated_at,
                    "user": user_brief(author) if author else None,
                }
            )
        return out

    async def _emit(
        self, channel_id: str, message_id: str | None, type_: str, data: Any, actor: User
    ) -> None:
        await self.broker.emit(
            CHANNEL_EVENT,
            {
                "channel_id": channel_id,
                "message_id": message_id,
                "data": {"type": type_, "data": data},
                "user": user_brief(actor),
            },
            room=channel_room(channel_id),
        )

    async def _notify(self, kind: str, channel_id: str, message: dict[str, Any], actor: User) -> None:
        if self.notify is not None:
            await self.notify(kind, {"channel_id": channel_id, "message": message, "user": user_brief(actor)})

    async def post_as_webhook(
        self, channel_id: str, identity: dict[str, Any], content: str, author_id: str
    ) -> dict[str, Any]:
        """Store and emit a message of an incoming webhook: it speaks as `identity` (`{id, name, role}`), kept
        in the message's `meta.webhook` as Open WebUI does; the webhook's creator is the stored author."""
        channel = await self.get_channel(channel_id)
        message = await self.repo.post_message(
            channel_id=channel.id,
            user_id=author_id,
            content=content,
            parent_id=None,
            data=None,
            meta={"webhook": {"id": identity["id"], "name": identity["name"]}},
        )
        body = await self._message_json(message)
        actor = User(id=identity["id"], name=identity["name"], role="webhook")
        await self._emit(channel_id, message.id, "message", body, actor)
        await self._notify("channel.message.posted", channel_id, body, actor)
        return body

    async def _message_in(self, channel_id: str, message_id: str) -> ChannelMessage:
        message = await self.repo.get_message(message_id)
        if message is None or message.channel_id != channel_id:
            raise not_found("message")
        return message

    async def list_messages(self, channel_id: str, user: User, skip: int, limit: int) -> list[dict[str, Any]]:
        await self.require_member(channel_id, user)
        return await self._messages_json(await self.repo.list_messages(channel_id, skip, limit))

    async def thread(
        self, channel_id: str, message_id: str, user: User, skip: int, limit: int
    ) -> list[dict[str, Any]]:
        await self.require_member(channel_id, user)
        await self._message_in(channel_id, message_id)
        return await self._messages_json(await self.repo.list_thread(message_id, skip, limit))

    async def post(
        self,
        channel_id: str,
        user: User,
        *,
        content: str,
        parent_id: str | None,
        temp_id: str | None,
        data: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        await self.require_member(channel_id, user)
        if parent_id is not None:
            parent = await self._message_in(channel_id, parent_id)
            if parent.parent_id is not None:
                parent_id = parent.parent_id  # replies to a reply join the same thread
        message = await self.repo.post_message(
            channel_id=channel_id, user_id=user.id, content=content, parent_id=parent_id, data=data, meta=meta
        )
        extra = {"temp_id": temp_id} if temp_id else {}
        body = await self._message_json(message, **extra)
        await self._emit(channel_id, message.id, "message", body, user)
        await self._notify("channel.message.posted", channel_id, body, user)
        if parent_id is not None:
            parent_now = await self._message_in(channel_id, parent_id)
            await self._emit(
                channel_id, parent_id, "message:reply", await self._message_json(parent_now), user
            )
        return body

    async def update_message(
        self, channel_id: str, message_id: str, user: User, content: str, data: dict[str, Any] | None
    ) -> dict[str, Any]:
        channel = await self.get_channel(channel_id)
        is_member = await self.repo.membership(channel_id, user.id) is not None
        if not is_member and user.role != "admin":
            raise ChatwireError(ErrorCode.NOT_MEMBER, "not a member of this channel")
        message = await self._message_in(channel.id, message_id)
        # Like delete: the author (still a member) or an admin, who moderates without being a member.
        if message.user_id != user.id and user.role != "admin":
            raise forbidden("only the author or an admin may edit this message")
        await self.repo.update_message(message_id, content, data)
        body = await self._message_json(await self._message_in(channel_id, message_id))
        await self._emit(channel_id, message_id, "message:update", body, user)
        await self._notify("channel.message.updated", channel_id, body, user)
        return body

    async def delete_message(self, channel_id: str, message_id: str, user: User) -> None:
        channel = await self.get_channel(channel_id)
        is_member = await self.repo.membership(channel_id, user.id) is not None
        if not is_member and user.role != "admin":
            raise ChatwireError(ErrorCode.NOT_MEMBER, "not a member of this channel")
        message = await self._message_in(channel.id, message_id)
        if message.user_id != user.id and user.role != "admin":
            raise forbidden("only the author or an admin may delete this message")
        body = await self._message_json(message)
        await self.repo.delete_message(message)
        await self._emit(channel_id, message_id, "message:delete", body, user)
        await self._notify("channel.message.deleted", channel_id, body, user)
        if message.parent_id is not None:
            parent = await self.repo.get_message(message.parent_id)
            if parent is not None:
                await self._emit(
                    channel_id, parent.id, "message:reply", await self._message_json(parent), user
                )

    async def react(
        self, channel_id: str, message_id: str, user: User, name: str, add: bool
    ) -> dict[str, Any]:
        await self.require_member(channel_id, user)
        await self._message_in(channel_id, message_id)
        changed = (
            await self.repo.add_reaction(message_id, user.id, name)
            if add
            else await self.repo.remove_reaction(message_id, user.id, name)
        )
        body = await self._message_json(await self._message_in(channel_id, message_id), name=name)
        if changed:
            kind = "message:reaction:add" if add else "message:reaction:remove"
            await self._emit(channel_id, message_id, kind, body, user)
            await self._notify(
                "channel.reaction.added" if add else "channel.reaction.removed", channel_id, body, user
            )
        return body

    async def pin(self, channel_id: str, message_id: str, user: User, pinned: bool) -> dict[str, Any]:
        """Pin or unpin a message (any member, as in Open WebUI); the channel gets `message:update`."""
        await self.require_member(channel_id, user)
        await self._message_in(channel_id, message_id)
        await self.repo.set_pinned(message_id, pinned, user.id)
        body = await self._message_json(await self._message_in(channel_id, message_id))
        await self._emit(channel_id, message_id, "message:update", body, user)
        return body

    async def pinned(self, channel_id: str, user: User, skip: int, limit: int) -> list[dict[str, Any]]:
        await self.require_member(channel_id, user)
        return await self._messages_json(await self.repo.list_pinned(channel_id, skip, limit))

    # live-only events

    async def typing(self, channel_id: str, message_id: str | None, user: User, typing: bool) -> None:
        await self.require_member(channel_id, user)
        await self._emit(channel_id, message_id, "typing", {"typing": typing}, user)

    async def relay_typing(self, channel_id: str, message_id: str | None, user: User, typing: bool) -> None:
        """Typing from a session that is in the channel's room, which proves membership (the room follows every
        membership change on every process), so no database read is needed on this hot path."""
        await self._emit(channel_id, message_id, "typing", {"typing": typing}, user)

    async def mark_read(self, channel_id: str, user: User) -> int:
        await self.require_member(channel_id, user)
        at = now_ns()
        await self.repo.set_last_read(channel_id, user.id, at)
        return at
