"""`events:chat` from clients: read markers, and Open WebUI's chat rooms (`join`, `leave`, `typing`).

A tab that opens a chat joins `chat:{id}` (the user must be able to read the chat); typing in it reaches the
other sessions in that room. Access is checked again on every join and every typing event."""

from __future__ import annotations

from typing import Any

from chatwire.errors import invalid, not_found
from chatwire.protocol import PAYLOAD_CHECKED, ChatEvent, TypingData
from chatwire.services.chats import CHAT_EVENT
from chatwire.transport.context import Context, Registrar, SessionState, socket_handler


def chat_room(chat_id: str) -> str:
    return f"chat:{chat_id}"


def register(hub: Registrar, ctx: Context) -> None:
    chats = ctx.services.chats
    events = ctx.services.events
    broker = ctx.services.broker

    async def fail_pending_calls(sid: str, _state: SessionState | None) -> None:
        events.session_gone(sid)

    ctx.disconnect_hooks.append(fail_pending_calls)

    @hub.on("events:chat")
    @socket_handler(ctx, "events:chat", ChatEvent)
    async def chat_event(ctx: Context, sid: str, payload: ChatEvent) -> dict[str, Any]:
        user = ctx.require_user(sid)
        kind, chat_id = payload.data.type, payload.chat_id
        if kind == "join":
            await chats.own_chat(chat_id, user)
            await broker.enter_room(sid, chat_room(chat_id))
            return {"ok": True}
        if kind == "leave":
            await broker.leave_room(sid, chat_room(chat_id))
            return {"ok": True}
        if kind == "typing":
            if payload.data.data is None:
                raise invalid("data.data: typing events carry {typing: bool}")
            typing = TypingData.model_validate(payload.data.data, context=PAYLOAD_CHECKED).typing
            if not ctx.in_room(sid, chat_room(chat_id)):
                raise not_found("chat")  # join the chat first
            await chats.own_chat(chat_id, user)
            await broker.emit(
                CHAT_EVENT,
                {
                    "chat_id": chat_id,
                    "user_id": user.id,
                    "user": {"id": user.id, "name": user.name},
                    "shared": True,
                    "data": {"type": "typing", "data": {"typing": typing}},
                },
                room=chat_room(chat_id),
                skip_sid=sid,
            )
            return {"ok": True}
        at = await chats.mark_read(chat_id, user)
        return {"ok": True, "last_read_at": at}
