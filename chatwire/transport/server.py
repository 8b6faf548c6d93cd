"""The Socket.IO server: created from the settings, every event family registered, background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio

from chatwire.config import Settings
from chatwire.errors import ErrorCode
from chatwire.services.container import Services
from chatwire.transport import channels, chats, session
from chatwire.transport.context import Context
from chatwire.transport.recovery import RecoveringManager, RecoveringServer, Recovery

log = logging.getLogger("chatwire.socket")

SOCKETIO_PATH = "ws/socket.io"


def create_sio(settings: Settings) -> socketio.AsyncServer:
    cors: Any = "*" if settings.cors_origins == ["*"] else settings.cors_origins
    return RecoveringServer(
        async_mode="asgi",
        # Logs events to recoverable rooms and adds offsets (connection state recovery, see recovery.py).
        client_manager=RecoveringManager(),
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
    )


class Realtime:
    """Owns the handlers' context and the background upkeep of presence."""

    def __init__(self, sio: socketio.AsyncServer, services: Services) -> None:
        self.sio = sio
        self.services = services
        self.ctx = Context(services)
        self._task: asyncio.Task[None] | None = None
        session.register(sio, self.ctx)
        channels.register(sio, self.ctx)
        chats.register(sio, self.ctx)
        self.recovery = Recovery(sio, self.ctx) if isinstance(sio, RecoveringServer) else None

        @sio.on("*")
        async def unknown(event: str, sid: str, *args: Any) -> dict[str, Any]:
            log.info("unknown event", extra={"sid": sid, "event": str(event)[:100]})
            return {
                "error": {
                    "code": ErrorCode.INVALID_PAYLOAD.value,
                    "message": f"unknown event {str(event)[:100]!r}",
                }
            }

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

    async def _upkeep(self) -> None:
        """Refresh the presence of this process's live sessions and drop expired entries, forever."""
        interval = max(0.5, self.services.settings.presence_ttl_seconds / 3)
        while True:
            try:
                live = [sid for sid, st in self.ctx.local.items() if st.user is not None]
                await self.services.sessions.touch(live)
                await self.services.sessions.purge_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence upkeep failed")
            await asyncio.sleep(interval)
