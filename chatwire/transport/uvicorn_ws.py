"""uvicorn's sans-I/O websocket protocol with lighter per-connection state (what an idle connection keeps).

uvicorn gives every websocket an asyncio.Queue for received messages (four deques and an Event: ~2.7 KiB) and an
asyncio.Event for write flow control (~0.7 KiB), and keeps the handshake's request and response objects for the
connection's whole life. Here the queue is a `LeanQueue`, the flow-control flag makes its waiter list only when a
sender actually has to wait, the handshake objects are dropped once the connection is accepted, and the
websocket-level keepalive is left to Engine.IO's ping. Framing and the ASGI messages are uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatwire.transport.sio_server import LeanQueue

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # uvicorn or websockets without the sans-I/O implementation
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


class WriteGate:
    """The part of asyncio.Event uvicorn's protocol uses for write flow control (set, clear, wait, is_set),
    with its waiters allocated only while a send is actually blocked."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


# The attributes uvicorn's protocol sets on each connection. Over 30 of them make CPython give every instance a
# dict of its own (~1.4 KiB); declared as slots of the subclass they take 8 bytes each. A name the base class
# already defines is left alone; an attribute a later uvicorn adds simply lands in the instance dict.
_PROTOCOL_ATTRIBUTES = (
    "app",
    "app_state",
    "asgi_version",
    "client",
    "close_sent",
    "close_timeout",
    "close_timer",
    "config",
    "conn",
    "connections",
    "curr_msg_data_type",
    "default_headers",
    "disconnected",
    "frames",
    "handshake_complete",
    "handshake_initiated",
    "initial_response",
    "last_ping_rtt",
    "logger",
    "loop",
    "pending_ping_payload",
    "ping_interval",
    "ping_sent_at",
    "ping_timeout",
    "ping_timer",
    "pong_timer",
    "queue",
    "read_paused",
    "request",
    "response",
    "root_path",
    "scheme",
    "scope",
    "server",
    "tasks",
    "transport",
    "writable",
)

if WebSocketsSansIOProtocol is not None:

    class LeanWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's websockets-sansio protocol with a LeanQueue, a WriteGate, its attributes in slots, and no
        handshake objects kept."""

        __slots__ = tuple(a for a in _PROTOCOL_ATTRIBUTES if not hasattr(WebSocketsSansIOProtocol, a))

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LeanQueue()  # type: ignore[assignment]
            self.writable = WriteGate()  # type: ignore[assignment]
            # No websocket-level keepalive: every websocket here carries Engine.IO, whose own ping (every ping
            # interval) keeps the connection busy and whose read timeout (eio_ws.py) ends a dead one. uvicorn's
            # ping would add a timer per connection (~0.8 KiB) and a second wake-up every 20 s.
            self.ping_interval = None

        async def send(self, message: Any) -> None:
            accepting = not self.handshake_complete
            await super().send(message)
            if accepting and self.handshake_complete:
                self._drop_handshake()
            if message.get("type") == "websocket.close":
                self._drop_received()

        def _drop_received(self) -> None:
            """The app closed the websocket: the messages it has not read yet (up to a frame each) go now; the
            disconnect message stays for an app that still waits for it."""
            queue: Any = self.queue
            if isinstance(queue, LeanQueue):
                queue.keep_only(lambda m: m.get("type") != "websocket.receive")

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.close_sent:
                self._drop_received()
            # The connection's objects reference each other (protocol, Engine.IO socket, session state), so they
            # go only when the cycle collector runs, which is rare here (app.py `_tune_gc`). What is big among
            # them goes now: websockets' parser holds the last frame read (up to the frame limit) and its reader
            # the bytes not parsed yet.
            conn = getattr(self, "conn", None)
            parser = getattr(conn, "parser", None)
            if parser is not None:
                parser.close()
            reader = getattr(conn, "reader", None)
            buffer = getattr(reader, "buffer", None)
            if isinstance(buffer, bytearray):
                buffer.clear()
            self.frames = []

        def _drop_handshake(self) -> None:
            """uvicorn reads the handshake's request and response only until the connection is accepted; their
            headers are emptied in place too, since websockets' parser keeps its own reference to the request."""
            for name in ("request", "response"):
                message = getattr(self, name, None)
                headers = getattr(message, "headers", None)
                clear = getattr(headers, "clear", None)
                if callable(clear):
                    clear()
                setattr(self, name, None)


def ws_protocol() -> Any:
    """The websocket protocol to give uvicorn (`ws=`): the lean one when available, else uvicorn's choice."""
    return LeanWebSocketProtocol if WebSocketsSansIOProtocol is not None else "auto"
