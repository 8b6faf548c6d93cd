"""ASGI composition: FastAPI (REST) + Socket.IO at /ws/socket.io + the static web client; one lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatwire import __version__
from chatwire.api import auths, channels, chats, notes, system, users
from chatwire.backends.sessions_memory import MemorySessionStore
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.services.container import Services
from chatwire.transport.broker_sio import SioBroker
from chatwire.transport.server import SOCKETIO_PATH, Realtime, create_sio
from chatwire.webapp import SpaStaticFiles, default_web_dir

log = logging.getLogger("chatwire")


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, by header and while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ChatwireError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse(
        {"detail": f"request body over {limit} bytes", "code": ErrorCode.PAYLOAD_TOO_LARGE.value},
        status_code=413,
    )
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The whole server as one ASGI app."""
    settings = settings or Settings()
    db = Database(settings.resolved_database_url)
    sio = create_sio(settings)
    broker = SioBroker(sio)
    sessions = MemorySessionStore(settings.presence_ttl_seconds, settings.usage_ttl_seconds)
    services = Services.build(settings, db, broker, sessions)
    realtime = Realtime(sio, services)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await db.migrate()
        await realtime.start()
        log.info(
            "chatwire ready", extra={"version": __version__, "database": db.engine.url.render_as_string()}
        )
        try:
            yield
        finally:
            await realtime.stop()
            await db.close()

    api = FastAPI(title="chatwire", version=__version__, lifespan=lifespan)
    api.state.services = services
    api.state.realtime = realtime
    api.state.sio = sio

    @api.exception_handler(ChatwireError)
    async def chatwire_error(_request: Request, exc: ChatwireError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "code": exc.code.value}, status_code=exc.http_status)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors, "code": ErrorCode.INVALID_PAYLOAD.value}, status_code=422)

    for router in (auths.router, users.router, channels.router, chats.router, notes.router, system.router):
        api.include_router(router)

    api.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=settings.cors_origins != ["*"],
        allow_methods=["*"],
        allow_headers=["*"],
    )
    web_dir = settings.web_dir or default_web_dir()
    if web_dir is not None and (web_dir / "index.html").exists():
        api.mount("/", SpaStaticFiles(directory=web_dir, html=True), name="web")

    app = socketio.ASGIApp(
        sio, other_asgi_app=BodyLimit(api, settings.max_payload_bytes), socketio_path=SOCKETIO_PATH
    )
    app.state = api.state  # type: ignore[attr-defined]
    return app  # type: ignore[no-any-return]
