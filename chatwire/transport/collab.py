"""`ydoc:*` events: collaborative editing of notes (validation and the session's user here, logic in
services/collab.py).

Every handler takes the session's ordering lock before its first await, so a client's updates are applied and
stored in the order it sent them."""

from __future__ import annotations

from typing import Any

from chatwire.protocol import YAwarenessUpdate, YDocJoin, YDocRef, YDocUpdate
from chatwire.transport.context import Context, Registrar, SessionState, socket_handler


def register(hub: Registrar, ctx: Context) -> None:
    collab = ctx.services.collab

    @hub.on("ydoc:document:join")
    @socket_handler(ctx, "ydoc:document:join", YDocJoin)
    async def join(ctx: Context, sid: str, payload: YDocJoin) -> dict[str, Any]:
        async with collab.in_order(sid):
            return await collab.join(sid, ctx.require_user(sid), payload.document_id, payload.user_color)

    @hub.on("ydoc:document:state")
    @socket_handler(ctx, "ydoc:document:state", YDocRef)
    async def state(ctx: Context, sid: str, payload: YDocRef) -> dict[str, Any]:
        async with collab.in_order(sid):
            return await collab.resend_state(sid, ctx.require_user(sid), payload.document_id)

    @hub.on("ydoc:document:update")
    @socket_handler(ctx, "ydoc:document:update", YDocUpdate)
    async def update(ctx: Context, sid: str, payload: YDocUpdate) -> dict[str, Any]:
        content = payload.data.content if payload.data is not None else None
        async with collab.in_order(sid):
            return await collab.update(
                sid, ctx.require_user(sid), payload.document_id, payload.update, content
            )

    @hub.on("ydoc:document:leave")
    @socket_handler(ctx, "ydoc:document:leave", YDocRef)
    async def leave(ctx: Context, sid: str, payload: YDocRef) -> dict[str, Any]:
        async with collab.in_order(sid):
            return await collab.leave(sid, ctx.require_user(sid), payload.document_id)

    @hub.on("ydoc:awareness:update")
    @socket_handler(ctx, "ydoc:awareness:update", YAwarenessUpdate)
    async def awareness(ctx: Context, sid: str, payload: YAwarenessUpdate) -> dict[str, Any]:
        async with collab.in_order(sid):
            return await collab.awareness(sid, ctx.require_user(sid), payload.document_id, payload.update)

    async def on_disconnect(sid: str, _state: SessionState | None) -> None:
        await collab.disconnected(sid)

    ctx.disconnect_hooks.append(on_disconnect)
