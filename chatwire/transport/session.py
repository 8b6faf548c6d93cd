"""Connection lifecycle and session events: connect, disconnect, user-join, join-channels, join-note,
heartbeat, usage."""

from __future__ import annotations

import logging
from typing import Any

from chatwire.engine import ConnectionRefused
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.protocol import JoinChannels, JoinNote, Usage, UserJoin
from chatwire.services.auth import Identity, has_access
from chatwire.services.rooms import note_room, user_room
from chatwire.transport.context import Context, Registrar, socket_handler
from chatwire.transport.limits import client_ip

log = logging.getLogger("chatwire.socket")


async def authenticate_session(ctx: Context, hub: Registrar, sid: str, identity: Identity) -> None:
    """Bind `sid` to the identity's user and put it in `user:{id}`; refuses a second, different user."""
    st = ctx.state(sid)
    if st.user is not None and st.user.id != identity.user.id:
        raise ChatwireError(ErrorCode.USER_MISMATCH, "this session belongs to another user")
    limit = ctx.settings.max_connections_per_user
    if st.user is None and limit:
        # Fleet-wide in Redis mode: the store lists the user's sessions on every process.
        if len(await ctx.services.sessions.sids_of(identity.user.id)) >= limit:
            raise ChatwireError(
                ErrorCode.TOO_MANY_CONNECTIONS, f"this user already has {limit} live connections"
            )
    st.user = identity.user
    st.jti = identity.jti
    came_online = await ctx.register_session(sid)
    await ctx.services.broker.enter_room(sid, user_room(identity.user.id))
    if came_online:  # the store's decision: once per user however many tabs connect at once
        user = identity.user
        ctx.presence_changed(user.id, user.name, online=True)
        try:
            await ctx.services.presence.came_online(user)
        except Exception:
            log.exception("presence announcement failed", extra={"sid": sid})


def register(hub: Registrar, ctx: Context) -> None:
    services = ctx.services

    @hub.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        ip = client_ip(environ)
        remote = ip or "?"
        if not ctx.ip_connects.take(ip):
            services.metrics.refused()
            log.info("connect refused", extra={"sid": sid, "remote": remote, "reason": "ip connect rate"})
            raise ConnectionRefused(
                "too many connections from this address", {"code": ErrorCode.RATE_LIMITED.value}
            )
        ctx.state(sid).ip = ip
        transport = _transport_of(environ)
        if token is None:
            services.metrics.connected(transport)
            log.info("connect", extra={"sid": sid, "remote": remote, "authenticated": False})
            await _run_connect_hooks(ctx, sid, environ, auth)
            return
        try:
            identity = await services.auth.authenticate(token, recent_user=True)
            await authenticate_session(ctx, hub, sid, identity)
        except ChatwireError as exc:
            ctx.local.pop(sid, None)
            services.metrics.refused()
            log.info("connect refused", extra={"sid": sid, "remote": remote, "reason": exc.message})
            raise ConnectionRefused(exc.message, {"code": exc.code.value}) from None
        services.metrics.connected(transport)
        log.info(
            "connect",
            extra={"sid": sid, "remote": remote, "user_id": identity.user.id, "authenticated": True},
        )
        await _run_connect_hooks(ctx, sid, environ, auth)

    @hub.event
    async def disconnect(sid: str, *args: Any) -> None:
        st = ctx.local.pop(sid, None)
        services.metrics.disconnected()
        if st is not None:
            st.extra["disconnect_reason"] = str(args[0]) if args else None
        removed = await services.sessions.remove(sid)
        user_id = removed.info.user_id if removed else (st.user.id if st and st.user else None)
        if removed is not None and removed.last:
            ctx.presence_changed(removed.info.user_id, removed.info.name, online=False)
            try:
                await services.presence.sessions_ended([removed])
            except Exception:
                log.exception("presence announcement failed", extra={"sid": sid})
        for hook in ctx.disconnect_hooks:
            try:
                await hook(sid, st)
            except Exception:
                log.exception("disconnect hook failed", extra={"sid": sid})
        log.info(
            "disconnect", extra={"sid": sid, "user_id": user_id, "reason": str(args[0]) if args else None}
        )

    @hub.on("user-join")
    @socket_handler(ctx, "user-join", UserJoin)
    async def user_join(ctx: Context, sid: str, payload: UserJoin) -> dict[str, Any]:
        # The row may come from the user cache (changes drop it fleet-wide): a connect storm reads each user once.
        identity = await services.auth.authenticate(payload.auth.token, recent_user=True)
        await authenticate_session(ctx, hub, sid, identity)
        user = identity.user
        # A pending account hears its own user room only (approval, sign-out), no channel.
        rooms = await services.channels.room_names_for(user.id) if has_access(user) else []
        await services.broker.enter_rooms(sid, rooms)
        ack: dict[str, Any] = {"id": user.id, "name": user.name}
        for hook in ctx.join_hooks:
            extra = await hook(sid, user, payload)
            if isinstance(extra, dict):
                ack.update(extra)
        log.info("join", extra={"sid": sid, "user_id": user.id, "rooms": len(rooms) + 1})
        return ack

    @hub.on("join-channels")
    @socket_handler(ctx, "join-channels", JoinChannels)
    async def join_channels(ctx: Context, sid: str, payload: JoinChannels) -> dict[str, Any]:
        user = await _user_for(ctx, sid, payload.auth.token if payload.auth else None)
        rooms = await services.channels.room_names_for(user.id)
        await services.broker.enter_rooms(sid, rooms)
        return {"rooms": len(rooms)}

    @hub.on("join-note")
    @socket_handler(ctx, "join-note", JoinNote)
    async def join_note(ctx: Context, sid: str, payload: JoinNote) -> dict[str, Any]:
        user = await _user_for(ctx, sid, payload.auth.token if payload.auth else None)
        await services.notes.require(payload.note_id, user, "read")
        await services.broker.enter_room(sid, note_room(payload.note_id))
        return {"note_id": payload.note_id}

    @hub.on("heartbeat")
    @socket_handler(ctx, "heartbeat")
    async def heartbeat(ctx: Context, sid: str, _payload: Any) -> None:
        user = ctx.require_user(sid, access=False)
        await services.presence.heartbeat(sid, user.id)

    @hub.on("usage")
    @socket_handler(ctx, "usage", Usage)
    async def usage(ctx: Context, sid: str, payload: Usage) -> None:
        ctx.require_user(sid)
        await services.presence.usage(sid, payload.model)


def _transport_of(environ: dict[str, Any]) -> str:
    """The Engine.IO transport a connection opened with (`transport=` in the query string)."""
    query = str(environ.get("QUERY_STRING", ""))
    for part in query.split("&"):
        if part.startswith("transport="):
            value = part.removeprefix("transport=")
            return value if value in ("websocket", "polling") else "other"
    return "other"


async def _run_connect_hooks(ctx: Context, sid: str, environ: dict[str, Any], auth: Any) -> None:
    for hook in ctx.connect_hooks:
        try:
            await hook(sid, environ, auth)
        except Exception:
            log.exception("connect hook failed", extra={"sid": sid})


async def _user_for(ctx: Context, sid: str, token: str | None) -> Any:
    """The session's user; a token in the payload must belong to that same user."""
    user = ctx.require_user(sid)
    if token is not None:
        identity = await ctx.services.auth.authenticate(token)
        if identity.user.id != user.id:
            raise ChatwireError(ErrorCode.USER_MISMATCH, "token belongs to another user")
    return user
