"""The app's Socket.IO side on chatwire's own engine (chatwire/engine/).

`Hub` gives the handlers (session.py, channels.py, chats.py, collab.py) the registration they use (`on`,
`event`, handlers called as `(sid, *args)`, connect as `(sid, environ, auth)`), and owns the one delivery pipeline
(`Delivery`): every emit, to a room or to one session, is encoded once and appended to each recipient's Engine.IO
outbox. Events to recoverable rooms are logged first and carry their offset for the sessions that use offsets
(connection state recovery, `Recovery`). `EngineBroker` is the services' `Broker` over it.

Slow readers: a session's unsent frames are bounded by the engine's outbox limits (settings slow_reader_backlog_*);
while its peer does not read, consecutive chat deltas of one message merge into one frame; past a bound the backlog
is dropped and the session is told to reload (`events` `{type: "chat:reload"}`). A burst queued in one loop turn
for a peer that reads is no slow reader: the bounds judge only a peer that is behind.

Chat deltas linger: a session's delta frames wait up to `delta_linger_ms` (one engine timer for all sessions) so
that a streamed answer's tokens leave in a few writes, not one each; any other event to the session takes them
along first, in order, so a turn's `done` flushes them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from chatwire.backends.eventlog import (
    AppendsNow,
    EventLog,
    LogEntry,
    ParkedSession,
    format_offset,
    is_ephemeral,
    is_recoverable,
    parse_offset,
)
from chatwire.config import Settings
from chatwire.db.models import User
from chatwire.engine import ConnectionRefused, EngineConfig, Socket, SocketServer
from chatwire.engine.eio import ASGIApp, Frame
from chatwire.engine.packets import EVENT, encode
from chatwire.engine.state import EioState
from chatwire.errors import ChatwireError
from chatwire.metrics import Metrics
from chatwire.protocol import UserJoin
from chatwire.services.rooms import user_room
from chatwire.transport.context import Context, SessionState

log = logging.getLogger("chatwire.socket")

NAMESPACE = "/"
SOCKETIO_PATH = "ws/socket.io"
LIFECYCLE = ("connect", "disconnect")  # app handlers the hub runs in its own connect and disconnect
DELTA_TYPES = ("message", "chat:message:delta")
RELOAD: dict[str, Any] = {"chat_id": None, "message_id": None, "data": {"type": "chat:reload", "data": {}}}
# Disconnect reasons after which a session is not parked: the client or the server meant it.
INTENDED = {"client disconnect", "server disconnect"}
# The engine's close reasons in python-socketio's words (what the handlers and recovery were written against).
REASONS = {
    "client namespace disconnect": "client disconnect",
    "client close": "client disconnect",
    "server namespace disconnect": "server disconnect",
}

Handler = Callable[..., Awaitable[Any]]


def event_frames(event: str, args: list[Any]) -> list[Frame]:
    """The Engine.IO frames of one EVENT to `/`: one orjson encoding, binary attachments through the engine."""
    try:
        return ["42" + orjson.dumps([event, *args], option=orjson.OPT_NON_STR_KEYS).decode()]
    except TypeError:
        parts = encode(EVENT, NAMESPACE, [event, *args])
        first = parts[0]
        assert isinstance(first, str)
        return ["4" + first, *parts[1:]]


def spread(data: Any) -> list[Any]:
    """Event arguments from a Broker's data: a tuple spreads, None is no argument."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


@dataclass(slots=True)
class Delta:
    """A chat delta in an outbox: consecutive ones of one message merge while the peer is not reading."""

    key: tuple[Any, ...]
    content: str
    body: dict[str, Any]
    tail: list[Any]

    def frame(self) -> str:
        data = self.body["data"]
        merged = {**self.body, "data": {**data, "data": {"content": self.content}}}
        frames = event_frames("events", [merged, *self.tail])
        assert isinstance(frames[0], str)
        return frames[0]

    def merge(self, later: Delta) -> tuple[str, Delta]:
        merged = Delta(later.key, self.content + later.content, later.body, later.tail)
        return merged.frame(), merged


def delta_of(event: str, args: list[Any]) -> Delta | None:
    """The Delta view of an `events` message/chat:message:delta event that carries only `content`; else None."""
    if event != "events" or not args or not isinstance(args[0], dict):
        return None
    body = args[0]
    data = body.get("data")
    if not isinstance(data, dict) or data.get("type") not in DELTA_TYPES:
        return None
    inner = data.get("data")
    if not isinstance(inner, dict) or set(inner) != {"content"} or not isinstance(inner["content"], str):
        return None
    key = (body.get("chat_id"), body.get("message_id"), data["type"], len(args))
    return Delta(key, inner["content"], body, args[1:])


def push(socket: Socket, frames: list[Frame], delta: Delta | None) -> None:
    """Append one event's frames to a socket; a delta may merge into the one before it (see the module doc) and
    linger for the next ones to share its write (CHATWIRE_DELTA_LINGER_MS)."""
    if delta is not None and socket.connected and len(frames) == 1:
        socket.session.push_coalescing(frames[0], delta, linger=True)
    else:
        socket.push(frames)


def environ_of(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The WSGI-style view of the handshake request the connect handlers read (query, user agent, client)."""
    environ: dict[str, Any] = {
        "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
        "asgi.scope": scope,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
    for key, value in scope.get("headers", ()):
        environ["HTTP_" + bytes(key).decode("latin-1").upper().replace("-", "_")] = bytes(value).decode(
            "latin-1"
        )
    return environ


class Delivery:
    """The one delivery pipeline: local rooms and single sessions, with the event log and offsets for recovery."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._eventlog: EventLog | None = None
        self._append_now: AppendsNow | None = None
        self.offset_sids: set[str] = set()
        # sid -> the offset the client last got (what a string-ending event must carry so it is not taken for one)
        self.last_offset: dict[str, str] = {}
        # sid -> live frames held back while a replay is prepared: (seq, offset, frames)
        self.held: dict[str, deque[tuple[int, str | None, list[Frame]]]] = {}
        # sid -> room -> delivery position when the sid entered the room (replay bound)
        self.entered: dict[str, dict[str, int]] = {}
        self.delivered_seq = 0
        self._lock = asyncio.Lock()
        self._in_lock = 0  # emits holding or waiting for `_lock` (an emit_now must not overtake them)

    @property
    def eventlog(self) -> EventLog | None:
        """The log of recoverable rooms (set by Recovery); None: nothing is logged."""
        return self._eventlog

    @eventlog.setter
    def eventlog(self, eventlog: EventLog | None) -> None:
        self._eventlog = eventlog
        self._append_now = eventlog if isinstance(eventlog, AppendsNow) else None

    def entering(self, sid: str, room: str) -> None:
        if is_recoverable(room):
            self.entered.setdefault(sid, {}).setdefault(room, self.delivered_seq)

    def leaving(self, sid: str, room: str) -> None:
        rooms = self.entered.get(sid)
        if rooms is not None:
            rooms.pop(room, None)

    def forget(self, sid: str) -> None:
        self.offset_sids.discard(sid)
        self.last_offset.pop(sid, None)
        self.held.pop(sid, None)
        self.entered.pop(sid, None)

    def members(self, room: str) -> list[Socket]:
        return list(self.hub.namespace.rooms.get(room, {}).values())

    def emit_now(self, event: str, data: Any, room: str, skip_sid: str | None) -> bool:
        """Deliver without waiting, when nothing needs to: True if done, False if only `emit` can (the log's
        append awaits, or an awaiting emit is in progress and must not be overtaken)."""
        eventlog = self._eventlog
        if eventlog is None or not is_recoverable(room) or is_ephemeral(event, data):
            self.emit_local(event, spread(data), room, skip_sid)
            return True
        append_now = self._append_now
        if append_now is None or self._in_lock:
            return False
        # One synchronous step: no other append can come between this entry and its delivery (offset order).
        self.deliver(append_now.append_now(room, event, data, skip_sid=skip_sid), skip_sid)
        return True

    async def emit(self, event: str, data: Any, room: str, skip_sid: str | None) -> None:
        if self.emit_now(event, data, room, skip_sid):
            return
        assert self._eventlog is not None
        self._in_lock += 1
        try:
            async with self._lock:
                # Appending and delivering under one lock keeps each session's delivery in offset order.
                entry = await self._eventlog.append(room, event, data, skip_sid=skip_sid)
                self.deliver(entry, skip_sid)
        finally:
            self._in_lock -= 1

    def emit_local(self, event: str, args: list[Any], room: str, skip_sid: str | None) -> int:
        """A non-logged event to this process's members of `room` (a room name or a sid)."""
        guarded = bool(self.offset_sids) and bool(args) and isinstance(args[-1], str)
        frames: list[Frame] | None = None
        delta = delta_of(event, args)
        count = 0
        for socket in self.members(room):
            if socket.sid == skip_sid:
                continue
            count += 1
            offset = self.last_offset.get(socket.sid) if guarded and socket.sid in self.offset_sids else None
            if offset is not None:
                # the client must not take the string for an offset: its current position goes last
                socket.push(event_frames(event, [*args, offset]))
                continue
            if frames is None:
                frames = event_frames(event, args)
            push(socket, frames, delta)
        return count

    def deliver(self, entry: LogEntry, skip_sid: str | None = None) -> None:
        """Send a logged entry to this process's members of its room; call in offset order.

        One encoding per variant (with the offset, for the sessions that use offsets, and without), shared by
        every member: the per-member work is a few set and dict look-ups and the push."""
        if entry.seq > self.delivered_seq:
            self.delivered_seq = entry.seq
        room = self.hub.namespace.rooms.get(entry.room)
        if not room:
            return
        skip = skip_sid or entry.skip_sid
        offset_sids = self.offset_sids
        held = self.held
        offset = entry.offset
        plain: tuple[list[Frame], Delta | None] | None = None
        marked: tuple[list[Frame], Delta | None] | None = None
        for socket in list(room.values()):  # a copy: a push may close a session, which leaves its rooms
            sid = socket.sid
            if sid == skip:
                continue
            with_offset = sid in offset_sids
            if with_offset:
                if marked is None:
                    args = [*spread(entry.data), offset]
                    marked = (event_frames(entry.event, args), delta_of(entry.event, args))
                frames, delta = marked
            else:
                if plain is None:
                    args = spread(entry.data)
                    plain = (event_frames(entry.event, args), delta_of(entry.event, args))
                frames, delta = plain
            if held:
                waiting = held.get(sid)
                if waiting is not None:
                    waiting.append((entry.seq, offset, frames))
                    continue
            if with_offset:
                self.last_offset[sid] = offset
            if delta is None:
                socket.push(frames)
            else:
                push(socket, frames, delta)

    def replay_then_release(self, sid: str, entries: Iterable[LogEntry]) -> int:
        """Send `entries` to `sid` in order, then its held live frames (those not already replayed); from then on
        it is delivered to directly again. Returns how many entries were replayed."""
        socket = self.hub.sockets.get(sid)
        held = self.held.pop(sid, None)
        if socket is None:
            return 0
        uses_offsets = sid in self.offset_sids
        sent = last_seq = 0
        for entry in entries:
            args = spread(entry.data)
            if uses_offsets:
                args.append(self._monotonic_offset(sid, entry))
            socket.push(event_frames(entry.event, args))
            last_seq = max(last_seq, entry.seq)
            sent += 1
        for seq, offset, frames in held or ():
            if seq and seq <= last_seq:
                continue
            if offset is not None and uses_offsets:
                self.last_offset[sid] = offset
            socket.push(frames)
        return sent

    def _monotonic_offset(self, sid: str, entry: LogEntry) -> str:
        """A replayed entry's offset, unless the client already has a later one (its position never moves back)."""
        current = parse_offset(self.last_offset.get(sid))
        mine = parse_offset(entry.offset)
        if current is not None and mine is not None and current[0] == mine[0] and current[1] >= mine[1]:
            return self.last_offset[sid]
        self.last_offset[sid] = entry.offset
        return entry.offset


class Hub:
    """The Socket.IO server of the app on chatwire's engine: handler registration, sessions, the ASGI app."""

    def __init__(self, settings: Settings) -> None:
        cors: Any = "*" if settings.cors_origins == ["*"] else list(settings.cors_origins)
        config = EngineConfig(
            ping_interval_ms=round(settings.ping_interval * 1000),
            ping_timeout_ms=round(settings.ping_timeout * 1000),
            # The frame limit sits above the per-event limit, so an oversized event gets a clear error ack
            # instead of a closed connection.
            max_payload=settings.max_payload_bytes * 4 + 4096,
            max_buffered_frames=max(10_000, settings.slow_reader_backlog_events * 4),
            path="/" + SOCKETIO_PATH + "/",
            cors_allowed_origins=cors,
            allow_polling="polling" in settings.transports,
            allow_websocket="websocket" in settings.transports,
            backlog_frames=settings.slow_reader_backlog_events,
            backlog_bytes=settings.slow_reader_backlog_bytes,
            linger=settings.delta_linger_ms / 1000,
        )
        self.server = SocketServer(
            config,
            max_attachments=settings.max_attachments,
            max_attachment_bytes=settings.max_attachment_bytes,
            max_handlers=settings.socket_max_handlers,
            # the rate limiter admits at most a burst of events at once: room for all of them to wait
            max_waiting=settings.rate_limit_burst,
        )
        self.server.engine.on_backlog_overflow = self._overflow
        self.namespace = self.server.of(NAMESPACE)
        self.sockets: dict[str, Socket] = {}  # every socket of `/`, from the start of its connect handler
        self.delivery = Delivery(self)
        # The app's handlers by event (its socket events, and "connect", "disconnect", "*"): the one table.
        self.handlers: dict[str, Handler] = {}
        self.recovery: Recovery | None = None
        # The app's per-session state (Context.local, set by Realtime): a leaving session's rooms are noted there.
        self.states: Mapping[str, SessionState] = {}
        # Whether a session has authenticated: such a session over the attachment limits gets an error ack and
        # keeps its connection; an anonymous one is closed.
        self.is_authenticated: Callable[[str], bool] = lambda _sid: False
        self.server.attachment_refusal = self._attachment_refusal
        self.server.event_refusal = self._event_refusal
        self.overflows = 0
        ns = self.namespace
        # sid -> the task running the app's disconnect handler (recovery waits for a superseded session's parking)
        self.ending: dict[str, asyncio.Task[None]] = {}
        # Told (sid, rooms it was in) when a session has left all its rooms (the fleet unsubscribes their topics).
        self.left_hooks: list[Callable[[str, list[str]], None]] = []
        self._leaving: dict[str, list[str]] = {}
        ns.on("connect")(self._connect)
        ns.on("disconnecting")(self._disconnecting)
        ns.on("disconnect")(self._disconnect)

    # --- registration (python-socketio's shape, which the handlers are written in) -------------------------------
    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: `handler(sid, *args)` runs for `event` (`"*"`: `handler(event, sid, *args)` for any event
        without its own; "connect" and "disconnect" run in the hub's own lifecycle below)."""
        if event == "disconnecting":
            raise ValueError("the hub handles 'disconnecting' itself (rooms noted, then 'disconnect')")

        def register(handler: Handler) -> Handler:
            self.handlers[event] = handler
            if event not in LIFECYCLE:
                self.namespace.on(event)(self._dispatcher(event))
            return handler

        return register

    @property
    def connect_handler(self) -> Handler | None:
        return self.handlers.get("connect")

    @property
    def disconnect_handler(self) -> Handler | None:
        return self.handlers.get("disconnect")

    def event(self, handler: Handler) -> Handler:
        return self.on(handler.__name__)(handler)

    def _dispatcher(self, event: str) -> Callable[..., Awaitable[Any]]:
        # looked up on every call, so a wrapper installed later (recovery's user-join) takes effect
        if event == "*":
            return lambda socket, name, *args: self.handlers["*"](name, socket.sid, *args)
        return lambda socket, *args: self.handlers[event](socket.sid, *args)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    async def _connect(self, socket: Socket, auth: Any) -> None:
        sid = socket.sid
        self.sockets[sid] = socket
        recovery = self.recovery
        marked = isinstance(auth, dict) and (
            isinstance(auth.get("pid"), str) or auth.get("since") is not None
        )
        if marked and recovery is not None:
            # A reconnect that may recover: its live events are held from the first moment it can get any.
            self.delivery.held[sid] = deque()
        try:
            if self.connect_handler is not None:
                await self.connect_handler(sid, environ_of(socket.scope), auth if auth != {} else None)
            if socket.session.state is EioState.CLOSED:
                raise ConnectionRefused("gone")
            if recovery is not None:
                pid = recovery.pid_of(sid)
                if pid is not None:
                    socket.reply = {"pid": pid}
                # what follows goes out right after the CONNECT reply
                recovery.after_connect_reply(sid)
        except BaseException:
            self._refused(sid)
            if socket.session.state is EioState.CLOSED and self.disconnect_handler is not None:
                await self.disconnect_handler(sid, "transport close")
            raise

    def _refused(self, sid: str) -> None:
        self.sockets.pop(sid, None)
        self.delivery.forget(sid)

    def _disconnecting(self, socket: Socket, _reason: str) -> None:
        rooms = self._leaving[socket.sid] = [r for r in socket.rooms if r != socket.sid]
        st = self.states.get(socket.sid)
        if st is not None:
            st.extra["rooms"] = rooms

    def _disconnect(self, socket: Socket, reason: str) -> None:
        sid = socket.sid
        self.sockets.pop(sid, None)
        self.delivery.forget(sid)
        rooms = self._leaving.pop(sid, [])
        for hook in self.left_hooks:
            try:
                hook(sid, rooms)
            except Exception:
                log.exception("session-left hook failed", extra={"sid": sid})
        handler = self.disconnect_handler
        if handler is None:
            return
        task = asyncio.ensure_future(handler(sid, REASONS.get(reason, reason)))
        self.ending[sid] = task

        def done(finished: asyncio.Future[None]) -> None:
            if self.ending.get(sid) is finished:
                del self.ending[sid]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("disconnect handler failed", exc_info=finished.exception())

        task.add_done_callback(done)

    def disconnect(self, sid: str) -> None:
        """End a session from the server side: DISCONNECT, then its Engine.IO session closes."""
        socket = self.sockets.get(sid)
        if socket is None:
            return
        session = socket.session
        socket.disconnect()
        if socket.conn.sockets == {}:
            session.close("server disconnect")

    def _overflow(self, _session: Any) -> list[Frame]:
        self.overflows += 1
        log.warning("slow reader: backlog dropped, session told to reload")
        return event_frames("events", [dict(RELOAD)])

    def _attachment_refusal(self, socket: Socket, reason: str) -> Any:
        if not self.is_authenticated(socket.sid):
            log.info("binary packet over the limits; anonymous connection closed", extra={"reason": reason})
            return None
        log.info("binary packet over the limits refused", extra={"sid": socket.sid, "reason": reason})
        return {"error": {"code": "payload_too_large", "message": reason}}

    def _event_refusal(self, socket: Socket, event: str) -> Any:
        log.warning(
            "socket events waiting past the limit; event refused", extra={"sid": socket.sid, "event": event}
        )
        return {"error": {"code": "rate_limited", "message": "too many events in flight"}}

    # --- what the rest of the app reads --------------------------------------------------------------------------
    @property
    def attachments_refused(self) -> int:
        """Binary packets refused for the attachment limits (metrics, tests)."""
        return self.server.attachments_refused

    def transport(self, sid: str) -> str | None:
        """The Engine.IO transport carrying session `sid` right now (None when it is not connected here)."""
        socket = self.sockets.get(sid)
        return None if socket is None else socket.session.transport

    def in_room(self, sid: str, room: str) -> bool:
        return sid in self.namespace.rooms.get(room, {})

    def sessions_by_transport(self, sids: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = {"websocket": 0, "polling": 0}
        for sid in sids:
            socket = self.sockets.get(sid)
            if socket is not None:
                counts[socket.session.transport] += 1
        return counts

    def rooms_by_kind(self) -> dict[str, int]:
        counts = {"user": 0, "channel": 0, "note": 0, "doc": 0, "other": 0}
        for room, members in list(self.namespace.rooms.items()):
            if room in self.sockets or not members:
                continue
            kind = "doc" if room.startswith("doc_") else room.split(":", 1)[0]
            counts[kind if kind in counts else "other"] += 1
        return counts

    def asgi(self, other_app: ASGIApp) -> Any:
        self.server.engine.other_app = other_app
        return self.server.engine


class EngineBroker:
    """The services' Broker on the own engine: rooms and sessions of this process, through `Delivery`."""

    def __init__(self, hub: Hub, metrics: Metrics | None = None) -> None:
        self.hub = hub
        self.metrics = metrics

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        start = time.perf_counter()
        await self.hub.delivery.emit(event, data, room, skip_sid)
        if self.metrics is not None:
            self.metrics.event_out(event, time.perf_counter() - start)

    def emit_now(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> bool:
        """`emit` in one synchronous step when `Delivery.emit_now` can (EmitsNow); False: nothing done."""
        start = time.perf_counter()
        if not self.hub.delivery.emit_now(event, data, room, skip_sid):
            return False
        if self.metrics is not None:
            self.metrics.event_out(event, time.perf_counter() - start)
        return True

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        socket = self.hub.sockets.get(sid)
        if socket is None:
            raise TimeoutError(f"session {sid} is not connected here")
        return await socket.call(event, *spread(data), timeout=timeout)

    async def enter_room(self, sid: str, room: str) -> None:
        socket = self.hub.sockets.get(sid)
        if socket is not None:
            self.hub.delivery.entering(sid, room)
            socket.join(room)

    async def enter_rooms(self, sid: str, rooms: list[str]) -> None:
        for room in rooms:
            await self.enter_room(sid, room)

    async def leave_room(self, sid: str, room: str) -> None:
        socket = self.hub.sockets.get(sid)
        if socket is not None:
            self.hub.delivery.leaving(sid, room)
            socket.leave(room)

    async def close_room(self, room: str) -> None:
        for socket in self.hub.delivery.members(room):
            await self.leave_room(socket.sid, room)

    async def disconnect(self, sid: str) -> None:
        self.hub.disconnect(sid)

    async def room_sids(self, room: str) -> list[str]:
        return list(self.hub.namespace.rooms.get(room, {}))

    async def rooms_of(self, sid: str) -> list[str]:
        socket = self.hub.sockets.get(sid)
        return [] if socket is None else [r for r in socket.rooms if r != sid]


def looks_like_python_client(environ: Mapping[str, Any]) -> bool:
    """python-socketio's clients (which call handlers with every argument) tell themselves apart at the handshake:
    their HTTP libraries announce Python in the User-Agent (aiohttp, requests), and python-engineio writes
    `transport=` before `EIO=` in the query string, where the JS engine.io-client writes `EIO=` first."""
    agent = str(environ.get("HTTP_USER_AGENT", "")).lower()
    if "python" in agent or "aiohttp" in agent:
        return True
    query = str(environ.get("QUERY_STRING", ""))
    t, e = query.find("transport="), query.find("EIO=")
    return t != -1 and e != -1 and t < e


@dataclass(slots=True)
class Tracked:
    """A session that has a pid."""

    pid: str
    baseline: str
    recovered: bool = False
    replay: list[LogEntry] | None = None


class Recovery:
    """Connection state recovery on the own engine: pids in the CONNECT reply, parking on a drop, restoring and
    replaying on reconnect, and `since` catch-up (the semantics of docs/PROTOCOL.md)."""

    def __init__(self, hub: Hub, ctx: Context) -> None:
        self.hub = hub
        self.ctx = ctx
        self.delivery = hub.delivery
        self.eventlog: EventLog = ctx.services.eventlog
        self.settings = ctx.settings
        self.tracked: dict[str, Tracked] = {}
        self.live_pids: dict[str, str] = {}
        self._superseded: set[str] = set()
        self._pending: dict[str, list[LogEntry]] = {}
        self.delivery.eventlog = self.eventlog
        hub.recovery = self
        ctx.join_hooks.append(self.catch_up)
        ctx.disconnect_hooks.append(self.on_disconnect)
        ctx.connect_hooks.append(self.on_connect)
        self._wrap_user_join()

    def _wrap_user_join(self) -> None:
        """Hold a session's live events from the moment a `user-join {since}` arrives (before it enters the user
        room), so the catch-up replay and live events reach it in offset order."""
        original = self.hub.handlers.get("user-join")
        if original is None:
            return
        delivery = self.delivery

        async def user_join(sid: str, *args: Any) -> Any:
            payload = args[0] if args else None
            if not isinstance(payload, dict) or payload.get("since") is None:
                return await original(sid, *args)
            delivery.held.setdefault(sid, deque())
            try:
                return await original(sid, *args)
            finally:
                if sid in delivery.held:  # the handler failed before the catch-up: release what was held
                    delivery.replay_then_release(sid, [])

        self.hub.handlers["user-join"] = user_join

    @property
    def enabled(self) -> bool:
        return self.settings.recovery_window_seconds > 0

    def pid_of(self, sid: str) -> str | None:
        t = self.tracked.get(sid)
        return t.pid if t is not None else None

    def recovered(self, sid: str) -> bool:
        t = self.tracked.get(sid)
        return bool(t and t.recovered)

    def wants_offsets(self, environ: Mapping[str, Any], auth: Any) -> bool:
        """Whether this session gets offsets (and so a pid): settings first, then what the client says."""
        mode = self.settings.recovery_offsets
        if mode != "auto":
            return mode == "always"
        if isinstance(auth, dict):
            flag = auth.get("offsets")
            if isinstance(flag, bool):
                return flag
            if isinstance(auth.get("pid"), str):
                return True
        return not looks_like_python_client(environ)

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        await self._recover_or_track(sid, environ, auth)
        since = auth.get("since") if isinstance(auth, dict) else None
        st = self.ctx.local.get(sid)
        if since is not None and not self.recovered(sid) and st is not None and st.user is not None:
            entries = await self._catch_up_entries(sid, st.user, since)
            self._pending[sid] = entries if entries is not None else []

    async def _recover_or_track(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        if not self.enabled or not self.wants_offsets(environ, auth):
            return
        self.delivery.offset_sids.add(sid)
        baseline = await self.eventlog.head()
        tracked = Tracked(pid=secrets.token_urlsafe(16), baseline=baseline)
        self.delivery.last_offset[sid] = baseline
        claimed = auth.get("pid") if isinstance(auth, dict) else None
        if isinstance(claimed, str) and len(claimed) <= 64:
            try:
                parked = await self._claim(sid, claimed)
                if parked is not None:
                    await self._restore(sid, tracked, claimed, parked, auth.get("offset"))
            except Exception:
                log.exception("recovery failed; starting fresh", extra={"sid": sid})
                tracked = Tracked(pid=tracked.pid, baseline=baseline)
                self.delivery.last_offset[sid] = baseline
        self.tracked[sid] = tracked
        self.live_pids[tracked.pid] = sid

    async def _claim(self, sid: str, pid: str) -> ParkedSession | None:
        user_id = self._user_id(sid)
        parked = await self.eventlog.claim(pid)
        old_sid = self.live_pids.get(pid)
        if parked is None and old_sid is not None and old_sid in self.tracked:
            if self._user_id(old_sid) != user_id:
                return None
            # The old connection is half-open (its client already came back): end it, park it, take it over.
            self._superseded.add(old_sid)
            self.hub.disconnect(old_sid)
            ending = self.hub.ending.get(old_sid)
            if ending is not None:  # its disconnect handler parks it
                await asyncio.wait([ending], timeout=10)
            parked = await self.eventlog.claim(pid)
        if parked is not None and parked.user_id != user_id:
            log.info("recovery refused: another user", extra={"sid": sid})
            await self.eventlog.park(pid, parked, self.settings.recovery_window_seconds)
            return None
        return parked

    def _user_id(self, sid: str) -> str | None:
        st = self.ctx.local.get(sid)
        return st.user.id if st is not None and st.user is not None else None

    async def _restore(
        self, sid: str, tracked: Tracked, pid: str, parked: ParkedSession, offset: Any
    ) -> None:
        st = self.ctx.local.get(sid)
        user = st.user if st is not None else None
        epoch = await self.eventlog.epoch()
        base = parse_offset(parked.baseline)
        if base is None or base[0] != epoch:
            return
        start = parked.baseline
        mine = parse_offset(offset)
        if mine is not None and mine[0] == epoch and mine[1] >= base[1]:
            start = offset
        self.delivery.last_offset[sid] = start
        rooms = await self._allowed_rooms(parked, user)
        for room in rooms:
            await self.ctx.services.broker.enter_room(sid, room)
        entries = await self.eventlog.read(start, [r for r in rooms if is_recoverable(r)])
        if entries is None:
            log.info("recovery impossible: history gone", extra={"sid": sid})
            self.delivery.last_offset[sid] = tracked.baseline
            return
        bounds = self.delivery.entered.get(sid, {})
        tracked.replay = [
            e for e in entries if e.seq <= bounds.get(e.room, 0) and e.skip_sid not in (parked.sid, sid)
        ]
        tracked.pid = pid
        tracked.baseline = parked.baseline
        tracked.recovered = True
        if st is not None:
            st.extra["recovered"] = True

    async def _allowed_rooms(self, parked: ParkedSession, user: User | None) -> list[str]:
        """The parked rooms this user may still be in: access is checked again, never trusted from the past."""
        if user is None:
            return []
        services = self.ctx.services
        channel_rooms = set(await services.channels.room_names_for(user.id))
        allowed: list[str] = []
        for room in parked.rooms:
            if room == user_room(user.id) or room in channel_rooms:
                allowed.append(room)
            elif room.startswith("note:"):
                try:
                    await services.notes.require(room.removeprefix("note:"), user, "read")
                    allowed.append(room)
                except ChatwireError:
                    pass
        return allowed

    def after_connect_reply(self, sid: str) -> None:
        """Queued right behind the CONNECT reply: the replay, then the held live events."""
        tracked = self.tracked.get(sid)
        replay = tracked.replay if tracked is not None and tracked.replay is not None else []
        if tracked is not None:
            tracked.replay = None
        replay = replay or self._pending.pop(sid, [])
        self._pending.pop(sid, None)
        if sid not in self.delivery.held and not replay:
            return
        count = self.delivery.replay_then_release(sid, replay)
        if tracked is not None and tracked.recovered:
            log.info("session recovered", extra={"sid": sid, "replayed": count})

    async def on_disconnect(self, sid: str, st: SessionState | None) -> None:
        """Park a session that dropped (not one that was closed on purpose) for the recovery window."""
        self._pending.pop(sid, None)
        tracked = self.tracked.pop(sid, None)
        superseded = sid in self._superseded
        self._superseded.discard(sid)
        if tracked is None:
            return
        if self.live_pids.get(tracked.pid) == sid:
            del self.live_pids[tracked.pid]
        reason = st.extra.get("disconnect_reason") if st is not None else None
        if reason in INTENDED and not superseded:
            return
        rooms = tuple(st.extra.get("rooms", ())) if st is not None else ()
        user_id = st.user.id if st is not None and st.user is not None else None
        await self.eventlog.park(
            tracked.pid,
            ParkedSession(sid=sid, user_id=user_id, rooms=rooms, baseline=tracked.baseline),
            self.settings.recovery_window_seconds,
        )

    async def catch_up(self, sid: str, user: User, payload: UserJoin) -> dict[str, Any] | None:
        """`user-join {since}`: replay the user's stream after `since` to this session (a new tab)."""
        since = payload.since
        if since is None:
            return None
        self.delivery.held.setdefault(sid, deque())
        entries = await self._catch_up_entries(sid, user, since)
        count = self.delivery.replay_then_release(sid, entries or [])
        return {"caught_up": False if entries is None else count}

    async def _catch_up_entries(self, sid: str, user: User, since: Any) -> list[LogEntry] | None:
        if isinstance(since, int) and not isinstance(since, bool):
            since = format_offset(await self.eventlog.epoch(), since)
        room = user_room(user.id)
        entries = await self.eventlog.read(since, [room]) if isinstance(since, str) else None
        if entries is None:
            return None
        bound = self.delivery.entered.get(sid, {}).get(room, 0)
        return [e for e in entries if e.seq <= bound and e.skip_sid != sid]
