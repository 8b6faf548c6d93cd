"""ASGI composition: FastAPI (REST) + Socket.IO at /ws/socket.io + the static web client; one lifespan."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatwire import __version__
from chatwire.api import (
    auths,
    channels,
    chats,
    completions,
    notes,
    rooms,
    server_api,
    system,
    users,
    webhooks,
)
from chatwire.api import metrics as metrics_api
from chatwire.backends.eventlog import CountsEntries
from chatwire.backends.lock_memory import MemoryLock
from chatwire.backends.sessions_memory import MemorySessionStore
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.metrics import Metrics
from chatwire.services.container import Services
from chatwire.transport.hub import EngineBroker, Hub
from chatwire.transport.server import Realtime
from chatwire.util import json_text_problem
from chatwire.webapp import SpaStaticFiles, default_web_dir

log = logging.getLogger("chatwire")


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, by header and while streaming; NUL in paths and
    JSON bodies holding text that cannot be stored (lone surrogates, NUL) with 422 `invalid_payload`.

    The body is read up to the limit before the app runs, so a chunked body that turns out too large is
    answered with 413 (not with the app's body-parsing error) and the app never sees a partial request.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", ""):
            # No id holds a NUL character, and PostgreSQL cannot even compare with one.
            await _refuse(send, 400, "NUL character in the path", ErrorCode.INVALID_PAYLOAD)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; let the app see the disconnect
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        problem = json_text_problem(b"".join(chunks)) if message["type"] == "http.request" else None
        if problem is not None:
            # The edge rule for text (README "Errors"): unstorable text anywhere in a body, read or not.
            await _refuse(send, 422, problem, ErrorCode.INVALID_PAYLOAD)
            return
        buffered: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            if message["type"] == "http.request"
            else message
        ]

        async def replay() -> Message:
            if buffered:
                return buffered.pop()
            return await receive()

        await self.app(scope, replay, send)


# The code of a refusal raised by FastAPI/Starlette themselves, by HTTP status (others: invalid_payload).
_FRAMEWORK_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL,
    503: ErrorCode.UNAVAILABLE,
}


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, f"request body over {limit} bytes", ErrorCode.PAYLOAD_TOO_LARGE)


async def _refuse(send: Send, status: int, detail: str, code: ErrorCode) -> None:
    response = JSONResponse({"detail": detail, "code": code.value}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _redis_probe(settings: Settings, metrics: Metrics) -> Any:
    """A metrics probe that pings Redis (0.5 s timeout) and sets `chatwire_redis_up` (one Redis, the primary
    behind Sentinel, or a cluster node)."""
    from chatwire.backends.redis_client import RedisTarget

    client: Any = RedisTarget.from_settings(settings).client(socket_timeout=0.5, socket_connect_timeout=0.5)

    async def probe() -> None:
        try:
            metrics.set_redis_up(bool(await client.ping()))
        except Exception:
            metrics.set_redis_up(False)

    return probe


def _tune_gc() -> None:
    """Collect less often and never scan what start-up built (modules, the app): the collector's full passes
    otherwise walk every object of every connection, again and again, under a stream of short-lived events."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 100))


def _pipeline_probe(services: Services, metrics: Metrics) -> Any:
    """A metrics probe that reads the persistence queue depth and the event log size at scrape time."""

    async def probe() -> None:
        metrics.set_persistence_queue_depth(services.writer.queued())
        if isinstance(services.eventlog, CountsEntries):
            metrics.set_event_log_size(services.eventlog.size())

    return probe


def _webhook_probe(services: Services, metrics: Metrics) -> Any:
    """A metrics probe that counts the webhook outbox's pending and dead rows at scrape time."""

    async def probe() -> None:
        counts = await services.webhooks.repo.count_by_status()
        metrics.set_webhook_outbox(counts.get("pending", 0), counts.get("dead", 0))

    return probe


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The whole server as one ASGI app: embedded (memory backends) or fleet member (Redis) by the settings."""
    settings = settings or Settings()
    db = Database(settings.resolved_database_url)
    host_id = uuid.uuid4().hex[:12]
    fleet: Any = None
    hub = Hub(settings)
    if settings.redis_url:
        from chatwire.transport.fleet_setup import FleetBackends

        fleet = FleetBackends(settings, host_id, hub)
        sessions: Any = fleet.sessions
        lock: Any = fleet.lock
    else:
        sessions = MemorySessionStore(settings.presence_ttl_seconds, settings.usage_ttl_seconds)
        lock = MemoryLock()
    metrics = Metrics()
    broker: Any
    if fleet is not None:
        broker = fleet.manager  # the fleet Broker (fleet_broker.py), local delivery through EngineBroker
        broker.metrics = metrics
    else:
        broker = EngineBroker(hub, metrics)
    services = Services.build(
        settings,
        db,
        broker,
        sessions,
        host_id=host_id,
        lock=lock,
        bus=fleet.bus if fleet else None,
        eventlog=fleet.eventlog if fleet else None,
        docstore=fleet.docstore if fleet else None,
        metrics=metrics,
        attempt_logs=fleet.attempt_log if fleet else None,
    )
    if settings.redis_url:
        metrics.add_probe(_redis_probe(settings, metrics))
    if fleet is not None:
        fleet.wire_tasks(services.tasks)
        fleet.wire_auth(services.auth)
    metrics.add_probe(_pipeline_probe(services, metrics))
    metrics.add_probe(_webhook_probe(services, metrics))
    services.writer.flush_observer = metrics.observe_persistence_flush
    realtime = Realtime(hub, services)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await db.migrate()
        await services.start_pipeline()
        if fleet is not None:
            await fleet.start()
        await realtime.start()
        if services.dispatcher is not None:
            await services.dispatcher.start()
        _tune_gc()
        mode = "fleet" if fleet else "embedded"
        log.info(
            "chatwire ready",
            extra={
                "version": __version__,
                "database": db.engine.url.render_as_string(),
                "host_id": host_id,
                "mode": mode,
            },
        )
        try:
            yield
        finally:
            if services.dispatcher is not None:
                await services.dispatcher.stop()
            await services.close_pipeline()
            await realtime.stop()
            if fleet is not None:
                await fleet.stop()
            await db.close()

    # The schema and docs describe every route, the server API included: served only when asked for.
    docs = settings.openapi_enabled
    api = FastAPI(
        title="chatwire",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    api.state.services = services
    api.state.realtime = realtime
    api.state.hub = hub
    # the fleet Broker (fleet_broker.py): its counters
    api.state.fleet = fleet.manager if fleet is not None else None

    @api.exception_handler(ChatwireError)
    async def chatwire_error(_request: Request, exc: ChatwireError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(
            {"detail": exc.message, "code": exc.code.value}, status_code=exc.http_status, headers=headers
        )

    @api.exception_handler(DataError)
    async def data_error(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the validation let through (its transaction was rolled back):
        # that is bad input, not a server fault.
        log.warning("database refused a value", extra={"error": str(exc.orig)[:300]})
        return JSONResponse(
            {"detail": "a value is not acceptable", "code": ErrorCode.INVALID_PAYLOAD.value}, status_code=400
        )

    if settings.redis_url:
        from redis.exceptions import RedisError

        @api.exception_handler(RedisError)
        async def redis_down(_request: Request, exc: RedisError) -> JSONResponse:
            log.warning("redis unavailable during a request", extra={"error": repr(exc)})
            return JSONResponse(
                {
                    "detail": "fleet backend (Redis) unavailable, retry shortly",
                    "code": ErrorCode.UNAVAILABLE.value,
                },
                status_code=503,
            )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Framework refusals (unparseable body, unknown route or method) carry a stable code like ours.
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        code = _FRAMEWORK_CODES.get(exc.status_code, ErrorCode.INVALID_PAYLOAD)
        return JSONResponse(
            {"detail": exc.detail, "code": code.value}, status_code=exc.status_code, headers=exc.headers
        )

    @api.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors, "code": ErrorCode.INVALID_PAYLOAD.value}, status_code=422)

    for router in (
        webhooks.router,
        rooms.router,
        auths.router,
        users.router,
        channels.router,
        chats.router,
        notes.router,
        system.router,
        completions.router,
    ):
        api.include_router(router)
    api.include_router(server_api.router)
    if settings.metrics_enabled:
        api.include_router(metrics_api.router)

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
    else:
        log.warning("no web client to serve at / (not in the package, no web/dist, no CHATWIRE_WEB_DIR)")

    app: Any = hub.asgi(BodyLimit(api, settings.max_payload_bytes))
    app.state = api.state
    return app  # type: ignore[no-any-return]
