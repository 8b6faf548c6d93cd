"""The Socket.IO server: created from the settings, every event family registered, background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio

from chatwire.config import Settings
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.services.container import Services
from chatwire.transport import channels, chats, collab, presence, session
from chatwire.transport.context import Context, socket_handler
from chatwire.transport.fastpath import OrjsonShim
from chatwire.transport.own import OwnHub, OwnRecovery
from chatwire.transport.recovery import RecoveringManager, RecoveringServer, Recovery

log = logging.getLogger("chatwire.socket")

SOCKETIO_PATH = "ws/socket.io"
CLEANUP_LOCK = "usage-cleanup"


def ws_protocol_for(settings: Settings) -> Any:
    """The websocket protocol to give uvicorn (`ws=`) for the selected engine."""
    if settings.engine == "own":
        from chatwire.engine.wsprotocol import EngineWebSocketProtocol

        return EngineWebSocketProtocol
    from chatwire.transport.uvicorn_ws import ws_protocol

    return ws_protocol()


def create_sio(
    settings: Settings, client_manager: socketio.AsyncManager | None = None
) -> socketio.AsyncServer:
    cors: Any = "*" if settings.cors_origins == ["*"] else settings.cors_origins
    return RecoveringServer(
        async_mode="asgi",
        json=OrjsonShim,
        fast_path=settings.fast_path,
        fast_path_limits=(
            settings.slow_reader_buffer_bytes,
            settings.slow_reader_backlog_events,
            settings.slow_reader_backlog_bytes,
        ),
        attachment_limits=(settings.max_attachments, settings.max_attachment_bytes),
        # Logs events to recoverable rooms and adds offsets (connection state recovery, see recovery.py).
        cors_allowed_origins=cors,
        transports=list(settings.transports),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        # Engine.IO's frame limit sits above the per-event limit, so that an oversized event gets a clear
        # error ack instead of a dropped connection.
        max_http_buffer_size=settings.max_payload_bytes * 4 + 4096,
        logger=False,
        engineio_logger=False,
        always_connect=False,
        client_manager=client_manager or RecoveringManager(),
    )


class Realtime:
    """Owns the handlers' context and the background upkeep of presence."""

    def __init__(self, sio: socketio.AsyncServer | OwnHub, services: Services) -> None:
        self.sio = sio
        self.services = services
        self.ctx = Context(services)
        if hasattr(sio, "is_authenticated"):
            sio.is_authenticated = self.ctx.is_authenticated
        if isinstance(sio, OwnHub):
            sio.states = self.ctx.local
            self.ctx.in_room = sio.in_room
        else:
            self.ctx.in_room = self._sio_in_room
        self._task: asyncio.Task[None] | None = None
        session.register(sio, self.ctx)
        channels.register(sio, self.ctx)
        chats.register(sio, self.ctx)
        services.metrics.set_sessions_provider(self._sessions_by_transport)
        services.metrics.set_rooms_provider(self._rooms_by_kind)
        collab.register(sio, self.ctx)
        presence.register(self.ctx)
        self.recovery: Recovery | OwnRecovery | None = None
        if isinstance(sio, OwnHub):
            self.recovery = OwnRecovery(sio, self.ctx)
        elif isinstance(sio, RecoveringServer):
            self.recovery = Recovery(sio, self.ctx)

        @sio.on("*")
        async def unknown(event: str, sid: str, *args: Any) -> Any:
            # Through the same decorator as every handler, so unknown events also count against the
            # session's rate limit and are logged once as a rejection with the user and session ids.
            name = str(event)[:100]

            async def refuse(_ctx: Context, _sid: str, _payload: Any) -> None:
                raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"unknown event {name!r}")

            return await socket_handler(self.ctx, name)(refuse)(sid, *args)

    def _sio_in_room(self, sid: str, room: str) -> bool:
        assert not isinstance(self.sio, OwnHub)
        members = self.sio.manager.rooms.get("/", {}).get(room)
        return members is not None and sid in members

    def _sessions_by_transport(self) -> dict[str, int]:
        """Live sessions of this process by their current Engine.IO transport (read at scrape time)."""
        if isinstance(self.sio, OwnHub):
            return self.sio.sessions_by_transport(list(self.ctx.local))
        counts: dict[str, int] = {"websocket": 0, "polling": 0}
        for sid in list(self.ctx.local):
            try:
                transport = self.sio.transport(sid, namespace="/")
            except Exception:  # gone between the listing and the look-up
                continue
            counts[transport] = counts.get(transport, 0) + 1
        return counts

    def _rooms_by_kind(self) -> dict[str, int]:
        """Named rooms with local members, by kind (a session's own room is not counted)."""
        if isinstance(self.sio, OwnHub):
            return self.sio.rooms_by_kind()
        rooms = self.sio.manager.rooms.get("/", {})
        sids = set(rooms.get(None, {}))
        counts = {"user": 0, "channel": 0, "note": 0, "doc": 0, "other": 0}
        for room, members in list(rooms.items()):
            if room is None or room in sids or not members:
                continue
            kind = "doc" if room.startswith("doc_") else room.split(":", 1)[0]
            counts[kind if kind in counts else "other"] += 1
        return counts

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("Realtime already started")
        self._task = asyncio.create_task(self._upkeep(), name="chatwire-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            with contextlib.suppress(Exception):
                await self.services.lock.release(CLEANUP_LOCK, self.services.host_id)
        await self.services.collab.close()

    async def _reregister(self, sid: str) -> None:
        """Put a live local session back into the store (after a Redis restart lost it)."""
        st = self.ctx.local.get(sid)
        if st is None or st.user is None:
            return
        await self.ctx.register_session(sid)
        log.info("session re-registered", extra={"sid": sid, "user_id": st.user.id})

    async def _upkeep(self) -> None:
        """Refresh the presence of this process's live sessions, forever; drop expired entries under the
        clean-up lock, so that in a fleet one process at a time does it and another takes over if it dies."""
        interval = max(0.5, self.services.settings.presence_ttl_seconds / 3)
        lock, owner = self.services.lock, self.services.host_id
        while True:
            try:
                live = [sid for sid, st in self.ctx.local.items() if st.user is not None]
                for sid in await self.services.sessions.touch(live):
                    await self._reregister(sid)
                if await lock.acquire(CLEANUP_LOCK, owner, interval * 3):
                    expired = await self.services.sessions.purge_expired()
                    await self.services.presence.sessions_ended(expired)
                    await self.services.room_presence.sessions_expired(expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence upkeep failed")
            await asyncio.sleep(interval)
