"""The Socket.IO server: created from the settings, every event family registered, background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from chatwire.config import Settings
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.services.container import Services
from chatwire.transport import channels, chats, collab, presence, session
from chatwire.transport.context import Context, socket_handler
from chatwire.transport.hub import Hub, Recovery

log = logging.getLogger("chatwire.socket")

SOCKETIO_PATH = "ws/socket.io"
CLEANUP_LOCK = "usage-cleanup"


def ws_protocol_for(_settings: Settings | None = None) -> Any:
    """The websocket protocol to give uvicorn (`ws=`, a public option): the engine's own (engine/wsprotocol.py)."""
    from chatwire.engine.wsprotocol import EngineWebSocketProtocol

    return EngineWebSocketProtocol


class Realtime:
    """Owns the handlers' context and the background upkeep of presence."""

    def __init__(self, hub: Hub, services: Services) -> None:
        self.hub = hub
        self.services = services
        self.ctx = Context(services)
        hub.is_authenticated = self.ctx.is_authenticated
        hub.states = self.ctx.local
        self.ctx.in_room = hub.in_room
        self._task: asyncio.Task[None] | None = None
        session.register(hub, self.ctx)
        channels.register(hub, self.ctx)
        chats.register(hub, self.ctx)
        services.metrics.set_sessions_provider(self._sessions_by_transport)
        services.metrics.set_rooms_provider(self._rooms_by_kind)
        collab.register(hub, self.ctx)
        presence.register(self.ctx)
        self.recovery = Recovery(hub, self.ctx)

        @hub.on("*")
        async def unknown(event: str, sid: str, *args: Any) -> Any:
            # Through the same decorator as every handler, so unknown events also count against the
            # session's rate limit and are logged once as a rejection with the user and session ids.
            name = str(event)[:100]

            async def refuse(_ctx: Context, _sid: str, _payload: Any) -> None:
                raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"unknown event {name!r}")

            return await socket_handler(self.ctx, name)(refuse)(sid, *args)

    def _sessions_by_transport(self) -> dict[str, int]:
        """Live sessions of this process by their current Engine.IO transport (read at scrape time)."""
        return self.hub.sessions_by_transport(list(self.ctx.local))

    def _rooms_by_kind(self) -> dict[str, int]:
        """Named rooms with local members, by kind (a session's own room is not counted)."""
        return self.hub.rooms_by_kind()

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
        # The user was announced online when the session first came; the roster the store rebuilds is no news.
        await self.ctx.register_session(sid, again=True)
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
                    for removed in expired:
                        if removed.last:
                            self.ctx.presence_changed(removed.info.user_id, removed.info.name, online=False)
                    await self.services.presence.sessions_ended(expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence upkeep failed")
            await asyncio.sleep(interval)
