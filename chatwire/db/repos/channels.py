"""Channels, members, messages (with threads) and reactions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from chatwire.db.engine import Database
from chatwire.db.models import Channel, ChannelMember, ChannelMessage, MessageReaction
from chatwire.util import new_id, now_ns

# Built once with an expanding parameter (one cache entry for any number of ids) instead of per call.
_REACTIONS_FOR = (
    select(MessageReaction)
    .where(MessageReaction.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(MessageReaction.created_at, MessageReaction.id)
)


class ChannelRepo:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called with the ids of the users whose channel memberships a committed write changed (caches of
        # memberships drop them).
        self.changed_hooks: list[Callable[[list[str]], None]] = []

    def _changed(self, user_ids: list[str]) -> None:
        if user_ids:
            for hook in self.changed_hooks:
                hook(user_ids)

    # channels and members

    async def create(
        self,
        *,
        user_id: str,
        name: str,
        description: str | None,
        type: str | None,
        is_private: bool,
        member_ids: list[str],
        data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Channel:
        now = now_ns()
        channel = Channel(
            id=new_id(),
            user_id=user_id,
            name=name,
            description=description,
            type=type,
            is_private=is_private,
            data=data,
            meta=meta,
            created_at=now,
            updated_at=now,
        )
        async with self.db.session() as s:
            s.add(channel)
            await s.flush()
            for uid in dict.fromkeys(member_ids):
                s.add(ChannelMember(channel_id=channel.id, user_id=uid, joined_at=now))
        self._changed(list(dict.fromkeys(member_ids)))
        return channel

    async def get(self, channel_id: str) -> Channel | None:
        async with self.db.read() as s:
            return await s.get(Channel, channel_id)

    async def list_for_user(self, user_id: str) -> list[Channel]:
        async with self.db.read() as s:
            q = (
                select(Channel)
                .join(ChannelMember, ChannelMember.channel_id == Channel.id)
                .where(ChannelMember.user_id == user_id)
                .order_by(Channel.created_at, Channel.id)
            )
            return list((await s.execute(q)).scalars())

    async def list_public(self) -> list[Channel]:
        """Standard channels that are not private: every user belongs to them."""
        async with self.db.read() as s:
            q = select(Channel).where(Channel.type.is_(None), Channel.is_private.is_(False))
            return list((await s.execute(q)).scalars())

    async def channel_ids_for_user(self, user_id: str) -> list[str]:
        async with self.db.read() as s:
            q = select(ChannelMember.channel_id).where(ChannelMember.user_id == user_id)
            return list((await s.execute(q)).scalars())

    async def channel_ids_for_users(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Each user's channel ids in one query (users in no channel are left out)."""
        out: dict[str, list[str]] = {}
        async with self.db.read() as s:
            q = select(ChannelMember.user_id, ChannelMember.channel_id).where(
                ChannelMember.user_id.in_(user_ids)
            )
            for user_id, channel_id in await s.execute(q):
                out.setdefault(user_id, []).append(channel_id)
        return out

    async def member_ids(self, channel_id: str) -> list[str]:
        async with self.db.read() as s:
            q = select(ChannelMember.user_id).where(ChannelMember.channel_id == channel_id)
            return list((await s.execute(q)).scalars())

    async def membership(self, channel_id: str, user_id: str) -> ChannelMember | None:
        async with self.db.read() as s:
            return await s.get(ChannelMember, (channel_id, user_id))

    async def add_members(self, channel_id: str, user_ids: list[str]) -> list[str]:
        """Add members; returns the ids that were not members before."""
        now = now_ns()
        async with self.db.session() as s:
            q = select(ChannelMember.user_id).where(ChannelMember.channel_id == channel_id)
            existing = set((await s.execute(q)).scalars())
            added = [uid for uid in dict.fromkeys(user_ids) if uid not in existing]
            for uid in added:
                s.add(ChannelMember(channel_id=channel_id, user_id=uid, joined_at=now))
            await s.execute(update(Channel).where(Channel.id == channel_id).values(updated_at=now))
        self._changed(added)
        return added

    async def remove_members(self, channel_id: str, user_ids: list[str]) -> list[str]:
        """Remove members; returns the ids that were members."""
        async with self.db.session() as s:
            q = select(ChannelMember.user_id).where(
                ChannelMember.channel_id == channel_id, ChannelMember.user_id.in_(user_ids)
            )
            removed = list((await s.execute(q)).scalars())
            if removed:
                await s.execute(
                    delete(ChannelMember).where(
                        ChannelMember.channel_id == channel_id, ChannelMember.user_id.in_(removed)
                    )
                )
        self._changed(removed)
        return removed

    async def delete(self, channel_id: str) -> None:
        async with self.db.session() as s:
            members = list(
                (
                    await s.execute(
                        select(ChannelMember.user_id).where(ChannelMember.channel_id == channel_id)
                    )
                ).scalars()
            )
            msg_ids = select(ChannelMessage.id).where(ChannelMessage.channel_id == channel_id)
            await s.execute(delete(MessageReaction).where(MessageReaction.message_id.in_(msg_ids)))
            await s.execute(delete(ChannelMessage).where(ChannelMessage.channel_id == channel_id))
            await s.execute(delete(ChannelMember).where(ChannelMember.channel_id == channel_id))
            await s.execute(delete(Channel).where(Channel.id == channel_id))
        self._changed(members)

    async def set_last_read(self, channel_id: str, user_id: str, at: int) -> bool:
        async with self.db.session() as s:
            result = await s.execute(
                update(ChannelMember)
                .where(ChannelMember.channel_id == channel_id, ChannelMember.user_id == user_id)
                .values(last_read_at=at)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def unread_counts(self, user_id: str) -> dict[str, int]:
        """Top-level messages by others after the member's last read marker, per channel."""
        async with self.db.read() as s:
            q = (
                select(ChannelMessage.channel_id, func.count())
                .join(
                    ChannelMember,
                    (ChannelMember.channel_id == ChannelMessage.channel_id)
                    & (ChannelMember.user_id == user_id),
                )
                .where(
                    ChannelMessage.user_id != user_id,
                    ChannelMessage.parent_id.is_(None),
                    ChannelMessage.created_at > func.coalesce(ChannelMember.last_read_at, 0),
                )
                .group_by(ChannelMessage.channel_id)
            )
            return {cid: int(n) for cid, n in (await s.execute(q)).all()}

    # messages

    async def post_message(
        self,
        *,
        channel_id: str,
        user_id: str,
        content: str,
        parent_id: str | None,
        data: dict[str, Any] | None,
        meta: dict[str, Any] | None,
    ) -> ChannelMessage:
        now = now_ns()
        message = ChannelMessage(
            id=new_id(),
            channel_id=channel_id,
            user_id=user_id,
            parent_id=parent_id,
            content=content,
            data=data,
            meta=meta,
            reply_count=0,
            created_at=now,
            updated_at=now,
        )
        async with self.db.session() as s:
            s.add(message)
            if parent_id is not None:
                await s.execute(
                    update(ChannelMessage)
                    .where(ChannelMessage.id == parent_id)
                    .values(reply_count=ChannelMessage.reply_count + 1)
                )
        return message

    async def get_message(self, message_id: str) -> ChannelMessage | None:
        async with self.db.read() as s:
            return await s.get(ChannelMessage, message_id)

    async def list_messages(self, channel_id: str, skip: int, limit: int) -> list[ChannelMessage]:
        async with self.db.read() as s:
            q = (
                select(ChannelMessage)
                .where(ChannelMessage.channel_id == channel_id, ChannelMessage.parent_id.is_(None))
                .order_by(ChannelMessage.created_at.desc(), ChannelMessage.id.desc())
                .offset(skip)
                .limit(limit)
            )
            return list((await s.execute(q)).scalars())

    async def list_thread(self, parent_id: str, skip: int, limit: int) -> list[ChannelMessage]:
        async with self.db.read() as s:
            q = (
                select(ChannelMessage)
                .where(ChannelMessage.parent_id == parent_id)
                .order_by(ChannelMessage.created_at.desc(), ChannelMessage.id.desc())
                .offset(skip)
                .limit(limit)
            )
            return list((await s.execute(q)).scalars())

    async def set_pinned(self, message_id: str, pinned: bool, user_id: str) -> None:
        values: dict[str, Any] = (
            {"is_pinned": True, "pinned_by": user_id, "pinned_at": now_ns()}
            if pinned
            else {"is_pinned": False, "pinned_by": None, "pinned_at": None}
        )
        async with self.db.session() as s:
            await s.execute(update(ChannelMessage).where(ChannelMessage.id == message_id).values(**values))

    async def list_pinned(self, channel_id: str, skip: int, limit: int) -> list[ChannelMessage]:
        """The channel's pinned messages, most recently pinned first."""
        async with self.db.read() as s:
            q = (
                select(ChannelMessage)
                .where(ChannelMessage.channel_id == channel_id, ChannelMessage.is_pinned.is_(True))
                .order_by(ChannelMessage.pinned_at.desc(), ChannelMessage.id.desc())
                .offset(skip)
                .limit(limit)
            )
            return list((await s.execute(q)).scalars())

    async def latest_replies(self, parent_ids: list[str]) -> dict[str, int]:
        """When each of these messages last got a reply (ns), for those with replies."""
        if not parent_ids:
            return {}
        async with self.db.read() as s:
            q = (
                select(ChannelMessage.parent_id, func.max(ChannelMessage.created_at))
                .where(ChannelMessage.parent_id.in_(parent_ids))
                .group_by(ChannelMessage.parent_id)
            )
            return {pid: int(at) for pid, at in (await s.execute(q)).all() if pid is not None}

    async def update_message(self, message_id: str, content: str, data: dict[str, Any] | None) -> None:
        values: dict[str, Any] = {"content": content, "updated_at": now_ns()}
        if data is not None:
            values["data"] = data
        async with self.db.session() as s:
            await s.execute(update(ChannelMessage).where(ChannelMessage.id == message_id).values(**values))

    async def delete_message(self, message: ChannelMessage) -> None:
        """Delete a message with its replies and reactions; a reply decrements its parent's count."""
        async with self.db.session() as s:
            ids = select(ChannelMessage.id).where(
                (ChannelMessage.id == message.id) | (ChannelMessage.parent_id == message.id)
            )
            await s.execute(delete(MessageReaction).where(MessageReaction.message_id.in_(ids)))
            await s.execute(delete(ChannelMessage).where(ChannelMessage.parent_id == message.id))
            await s.execute(delete(ChannelMessage).where(ChannelMessage.id == message.id))
            if message.parent_id is not None:
                await s.execute(
                    update(ChannelMessage)
                    .where(ChannelMessage.id == message.parent_id, ChannelMessage.reply_count > 0)
                    .values(reply_count=ChannelMessage.reply_count - 1)
                )

    # reactions

    async def add_reaction(self, message_id: str, user_id: str, name: str) -> bool:
        """Add a reaction; False when this user already reacted with this name."""
        try:
            async with self.db.session() as s:
                q = select(MessageReaction.id).where(
                    MessageReaction.message_id == message_id,
                    MessageReaction.user_id == user_id,
                    MessageReaction.name == name,
                )
                if (await s.execute(q)).first() is not None:
                    return False
                s.add(MessageReaction(message_id=message_id, user_id=user_id, name=name, created_at=now_ns()))
        except IntegrityError:
            return False
        return True

    async def remove_reaction(self, message_id: str, user_id: str, name: str) -> bool:
        async with self.db.session() as s:
            result = await s.execute(
                delete(MessageReaction).where(
                    MessageReaction.message_id == message_id,
                    MessageReaction.user_id == user_id,
                    MessageReaction.name == name,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def reactions_for(self, message_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Reactions grouped per message as `[{name, user_ids, count}]`, in order of first use."""
        if not message_ids:
            return {}
        async with self.db.read() as s:
            rows = list((await s.execute(_REACTIONS_FOR, {"ids": message_ids})).scalars())
        grouped: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for r in rows:
            grouped[r.message_id].setdefault(r.name, []).append(r.user_id)
        return {
            mid: [{"name": n, "user_ids": uids, "count": len(uids)} for n, uids in by_name.items()]
            for mid, by_name in grouped.items()
        }
