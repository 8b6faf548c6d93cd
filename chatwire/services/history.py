"""A recoverable room's recent events by offset, for any client or app (the recovery history, paged).

The rule is recovery's: offsets are `"<epoch>-<seq>"`; a read from an offset of another epoch, or from before
what the history still holds whole (trimmed by size or age), answers `gone: true` with the current `head`,
never a history with a hole. Page on with `next` until `more` is false.
"""

from __future__ import annotations

from typing import Any

from chatwire.backends.eventlog import EventLog, is_recoverable, parse_offset
from chatwire.db.models import User
from chatwire.errors import invalid
from chatwire.services.channels import ChannelService

MAX_PAGE = 1000


class RoomHistory:
    def __init__(self, eventlog: EventLog, channels: ChannelService) -> None:
        self.eventlog = eventlog
        self.channels = channels

    async def channel(self, channel_id: str, user: User, since: str | None, limit: int) -> dict[str, Any]:
        """A member's read of `channel:{id}`."""
        await self.channels.require_member(channel_id, user)
        return await self.read(f"channel:{channel_id}", since, limit)

    async def read(self, room: str, since: str | None, limit: int) -> dict[str, Any]:
        """Up to `limit` events of `room` after `since` (none given: just the `head` to start from)."""
        if not is_recoverable(room):
            raise invalid("room must be a recoverable room: user:{id} or channel:{id}")
        limit = max(1, min(limit, MAX_PAGE))
        head = await self.eventlog.head()
        if since is None:
            return {"room": room, "events": [], "next": head, "more": False, "head": head, "gone": False}
        if parse_offset(since) is None:
            raise invalid("since must be an offset '<epoch>-<seq>'")
        entries = await self.eventlog.read(since, [room])
        if entries is None:
            return {"room": room, "events": [], "next": head, "more": False, "head": head, "gone": True}
        page = entries[:limit]
        return {
            "room": room,
            "events": [{"offset": e.offset, "event": e.event, "data": e.data} for e in page],
            "next": page[-1].offset if page else since,
            "more": len(entries) > limit,
            "head": head,
            "gone": False,
        }
