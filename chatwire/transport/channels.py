"""`events:channel` from clients: typing indicators and read markers, members only."""

from __future__ import annotations

from typing import Any

from chatwire.errors import invalid
from chatwire.protocol import PAYLOAD_CHECKED, ChannelEvent, TypingData
from chatwire.services.rooms import channel_room
from chatwire.transport.context import Context, Registrar, socket_handler


def register(hub: Registrar, ctx: Context) -> None:
    channels = ctx.services.channels

    @hub.on("events:channel")
    @socket_handler(ctx, "events:channel", ChannelEvent)
    async def channel_event(ctx: Context, sid: str, payload: ChannelEvent) -> dict[str, Any]:
        user = ctx.require_user(sid)
        kind = payload.data.type
        if kind == "typing":
            if payload.data.data is None:
                raise invalid("data.data: typing events carry {typing: bool}")
            typing = TypingData.model_validate(payload.data.data, context=PAYLOAD_CHECKED).typing
            if ctx.in_room(sid, channel_room(payload.channel_id)):
                # Sessions enter and leave a channel's room with membership: being in it is proof enough.
                await channels.relay_typing(payload.channel_id, payload.message_id, user, typing)
            else:
                await channels.typing(payload.channel_id, payload.message_id, user, typing)
            return {"ok": True}
        at = await channels.mark_read(payload.channel_id, user)
        return {"ok": True, "last_read_at": at}
