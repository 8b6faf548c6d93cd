"""`events:chat` from clients: read markers of the user's own chats."""

from __future__ import annotations

from typing import Any

import socketio

from chatwire.protocol import ChatEvent
from chatwire.transport.context import Context, SessionState, socket_handler


def register(sio: socketio.AsyncServer, ctx: Context) -> None:
    chats = ctx.services.chats
    events = ctx.services.events

    async def fail_pending_calls(sid: str, _state: SessionState | None) -> None:
        events.session_gone(sid)

    ctx.disconnect_hooks.append(fail_pending_calls)

    @sio.on("events:chat")
    @socket_handler(ctx, "events:chat", ChatEvent)
    async def chat_event(ctx: Context, sid: str, payload: ChatEvent) -> dict[str, Any]:
        user = ctx.require_user(sid)
        at = await chats.mark_read(payload.chat_id, user)
        return {"ok": True, "last_read_at": at}
