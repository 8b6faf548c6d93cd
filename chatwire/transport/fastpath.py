"""The fast send path: encode a packet and its websocket frame once, write it to each member's socket directly.

Stock python-socketio creates one task per recipient and each recipient's packet travels through Engine.IO's queue,
its writer task and the ASGI send path, where uvicorn frames it again. Here, for sessions connected over a
websocket served by uvicorn's sans-I/O websocket protocol, a broadcast is one JSON encoding, one frame, and one
`transport.write` per member, without tasks. Every Socket.IO packet of such a session (events, acks, CONNECT
replies) takes this path, so their order on the wire is the order in which they were sent. Sessions on other
transports (long-polling, other servers) fall back to the stock path.

Frames written in one turn of the event loop are gathered per session and written with one `transport.write`
at the end of that turn (one system call per socket however many events a turn broadcast), in the order written.

A session whose socket stops draining (its kernel buffer is full, the transport's buffer passes the high-water
mark) is not written to directly; its packets wait in a bounded backlog where consecutive chat deltas of the same
message merge into one; when the backlog overflows it is dropped and the session is told to reload
(`events` `{type: "chat:reload"}`), so a slow reader never grows the server's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from engineio import packet as eio_packet
from socketio import packet as sio_packet

log = logging.getLogger("chatwire.fastpath")

DELTA_TYPES = ("message", "chat:message:delta")


class OrjsonShim:
    """A `json` module for python-socketio backed by orjson (python-socketio passes stdlib-style kwargs)."""

    @staticmethod
    def dumps(obj: Any, **_kwargs: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()

    @staticmethod
    def loads(data: str | bytes, **_kwargs: Any) -> Any:
        return orjson.loads(data)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final websocket text frame (server to client) carrying `payload`."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def encode_event(event: str, args: list[Any], namespace: str = "/") -> bytes:
    """The Engine.IO MESSAGE payload of a Socket.IO EVENT: `42["event",...]` (namespace prefix if not '/')."""
    ns = "" if namespace == "/" else namespace + ","
    return b"42" + ns.encode() + orjson.dumps([event, *args], option=orjson.OPT_NON_STR_KEYS)


@dataclass(slots=True)
class Delta:
    """A chat delta waiting in a backlog: consecutive ones of the same message merge into one event."""

    key: tuple[Any, ...]
    content: str
    build: Callable[[str], bytes]


def delta_of(event: str, args: list[Any], namespace: str) -> Delta | None:
    """The Delta view of an `events` message/chat:message:delta event carrying only `content`; else None."""
    if event != "events" or not args or not isinstance(args[0], dict):
        return None
    body = args[0]
    data = body.get("data")
    if not isinstance(data, dict) or data.get("type") not in DELTA_TYPES:
        return None
    inner = data.get("data")
    if not isinstance(inner, dict) or set(inner) != {"content"} or not isinstance(inner["content"], str):
        return None
    tail = args[
        1:
    ]  # a recovery offset, when present, is the last argument: the merged event keeps the newest

    def build(content: str) -> bytes:
        merged = {**body, "data": {**data, "data": {"content": content}}}
        return text_frame(encode_event(event, [merged, *tail], namespace))

    return Delta(
        (body.get("chat_id"), body.get("message_id"), data["type"], len(args)), inner["content"], build
    )


class Sink:
    """Direct writer to one session's websocket, with a bounded, coalescing backlog for slow readers."""

    __slots__ = (
        "backlog",
        "backlog_bytes",
        "batcher",
        "drain_task",
        "limits",
        "on_overflow",
        "pending",
        "proto",
        "transport",
    )

    def __init__(
        self,
        proto: Any,
        limits: tuple[int, int, int],
        on_overflow: Callable[[Sink], None],
        batcher: Batcher | None = None,
    ) -> None:
        self.proto = proto
        self.batcher = batcher  # None: every frame is written at once
        self.pending: list[bytes] | None = None  # frames of this loop turn, written together by the batcher
        self.transport = proto.transport
        self.limits = limits  # (transport high-water bytes, max backlog items, max backlog bytes)
        self.backlog: list[tuple[bytes, Delta | None]] = []
        self.backlog_bytes = 0
        self.drain_task: asyncio.Task[None] | None = None
        self.on_overflow = on_overflow

    @property
    def open(self) -> bool:
        p = self.proto
        return not (p.disconnected or p.close_sent or self.transport.is_closing())

    def write(
        self, frame: bytes, event: str | None = None, args: list[Any] | None = None, ns: str = "/"
    ) -> bool:
        """Put `frame` on the wire, or in the backlog while the socket is not draining; False when closed."""
        p = self.proto
        transport = self.transport
        if p.disconnected or p.close_sent or transport.is_closing():
            return False
        if not self.backlog and transport.get_write_buffer_size() < self.limits[0]:
            if self.batcher is None:
                self.transport.write(frame)
            elif self.pending is None:
                self.pending = [frame]
                self.batcher.frames += 1
                self.batcher.mark(self)
            else:
                self.pending.append(frame)
                self.batcher.frames += 1
            return True
        delta = delta_of(event, args, ns) if event is not None and args is not None else None
        self._defer(frame, delta)
        return True

    def flush(self) -> None:
        """Write the frames gathered in this loop turn (one system call)."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if self.open:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _defer(self, frame: bytes, delta: Delta | None) -> None:
        if delta is not None and self.backlog:
            last_frame, last = self.backlog[-1]
            if last is not None and last.key == delta.key:
                merged = Delta(delta.key, last.content + delta.content, delta.build)
                new_frame = merged.build(merged.content)
                self.backlog_bytes += len(new_frame) - len(last_frame)
                self.backlog[-1] = (new_frame, merged)
                self._check_bounds()
                return
        self.backlog.append((frame, delta))
        self.backlog_bytes += len(frame)
        self._check_bounds()
        if self.drain_task is None:
            self.drain_task = asyncio.ensure_future(self._drain())

    def _check_bounds(self) -> None:
        # The oldest frame does not count against the byte bound when it is one event as sent (a 20 MB answer
        # with its sources waits its turn instead of forcing a reload); what queues behind it counts. A merged
        # run of deltas always counts: merging grows it without end for a socket that never reads.
        oldest = self.backlog[0] if self.backlog else None
        exempt = len(oldest[0]) if oldest is not None and oldest[1] is None else 0
        behind = self.backlog_bytes - exempt
        if len(self.backlog) > self.limits[1] or behind > self.limits[2]:
            self.backlog.clear()
            self.backlog_bytes = 0
            self.on_overflow(self)

    async def _drain(self) -> None:
        try:
            while self.backlog and self.open:
                while self.transport.get_write_buffer_size() >= self.limits[0] and self.open:
                    await asyncio.sleep(0.01)
                batch, self.backlog = self.backlog, []
                self.backlog_bytes = 0
                if self.open:
                    self.transport.write(b"".join(frame for frame, _ in batch))
        finally:
            self.drain_task = None


class Batcher:
    """Writes the frames sinks gathered, a few loop turns later, one `transport.write` per socket.

    An event reaches its handler a few loop turns after the previous one (python-socketio runs each in a task of
    its own), so waiting only for the end of the current turn would gather one event per socket. The batcher waits
    while events keep coming, for at most `max_hold` seconds and at most `idle_turns` turns without a new frame:
    under load many events share each system call; a lone event leaves after a few empty turns (microseconds).
    """

    __slots__ = ("dirty", "frames", "idle", "idle_turns", "loop", "max_hold", "scheduled", "seen", "since")

    def __init__(self, max_hold: float = 0.001, idle_turns: int = 2) -> None:
        self.dirty: list[Sink] = []
        self.scheduled = False
        self.max_hold = max_hold
        self.idle_turns = idle_turns
        self.frames = 0  # frames gathered since the last write-out
        self.seen = 0  # `frames` at the previous turn
        self.idle = 0
        self.since = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    def mark(self, sink: Sink) -> None:
        self.dirty.append(sink)
        if not self.scheduled:
            self.scheduled = True
            loop = self.loop = asyncio.get_running_loop()
            self.since = loop.time()
            self.seen = self.frames
            self.idle = 0
            loop.call_soon(self._turn)

    def _turn(self) -> None:
        loop = self.loop
        assert loop is not None
        if loop.time() - self.since < self.max_hold:
            if self.frames != self.seen:
                self.seen = self.frames
                self.idle = 0
                loop.call_soon(self._turn)
                return
            if self.idle < self.idle_turns:
                self.idle += 1
                loop.call_soon(self._turn)
                return
        self.flush()

    def flush(self) -> None:
        """Write out everything gathered (also called before anything that must follow it on the wire)."""
        self.scheduled = False
        self.frames = 0
        dirty, self.dirty = self.dirty, []
        for sink in dirty:
            sink.flush()


class FastPath:
    """Finds the direct sink of a session and writes packets to it; stays out of the way for other transports."""

    def __init__(
        self,
        server: Any,
        high_water: int = 1 << 20,
        max_backlog: int = 1000,
        max_backlog_bytes: int = 8 << 20,
    ) -> None:
        self.server = server
        self.limits = (high_water, max_backlog, max_backlog_bytes)
        self._sinks: dict[str, Sink | None] = {}
        self.batcher = Batcher()
        self.overflows = 0

    def sink(self, eio_sid: str) -> Sink | None:
        try:
            return self._sinks[eio_sid]
        except KeyError:
            pass
        sink = None
        environ = self.server.environ.get(eio_sid)
        if environ is not None and environ.get("asgi.scope", {}).get("type") == "websocket":
            proto = getattr(environ.get("asgi.send"), "__self__", None)
            if (
                proto is not None
                and hasattr(proto, "transport")
                and hasattr(proto, "close_sent")
                and hasattr(proto, "conn")
                and not getattr(proto.conn, "extensions", None)
            ):
                sink = Sink(proto, self.limits, self._overflow, self.batcher)
                eio_socket = getattr(self.server.eio, "sockets", {}).get(eio_sid)
                queue = getattr(eio_socket, "queue", None)
                if queue is not None and hasattr(queue, "before_put"):
                    queue.before_put = sink.flush
        self._sinks[eio_sid] = sink
        return sink

    def release_handshake(self, eio_sid: str) -> None:
        """Free what only the handshake needed, once the session is connected: the request and response headers
        that uvicorn, websockets and Engine.IO each keep a copy of for the connection's whole life (a few KiB per
        idle connection). The objects stay; their header lists are emptied in place."""
        environ = self.server.environ.get(eio_sid)
        if environ is None or environ.get("asgi.scope", {}).get("type") != "websocket":
            return
        # Engine.IO wraps the (empty) request body in an instance of a class it defines per request: ~2 KiB.
        # The rest is rebuilt in place without the headers: a dict does not shrink when keys are deleted.
        kept = [(k, v) for k, v in environ.items() if not k.startswith("HTTP_") and k != "wsgi.input"]
        environ.clear()
        environ.update(kept)
        scope = environ.get("asgi.scope")
        if isinstance(scope, dict) and isinstance(scope.get("headers"), list):
            scope["headers"].clear()
        sink = self.sink(eio_sid)
        proto = sink.proto if sink is not None else None
        if proto is None or not getattr(proto, "handshake_complete", False):
            return
        for name in ("request", "response"):
            headers = getattr(getattr(proto, name, None), "headers", None)
            clear = getattr(headers, "clear", None)
            if callable(clear):
                clear()

    def forget(self, eio_sid: str) -> None:
        sink = self._sinks.pop(eio_sid, None)
        if sink is not None and sink.drain_task is not None:
            sink.drain_task.cancel()

    def _overflow(self, sink: Sink) -> None:
        self.overflows += 1
        log.warning("slow reader: backlog dropped, session told to reload")
        frame = text_frame(
            encode_event(
                "events", [{"chat_id": None, "message_id": None, "data": {"type": "chat:reload", "data": {}}}]
            )
        )
        sink.backlog.append((frame, None))
        sink.backlog_bytes += len(frame)

    def write_packet(self, eio_sid: str, pkt: sio_packet.Packet) -> bool:
        """Write one Socket.IO packet directly; False when this session has no direct sink (use the stock path)."""
        sink = self.sink(eio_sid)
        if sink is None:
            return False
        if pkt.packet_type in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            sink.flush()  # the stock path writes after what this session already has in the pipe
            return False
        encoded = pkt.encode()
        if isinstance(encoded, list):
            sink.flush()
            return False
        return sink.write(text_frame(b"4" + encoded.encode()))

    def write_eio(self, eio_sid: str, eio_pkt: eio_packet.Packet) -> bool:
        sink = self.sink(eio_sid)
        if sink is None:
            return False
        if eio_pkt.binary:
            sink.flush()
            return False
        written = sink.write(text_frame(eio_pkt.encode().encode()))
        if eio_pkt.packet_type == eio_packet.CLOSE:
            sink.flush()  # the websocket closes right after: nothing may stay behind
        return written


def broadcast(manager: Any, event: str, data: Any, namespace: str, room: Any, skip_sid: Any) -> list[str]:
    """Write one event to every local member of `room` through their sinks, the frame built once.

    Returns the Engine.IO ids of members without a direct sink: the caller sends to those the stock way.
    """
    args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
    members = manager.rooms.get(namespace, {}).get(room)
    if not members:
        return []
    skip = skip_sid if isinstance(skip_sid, list | tuple | set) else (skip_sid,)
    fast: FastPath = manager.server.fastpath
    frame: bytes | None = None
    fallback: list[str] = []
    for sid, eio_sid in members.items():
        if sid in skip:
            continue
        sink = fast.sink(eio_sid)
        if sink is None:
            fallback.append(eio_sid)
            continue
        if frame is None:
            frame = text_frame(encode_event(event, args, namespace))
        if not sink.write(frame, event, args, namespace):
            fallback.append(eio_sid)
    return fallback
