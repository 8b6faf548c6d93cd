"""Socket.IO v5 server side on chatwire's Engine.IO: namespaces, sockets, rooms, acks and binary attachments.

Every emit, to one socket or to a room, goes through `Namespace.deliver`: the packet is encoded once and the same
frames are appended to each recipient's Engine.IO outbox; no task is created per recipient.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from chatwire.engine.eio import ASGIApp, EngineConfig, EngineServer, Frame, Session
from chatwire.engine.packets import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EVENT,
    Packet,
    decode,
    encode,
    reconstruct,
)
from chatwire.engine.state import (
    READ_TRANSITIONS,
    SIO_TRANSITIONS,
    EioState,
    ProtocolError,
    ReadState,
    SioState,
    check,
)
from chatwire.engine.timers import Timer

log = logging.getLogger(__name__)

Handler = Callable[..., Any]


_running: set[asyncio.Future[Any]] = set()


def spawn(awaitable: Awaitable[Any]) -> None:
    """Run a handler's coroutine in the background, holding a reference until it finishes."""
    future = asyncio.ensure_future(awaitable)
    _running.add(future)
    future.add_done_callback(_running.discard)


class ConnectionRefused(Exception):
    """Raise from a connect handler to answer CONNECT_ERROR with this message (and optional data)."""

    def __init__(self, message: str = "Connection refused", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


def _frames(kind: int, nsp: str, data: Any = None, ack_id: int | None = None) -> list[Frame]:
    """Encode a Socket.IO packet as Engine.IO frames: the text packet as a MESSAGE, attachments as binary."""
    parts = encode(kind, nsp, data, ack_id)
    first = parts[0]
    assert isinstance(first, str)
    return ["4" + first, *parts[1:]]


class Socket:
    """One client connected to one namespace."""

    __slots__ = (
        "_acks",
        "_next_ack",
        "_pending",
        "_running",
        "_waiting",
        "auth",
        "conn",
        "connected",
        "data",
        "namespace",
        "reply",
        "rooms",
        "sid",
    )

    def __init__(self, namespace: Namespace, conn: Connection, auth: dict[str, Any]) -> None:
        self.namespace = namespace
        self.conn = conn
        self.sid = secrets.token_urlsafe(15)
        self.auth = auth
        self.data: dict[str, Any] = {}
        self.rooms: set[str] = set()
        self.connected = False
        # Extra fields of the CONNECT reply (a connect handler may set them, e.g. a recovery `pid`).
        self.reply: dict[str, Any] | None = None
        self._acks: dict[int, Callable[..., Any]] = {}
        self._next_ack = 0
        self._pending: list[Frame] | None = []  # frames emitted before the CONNECT reply went out
        # Coroutine handlers of this socket in flight, and the events waiting (in arrival order, their handlers
        # not called yet) for one of the server's `max_handlers` slots.
        self._running = 0
        self._waiting: deque[tuple[str, int | None, Handler, list[Any]]] = deque()

    @property
    def session(self) -> Session:
        """The Engine.IO session carrying this socket."""
        return self.conn.session

    @property
    def scope(self) -> Any:
        """The ASGI scope of the request that opened the Engine.IO session (headers, query, client)."""
        return self.conn.session.scope

    def push(self, frames: Sequence[Frame]) -> None:
        """Append already-encoded frames for this socket (held back until the CONNECT reply is out)."""
        if self._pending is not None:
            self._pending.extend(frames)
        elif len(frames) == 1:  # most events: one text frame
            self.conn.session.push(frames[0])
        else:
            self.conn.session.push_many(frames)

    def release_pending(self) -> list[Frame]:
        """The frames emitted before the CONNECT reply; from now on frames go straight to the session."""
        held, self._pending = self._pending or [], None
        return held

    def forget_acks(self) -> None:
        self._acks.clear()

    def emit(self, event: str, *args: Any, callback: Callable[..., Any] | None = None) -> None:
        """Send an event to this client; `callback` runs with the client's ack arguments if it acks."""
        ack_id = None
        if callback is not None:
            ack_id = self._next_ack
            self._next_ack += 1
            self._acks[ack_id] = callback
        self.push(_frames(EVENT, self.namespace.name, [event, *args], ack_id))

    async def call(self, event: str, *args: Any, timeout: float = 30) -> Any:
        """Emit and wait for the client's ack; returns its single argument, or a tuple of several."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def resolve(*values: Any) -> None:
            if not future.done():
                future.set_result(values[0] if len(values) == 1 else values)

        self.emit(event, *args, callback=resolve)
        return await asyncio.wait_for(future, timeout)

    def join(self, room: str) -> None:
        self.namespace.join(self, room)

    def leave(self, room: str) -> None:
        self.namespace.leave(self, room)

    def disconnect(self) -> None:
        """Leave the namespace from the server side; the client is told with a DISCONNECT packet."""
        if self.connected:
            self.push(_frames(DISCONNECT, self.namespace.name))
            self.conn.drop(self, "server namespace disconnect")

    def handle_event(self, packet: Packet, data: list[Any]) -> None:
        event, args = data[0], data[1:]
        handler = self.namespace.handlers.get(event)
        if handler is None:
            handler = self.namespace.fallback
            if handler is None:
                return
            args = [event, *args]
        server = self.namespace.server
        if self._waiting or (server.max_handlers and self._running >= server.max_handlers):
            # every slot is taken (or earlier events still wait): the event waits its turn, up to `max_waiting`
            # events; past that it is refused, and the connection stays
            if len(self._waiting) >= server.max_waiting:
                self._refuse_event(event, packet.id)
            else:
                self._waiting.append((event, packet.id, handler, args))
            return
        self._start(event, packet.id, handler, args)

    def _start(self, event: str, ack_id: int | None, handler: Handler, args: list[Any]) -> None:
        try:
            result = handler(self, *args)
        except Exception:
            log.exception("socket.io handler for %r in %s failed", event, self.namespace.name)
            return
        if inspect.isawaitable(result):
            # a coroutine handler runs as its own task, so it may wait (even for this client's ack) while the
            # connection keeps reading; plain functions answer inline, in order
            self._running += 1
            spawn(self._finish(event, ack_id, result))
        else:
            self._answer(ack_id, result)

    async def _finish(self, event: str, ack_id: int | None, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception:
            log.exception("socket.io handler for %r in %s failed", event, self.namespace.name)
            return
        finally:
            self._running -= 1
            self._start_waiting()
        self._answer(ack_id, result)

    def _start_waiting(self) -> None:
        """Start waiting events, oldest first, while slots are free; a closed socket's waiting events are dropped
        (events wait only while a handler runs, whose end comes here)."""
        if not self.connected:
            self._waiting.clear()
            return
        limit = self.namespace.server.max_handlers
        while self._waiting and (not limit or self._running < limit):
            self._start(*self._waiting.popleft())

    def _refuse_event(self, event: str, ack_id: int | None) -> None:
        server = self.namespace.server
        server.events_refused += 1
        policy = server.event_refusal
        answer = policy(self, event) if policy is not None else None
        if answer is not None:
            self._answer(ack_id, answer)

    @property
    def handlers_in_flight(self) -> int:
        """This socket's coroutine handlers running now (at most the server's `max_handlers`)."""
        return self._running

    @property
    def events_waiting(self) -> int:
        """This socket's events waiting for a handler slot (at most the server's `max_waiting`)."""
        return len(self._waiting)

    def _answer(self, ack_id: int | None, result: Any) -> None:
        if ack_id is not None and self.connected:
            values = [] if result is None else list(result) if isinstance(result, tuple) else [result]
            self.push(_frames(ACK, self.namespace.name, values, ack_id))

    def handle_ack(self, packet: Packet, data: list[Any]) -> None:
        assert packet.id is not None
        callback = self._acks.pop(packet.id, None)
        if callback is None:
            return  # an ack for nothing we asked (or answered twice): ignored, like the reference server
        try:
            result = callback(*data)
            if inspect.isawaitable(result):
                spawn(result)
        except Exception:
            log.exception("socket.io ack callback failed")


class Namespace:
    """A namespace: its handlers, its sockets and its rooms (room name -> sockets, a socket's own sid included)."""

    def __init__(self, server: SocketServer, name: str) -> None:
        self.server = server
        self.name = name
        self.handlers: dict[str, Handler] = {}
        self.fallback: Handler | None = None
        self.connect_handler: Handler | None = None
        self.disconnect_handler: Handler | None = None
        self.disconnecting_handler: Handler | None = None
        self.sockets: dict[str, Socket] = {}
        self.rooms: dict[str, dict[str, Socket]] = {}

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: `handler(socket, *args)` runs for `event`; its return value is the ack when one is asked."""

        def register(handler: Handler) -> Handler:
            if event == "connect":
                self.connect_handler = handler
            elif event == "disconnect":
                self.disconnect_handler = handler
            elif event == "disconnecting":  # runs at once, while the socket is still in its rooms
                self.disconnecting_handler = handler
            elif event == "*":
                self.fallback = handler
            else:
                self.handlers[event] = handler
            return handler

        return register

    def join(self, socket: Socket, room: str) -> None:
        """Enter `room`; a socket still being accepted is a member at once (what reaches it waits for the CONNECT
        reply), and leaves every room again when it is refused."""
        self.rooms.setdefault(room, {})[socket.sid] = socket
        socket.rooms.add(room)

    def leave(self, socket: Socket, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.pop(socket.sid, None)
            if not members:
                del self.rooms[room]
        socket.rooms.discard(room)

    def targets(self, to: str | Iterable[str] | None, skip: str | Iterable[str] | None) -> list[Socket]:
        """The sockets an emit reaches: everyone, or the union of rooms `to`, minus sids/rooms in `skip`."""
        if to is None:
            chosen: dict[str, Socket] = dict(self.sockets)
        elif isinstance(to, str):
            chosen = dict(self.rooms.get(to, {}))
        else:
            chosen = {}
            for room in to:
                chosen.update(self.rooms.get(room, {}))
        if skip is not None:
            for room in [skip] if isinstance(skip, str) else skip:
                for sid in self.rooms.get(room, {}):
                    chosen.pop(sid, None)
        return list(chosen.values())

    def deliver(
        self, frames: Sequence[Frame], to: str | Iterable[str] | None, skip: str | Iterable[str] | None
    ) -> int:
        """The one delivery path: the same encoded frames appended to every recipient. Returns the count."""
        recipients = self.targets(to, skip)
        for socket in recipients:
            socket.push(frames)
        return len(recipients)

    def emit(
        self,
        event: str,
        *args: Any,
        to: str | Iterable[str] | None = None,
        skip: str | Iterable[str] | None = None,
    ) -> int:
        """Send an event to the namespace or to rooms (encoded once). Returns how many sockets it reached."""
        return self.deliver(_frames(EVENT, self.name, [event, *args]), to, skip)


class Connection:
    """The Socket.IO side of one Engine.IO session: its sockets by namespace and its binary reassembly."""

    __slots__ = (
        "_connect_timer",
        "_discard",
        "_partial",
        "read_state",
        "server",
        "session",
        "sockets",
        "state",
    )

    def __init__(self, server: SocketServer, session: Session) -> None:
        self.server = server
        self.session = session
        self.state = SioState.AWAITING_CONNECT
        self.read_state = ReadState.PACKET
        self.sockets: dict[str, Socket] = {}
        self._partial: Packet | None = None
        self._discard = 0  # attachments of a refused binary packet still to be thrown away
        self._connect_timer: Timer | None = session.engine.wheel.call_later(
            server.connect_timeout_ms / 1000, self._connect_timed_out
        )

    def _move(self, target: SioState) -> None:
        check("socket.io connection " + self.session.sid, SIO_TRANSITIONS, self.state, target)
        self.state = target

    def _read(self, target: ReadState) -> None:
        check("socket.io reader " + self.session.sid, READ_TRANSITIONS, self.read_state, target)
        self.read_state = target

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.state is SioState.AWAITING_CONNECT:
            self.session.close("connect timeout")

    async def receive(self, data: str | bytes) -> None:
        """One Engine.IO message from the client: a packet, or the next attachment of a binary packet."""
        if isinstance(data, bytes):
            partial = self._partial
            if self.read_state is not ReadState.ATTACHMENTS:
                raise ProtocolError("binary message without an announced attachment")
            if partial is None:  # an attachment of a refused packet
                self._discard -= 1
                if self._discard <= 0:
                    self._read(ReadState.PACKET)
                return
            if sum(map(len, partial.buffers)) + len(data) > self.server.max_attachment_bytes:
                left = partial.attachments - len(partial.buffers) - 1
                partial.buffers.clear()
                self._refuse(
                    partial,
                    f"binary attachments over {self.server.max_attachment_bytes} bytes in one packet",
                    left,
                )
                return
            partial.buffers.append(data)
            if len(partial.buffers) == partial.attachments:
                self._partial = None
                self._read(ReadState.PACKET)
                await self._dispatch(partial, reconstruct(partial))
            return
        if self.read_state is ReadState.ATTACHMENTS:
            raise ProtocolError("text packet while binary attachments were still due")
        packet = decode(data)
        if packet.type in (BINARY_EVENT, BINARY_ACK):
            if packet.attachments > self.server.max_attachments:
                if packet.attachments:
                    self._read(ReadState.ATTACHMENTS)
                self._refuse(
                    packet,
                    f"more than {self.server.max_attachments} binary attachments in one packet",
                    packet.attachments,
                )
                return
            if packet.attachments:
                self._partial = packet
                self._read(ReadState.ATTACHMENTS)
                return
        await self._dispatch(
            packet, reconstruct(packet) if packet.type in (BINARY_EVENT, BINARY_ACK) else packet.data
        )

    def _refuse(self, packet: Packet, reason: str, left: int) -> None:
        """A binary packet over the attachment limits: the connection closes, unless the server's
        `attachment_refusal` gives an ack value for its socket (then it is answered with it, when it asked for an
        ack, and its remaining attachments are read and thrown away)."""
        self._partial = None
        self.server.attachments_refused += 1
        socket = self.sockets.get(packet.nsp)
        policy = self.server.attachment_refusal
        answer = (
            policy(socket, reason) if policy is not None and socket is not None and socket.connected else None
        )
        if answer is None:
            raise ProtocolError(reason)
        assert socket is not None
        if packet.id is not None and packet.type == BINARY_EVENT:
            socket.push(_frames(ACK, packet.nsp, [answer], packet.id))
        self._discard = left
        if left <= 0 and self.read_state is ReadState.ATTACHMENTS:
            self._read(ReadState.PACKET)

    async def _dispatch(self, packet: Packet, data: Any) -> None:
        socket = self.sockets.get(packet.nsp)
        if packet.type == CONNECT:
            if socket is not None:
                raise ProtocolError(f"second CONNECT to {packet.nsp}")
            await self._connect(packet.nsp, data if data is not None else {})
        elif socket is None:
            raise ProtocolError(f"packet for namespace {packet.nsp!r}, which this client has not joined")
        elif packet.type == DISCONNECT:
            self.drop(socket, "client namespace disconnect")
        elif packet.type in (EVENT, BINARY_EVENT):
            socket.handle_event(packet, data)
        elif packet.type in (ACK, BINARY_ACK):
            socket.handle_ack(packet, data)

    async def _connect(self, nsp: str, auth: dict[str, Any]) -> None:
        namespace = self.server.namespaces.get(nsp)
        if namespace is None:
            self.session.push_many(_frames(CONNECT_ERROR, nsp, {"message": "Invalid namespace"}))
            return
        socket = Socket(namespace, self, auth)
        self.sockets[nsp] = socket  # reserved, so a second CONNECT meanwhile is refused
        refusal: dict[str, Any] | None = None
        if namespace.connect_handler is not None:
            try:
                result = namespace.connect_handler(socket, auth)
                if inspect.isawaitable(result):
                    result = await result
                if result is False:
                    refusal = {"message": "Connection refused"}
            except ConnectionRefused as exc:
                refusal = {"message": exc.message, **({"data": exc.data} if exc.data is not None else {})}
            except Exception:
                log.exception("socket.io connect handler for %s failed", nsp)
                refusal = {"message": "Internal error"}
        if self.session.state is EioState.CLOSED:
            for room in list(socket.rooms):
                namespace.leave(socket, room)
            return
        if refusal is not None:
            self.sockets.pop(nsp, None)
            for room in list(socket.rooms):
                namespace.leave(socket, room)
            self.session.push_many(_frames(CONNECT_ERROR, nsp, refusal))
            return
        socket.connected = True
        namespace.sockets[socket.sid] = socket
        namespace.join(socket, socket.sid)
        for room in list(socket.rooms):
            namespace.join(socket, room)
        held = socket.release_pending()
        self.session.push_many(_frames(CONNECT, nsp, {"sid": socket.sid, **(socket.reply or {})}), alone=True)
        if held:
            self.session.push_many(held)
        if self.state is SioState.AWAITING_CONNECT:
            self._move(SioState.ACTIVE)
            if self._connect_timer is not None:
                self._connect_timer.cancel()
                self._connect_timer = None

    def drop(self, socket: Socket, reason: str) -> None:
        """Take a socket out of its namespace and run the namespace's disconnect handler."""
        if self.sockets.get(socket.namespace.name) is socket:
            del self.sockets[socket.namespace.name]
        if not socket.connected:
            return
        socket.connected = False
        namespace = socket.namespace
        if namespace.disconnecting_handler is not None:
            try:
                namespace.disconnecting_handler(socket, reason)
            except Exception:
                log.exception("socket.io disconnecting handler for %s failed", namespace.name)
        namespace.sockets.pop(socket.sid, None)
        for room in list(socket.rooms):
            namespace.leave(socket, room)
        socket.forget_acks()
        handler = namespace.disconnect_handler
        if handler is not None:
            try:
                result = handler(socket, reason)
                if inspect.isawaitable(result):
                    spawn(_guard(result, namespace.name))
            except Exception:
                log.exception("socket.io disconnect handler for %s failed", namespace.name)

    def closed(self, reason: str) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        if self.state is not SioState.CLOSED:
            self._move(SioState.CLOSED)
        for socket in list(self.sockets.values()):
            self.drop(socket, reason)


async def _guard(awaitable: Awaitable[Any], where: str) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("socket.io disconnect handler for %s failed", where)


class SocketServer:
    """The Socket.IO server: `server.of(name)` gives a namespace; `server.asgi` is the ASGI application."""

    def __init__(
        self,
        engine_config: EngineConfig | None = None,
        *,
        connect_timeout_ms: int = 45_000,
        max_attachments: int = 10,
        max_attachment_bytes: int | None = None,
        max_handlers: int = 16,
        max_waiting: int = 200,
        other_app: ASGIApp | None = None,
    ) -> None:
        self.engine = EngineServer(self, engine_config, other_app)
        self.connect_timeout_ms = connect_timeout_ms
        self.max_attachments = max_attachments
        self.max_attachment_bytes = (
            max_attachment_bytes if max_attachment_bytes is not None else self.engine.config.max_payload
        )
        self.namespaces: dict[str, Namespace] = {}
        # A binary packet over the attachment limits closes its connection, unless this gives an ack value for the
        # socket (see `_refuse` of Connection); counted either way.
        self.attachment_refusal: Callable[[Socket, str], Any] | None = None
        self.attachments_refused = 0
        # Coroutine handlers one socket may have in flight (0 = no limit); its further events wait in arrival
        # order, at most `max_waiting` of them, and those past that are refused (`event_refusal` gives the ack
        # value, when the event asked for one), counted in `events_refused`.
        self.max_handlers = max_handlers
        self.max_waiting = max_waiting
        self.event_refusal: Callable[[Socket, str], Any] | None = None
        self.events_refused = 0

    @property
    def asgi(self) -> EngineServer:
        return self.engine

    def of(self, name: str) -> Namespace:
        """The namespace called `name`, created on first use (only created namespaces accept connections)."""
        namespace = self.namespaces.get(name)
        if namespace is None:
            namespace = self.namespaces[name] = Namespace(self, name)
        return namespace

    def emit(
        self,
        event: str,
        *args: Any,
        namespace: str = "/",
        to: str | Iterable[str] | None = None,
        skip: str | Iterable[str] | None = None,
    ) -> int:
        ns = self.namespaces.get(namespace)
        return 0 if ns is None else ns.emit(event, *args, to=to, skip=skip)

    # --- EngineHandler ---------------------------------------------------------------------------------------------
    def on_open(self, session: Session) -> None:
        session.handler_state = Connection(self, session)

    async def on_message(self, session: Session, data: str | bytes) -> None:
        conn = session.handler_state
        if isinstance(conn, Connection):  # none once the session closed (see on_close): nothing is read then
            await conn.receive(data)

    def on_close(self, session: Session, reason: str) -> None:
        conn = session.handler_state
        # The session and its connection point at each other: dropping the session's side of that cycle lets
        # reference counting free both once the last handler lets go, instead of waiting for the collector, which
        # the server runs rarely (app.py `_tune_gc`). The connection keeps its session for handlers still running.
        session.handler_state = None
        if isinstance(conn, Connection):
            conn.closed(reason)
