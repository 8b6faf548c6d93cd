"""chatwire's own WebSocket server protocol for uvicorn: asyncio.Protocol outside, ASGI inside, coalesced writes.

uvicorn takes a protocol class through its public `ws=` option and hands it the upgraded connection (the raw
request bytes, then the socket). The opening handshake goes through the public Sans-I/O API of `websockets`
(`websockets.server.ServerProtocol`: request parsing, accept/reject, the HTTP response); once the 101 is sent that
object is dropped and the connection's frames are chatwire's own, both ways: incoming ones are parsed by
chatwire/engine/wsframes.py (an idle server's work is mostly one tiny pong frame per connection every ping
interval), outgoing ones are framed here. The ASGI app runs with the WebSocket scope.

What it adds over uvicorn's own protocols: every frame the app sends during one event-loop turn is buffered and the
whole buffer leaves in one `transport.write` at the end of the turn, so a fan-out that queues several frames for a
session costs one system call for that socket, not one per frame. The `chatwire.websocket.send_batch` extension
(advertised in the scope) lets the app hand a list of frames in one message; with `"flush": true` they are written
at once, so the frames after them take a write of their own. Backpressure both ways: when the
transport's buffer is above its high-water mark, `send` waits until it drains; when the app does not keep up with
received messages, reading from the socket pauses.

No WebSocket-level keepalive pings are sent (Engine.IO has its own heartbeat); a client's ping is answered with a
pong. No compression is negotiated (Node socket.io's default too). Closing follows RFC 6455 7.1 for a server: the
peer's close is echoed and TCP closed at once; ours waits CLOSE_TIMEOUT for the peer's answer; a protocol error
(1002, 1007, 1009) sends its close frame and closes TCP without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import traceback
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, cast
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from chatwire.engine.eio import DIRECT, SEND_BATCH, DirectConsumer, WebSocketClosedError
from chatwire.engine.wsframes import FrameError, FrameReader, close_frame, pong_frame

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
READ_HIGH = 64  # received messages queued for the app before reading from the socket pauses
READ_LOW = 16  # ... and resumes
# The same in bytes: a few large binary frames (attachments) pause reading as surely as many small messages do.
READ_HIGH_BYTES = 1 << 20
READ_LOW_BYTES = 256 << 10
EARLY_MAX = 1 << 20  # frame bytes a client may send before the app accepts; reading pauses past it
FLUSH_NOW = 256 * 1024  # bytes buffered within one turn that are written at once instead of at the turn's end
CLOSE_TIMEOUT = 5.0  # seconds to wait for the peer to end TCP after our close frame


WebSocketClosed = WebSocketClosedError  # `send` on a connection that is closed or closing (ASGI: an IOError)
_NO_OPTIONS: dict[str, Any] = {}  # the scope's extension entries that carry no options, one dict for all
_ASGI = {"version": "3.0", "spec_version": "2.4"}


_TEXT_FIN = 0x81  # FIN + opcode 1 (text)
_BINARY_FIN = 0x82  # FIN + opcode 2 (binary)


def frame_bytes(frame: str | bytes) -> bytes:
    """One unmasked, uncompressed, unfragmented server frame (text for str, binary for bytes), RFC 6455 5.2.

    Framed here rather than through websockets' `Frame.serialize` (a dataclass, a checks pass and a BytesIO per
    frame): a server frame is one header byte, the payload length in 7, 7+16 or 7+64 bits, and the payload.
    tests/engine/test_wsprotocol.py compares the two at each length form."""
    if isinstance(frame, str):
        payload = frame.encode()
        first = _TEXT_FIN
    else:
        payload = bytes(frame)
        first = _BINARY_FIN
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big") + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


class _FrameCache:
    """The engine appends the same frame object to every recipient's outbox: encode it once per broadcast."""

    __slots__ = ("data", "frame")

    def __init__(self) -> None:
        self.frame: str | bytes | None = None
        self.data = b""

    def encode(self, frame: str | bytes) -> bytes:
        if frame is not self.frame:
            constant = _ONE_CHAR.get(frame) if type(frame) is str and len(frame) == 1 else None
            if constant is not None:
                return constant  # a ping, pong, noop...: framed once for the process
            self.data = frame_bytes(frame)
            self.frame = frame
        return self.data


_ONE_CHAR = {c: frame_bytes(c) for c in "0123456"}  # Engine.IO's one-character packets


_cache = _FrameCache()


class EngineWebSocketProtocol(asyncio.Protocol):
    """One upgraded connection: handshake, frames in and out, close handshake, and the ASGI app's task.

    Built by uvicorn as `cls(config=..., server_state=..., app_state=...)`; uses `config.loaded_app`,
    `config.ws_max_size`, `config.root_path`, `server_state.connections/tasks/default_headers` (all public).

    It is also the DirectWebSocket of the engine's DIRECT extension (chatwire/engine/eio.py): synchronous writes,
    and text messages handed to an attached consumer before they are queued for the app."""

    __slots__ = (
        "accepted",
        "app",
        "app_state",
        "close_timer",
        "closed_sent",
        "consumer",
        "disconnect_code",
        "drain_waiter",
        "early",
        "flush_scheduled",
        "handshake_done",
        "head_tail",
        "inbox",
        "inbox_bytes",
        "inbox_waiter",
        "loop",
        "lost",
        "open",
        "out",
        "out_size",
        "reader",
        "reading_paused",
        "request",
        "response_start",
        "root_path",
        "server_state",
        "task",
        "transport",
        "writing_paused",
        "ws",
    )

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any] | None = None) -> None:
        self.app: Callable[..., Awaitable[None]] = config.loaded_app
        self.root_path: str = config.root_path
        self.server_state = server_state
        self.app_state = app_state if app_state is not None else {}
        # the opening handshake's sans-I/O object, dropped once the 101 is sent (kept after a refusal: it ends TCP)
        self.ws: ServerProtocol | None = ServerProtocol(max_size=config.ws_max_size)
        self.reader = FrameReader(config.ws_max_size)
        self.head_tail = b""  # the last bytes of an incomplete request, to find its end across chunks
        self.early: list[bytes] = []  # bytes after the request that arrived before the app accepted
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.accepted = False
        self.handshake_done = False  # accepted, or an HTTP response sent instead
        self.open = False  # accepted, and no close frame sent or received, nor the connection lost
        self.closed_sent = (
            False  # our close frame is sent (or the connection is done): no more frames from us
        )
        self.lost = False
        self.disconnect_code: int | None = None
        self.inbox: list[Message] = []  # a list: most connections hold nothing here for most of their life
        self.inbox_bytes = 0  # payload bytes of the messages in `inbox`
        self.inbox_waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.out: list[bytes] = []
        self.out_size = 0
        self.flush_scheduled = False
        self.response_start: Message | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.consumer: DirectConsumer | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # no isinstance check: uvloop's transports have the Transport methods without subclassing asyncio's
        self.transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.accepted:
            try:
                self.reader.feed(data, self)
            except FrameError as exc:
                self.fail(exc.code, exc.reason)
        elif self.request is None and self.ws is not None:
            self.receive_request(data)
        elif not self.handshake_done:
            self.hold(data)

    def receive_request(self, data: bytes) -> None:
        """Hand the sans-I/O layer the bytes up to the end of the request's headers (a handshake has no body), and
        keep what follows: those are frames, parsed by our reader once the app has accepted."""
        assert self.ws is not None
        seen = self.head_tail + data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            self.head_tail = seen[-3:]
            self.ws.receive_data(data)
        else:
            cut = end + 4 - len(self.head_tail)
            self.head_tail = b""
            self.ws.receive_data(data[:cut])
            if cut < len(data):
                self.hold(data[cut:])
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.start_app(event)
        self.pump()

    def hold(self, data: bytes) -> None:
        """Frames that arrived before the app accepted (or refused): they wait, and reading pauses past EARLY_MAX."""
        self.early.append(data)
        if sum(map(len, self.early)) > EARLY_MAX and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self.pump()
        else:  # the stream ended without a closing handshake (or after it): TCP closes, the app sees 1006
            self.reader.stop()
            self.open = False
            self.end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.open = False
        self.server_state.connections.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.disconnected(1006)
        self.release_drain()
        self.release_parser()
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.on_writable()  # what waited to be written learns that it never will be

    def release_parser(self) -> None:
        """Let the parsers end now, and free what they hold without waiting for the collector.

        Ours drops its buffered bytes. The handshake's sans-I/O object is only still here when the handshake did
        not complete (refused, or the connection lost before the app answered). Its parser is a generator whose frame refers back to the protocol object: a cycle, which the tuned collector
        (app.py `_tune_gc`) reaches rarely. When the stream ended in the middle (no closing handshake: a peer that
        drops the TCP connection, as a flooding client does) the parser keeps the error it stopped on, and that
        error's traceback keeps the parser's frame, with the last frame read (up to `ws_max_size` bytes) in its
        locals. Ending the stream here (idempotent) and clearing those frames' locals frees it at once. Even a
        clean close leaves the parser suspended at its last `yield`, still holding the protocol object: closing the
        generator ends that cycle too (nothing steps it again once the stream has ended)."""
        self.reader.stop()
        self.early = []
        self.out.clear()
        ws = self.ws
        if ws is None:
            return
        ws.receive_eof()
        ws.parser.close()
        if ws.state is State.CLOSED:
            cause = ws.close_exc.__cause__
            if cause is not None and cause.__traceback__ is not None:
                traceback.clear_frames(cause.__traceback__)
                cause.__traceback__ = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.release_drain()
        if self.consumer is not None:
            self.consumer.on_writable()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close an open WebSocket with 1012 (service restart), anything else at once."""
        if self.open:
            self.send_close(1012, "server shutdown")
        elif self.transport is not None:
            self.transport.close()

    # --- incoming (the FrameSink of our reader) ----------------------------------------------------------------------
    def on_text(self, text: str) -> None:
        if self.closed_sent:
            return  # the app has closed: it reads nothing but the disconnect from now on
        consumer = self.consumer
        if consumer is not None and consumer.receive_now(text):
            return
        self.enqueue({"type": "websocket.receive", "text": text}, len(text))  # as `receive` subtracts it

    def on_binary(self, data: bytes) -> None:
        if not self.closed_sent:
            self.enqueue({"type": "websocket.receive", "bytes": data}, len(data))

    def on_ping(self, payload: bytes) -> None:
        if not self.closed_sent:
            self.buffer(pong_frame(payload))

    def on_pong(self, payload: bytes) -> None:
        """An unsolicited pong (we send no pings): nothing to do (RFC 6455 5.5.3)."""

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        """The peer's close: echo it unless ours went first, then close TCP (a server does not wait)."""
        self.open = False
        if not self.closed_sent:
            self.closed_sent = True
            self.buffer(bytes((0x88, len(payload))) + payload)
        self.disconnected(code)
        self.end()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame with `code` unless one went out, then close TCP."""
        self.reader.stop()
        self.open = False
        if not self.closed_sent:
            self.closed_sent = True
            self.buffer(close_frame(code, reason))
        self.disconnected(code)
        self.end()

    def enqueue(self, message: Message, size: int = 0) -> None:
        if self.disconnect_code is not None:
            return
        self.inbox.append(message)
        self.inbox_bytes += size
        waiter = self.inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        full = len(self.inbox) >= READ_HIGH or self.inbox_bytes >= READ_HIGH_BYTES
        if full and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def drop_inbox(self) -> None:
        """The app closed: what it had not read yet is thrown away, and reading resumes so that the close
        handshake completes and what the peer still sends is discarded as it arrives (`deliver`)."""
        self.inbox.clear()
        self.inbox_bytes = 0
        if self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()

    def disconnected(self, code: int) -> None:
        if self.disconnect_code is not None:
            return
        self.inbox.append({"type": "websocket.disconnect", "code": code})
        self.disconnect_code = code
        waiter = self.inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        """ASGI receive: `websocket.connect`, then each message, then `websocket.disconnect` (repeated after that)."""
        while not self.inbox:
            if self.disconnect_code is not None:
                return {"type": "websocket.disconnect", "code": self.disconnect_code}
            waiter = self.loop.create_future()
            self.inbox_waiter = waiter
            try:
                await waiter
            finally:
                self.inbox_waiter = None
        message = self.inbox.pop(0)
        if message["type"] == "websocket.receive":
            data = message.get("bytes")
            self.inbox_bytes -= len(data) if data is not None else len(message.get("text") or "")
        if (
            self.reading_paused
            and len(self.inbox) <= READ_LOW
            and self.inbox_bytes <= READ_LOW_BYTES
            and self.transport is not None
            and not self.lost
        ):
            self.reading_paused = False
            self.transport.resume_reading()
        return message

    # --- outgoing ------------------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Move what the handshake's sans-I/O layer wants written (its response, or a refusal and the end of TCP)."""
        if self.ws is None:
            return
        for data in self.ws.data_to_send():
            if data:
                self.buffer(data)
            else:  # end of stream: a server closes TCP once the close handshake (or a refusal) is done
                self.flush()
                if self.transport is not None:
                    self.transport.close()
                return
        if self.ws.close_expected() and self.close_timer is None and not self.lost:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.abort)
        self.flush()

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake: our close frame leaves now; TCP closes when the peer answers with its own
        (`on_close`), or CLOSE_TIMEOUT later."""
        data = close_frame(code, reason)
        self.open = False
        self.closed_sent = True
        self.buffer(data)
        self.flush()
        if self.close_timer is None and not self.lost:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def end(self) -> None:
        """Write what is buffered, then close TCP."""
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def buffer(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size >= FLUSH_NOW:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Everything buffered this turn leaves in one write."""
        self.flush_scheduled = False
        if not self.out:
            return
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()  # emptied in place: a new list per write would outlive young collections until the next one
        self.out_size = 0
        self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.lost and not transport.is_closing():
            transport.write(data)

    def release_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        while self.writing_paused and not self.lost:
            waiter = self.drain_waiter
            if waiter is None or waiter.done():
                waiter = self.drain_waiter = self.loop.create_future()
            await waiter

    # --- DirectWebSocket (the engine's DIRECT extension) -------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.open and not self.writing_paused

    def write_frames(self, frames: Sequence[Any], flush: bool = False) -> None:
        if not self.open:
            raise WebSocketClosed("websocket is closed")
        encode = _cache.encode
        if flush:  # written now: nothing to schedule for the end of the turn
            out = self.out
            if not out and len(frames) == 1:  # the common write (one event to a room of tabs): no list at all
                data = encode(frames[0])
                transport = self.transport
                if transport is not None and not self.lost and not transport.is_closing():
                    transport.write(data)
                return
            for frame in frames:
                data = encode(frame)
                out.append(data)
                self.out_size += len(data)
            self.flush()
            return
        for frame in frames:
            self.buffer(encode(frame))

    def close(self, code: int) -> None:
        if self.open:
            self.send_close(code)
            self.drop_inbox()
            self.disconnected(code)

    def attach(self, consumer: DirectConsumer | None) -> None:
        self.consumer = consumer

    async def send(self, message: Message) -> None:
        """ASGI send, plus `chatwire.websocket.send_batch` ({"frames": [str | bytes, ...]})."""
        kind = message["type"]
        if kind == "websocket.send" and self.accepted:
            text = message.get("text")
            self.write_frames([text if text is not None else bytes(message.get("bytes") or b"")])
            if self.writing_paused:
                await self.drain()
        elif kind == SEND_BATCH and self.accepted:
            self.write_frames(list(message["frames"]))
            if message.get("flush"):
                self.flush()  # these frames end a write; what comes next starts another
            if self.writing_paused:
                await self.drain()
        elif kind == "websocket.accept" and not self.handshake_done:
            self.accept(message)
        elif kind == "websocket.close":
            if not self.handshake_done:
                self.refuse(http.HTTPStatus.FORBIDDEN, "WebSocket connection refused\n")
            elif self.open:
                code = int(message.get("code") or 1000)
                self.send_close(code, str(message.get("reason") or ""))
                self.drop_inbox()
                self.disconnected(code)
            else:
                raise WebSocketClosed("websocket is closed")
        elif (
            kind == "websocket.http.response.start"
            and not self.handshake_done
            and self.response_start is None
        ):
            self.response_start = message
        elif (
            kind == "websocket.http.response.body"
            and self.response_start is not None
            and not self.handshake_done
        ):
            if not message.get("more_body", False):
                start = self.response_start
                status = int(start["status"])
                headers = Headers(
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
                )
                body = bytes(message.get("body") or b"")
                headers["Content-Length"] = str(len(body))
                headers["Connection"] = "close"
                self.respond(Response(status, _phrase(status), headers, body))
        elif self.lost or self.closed_sent:
            raise WebSocketClosed("websocket is closed")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in this websocket state")

    def accept(self, message: Message) -> None:
        assert self.request is not None and self.ws is not None
        response = self.ws.accept(self.request)
        if response.status_code == 101:
            subprotocol = message.get("subprotocol")
            if subprotocol:
                response.headers["Sec-WebSocket-Protocol"] = subprotocol
            for name, value in message.get("headers") or []:
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
            self.accepted = True
        self.respond(response)
        if not self.accepted:
            self.disconnected(1006)
            return
        # From here on the frames are ours: the handshake's object goes (its parser, a generator, ends now, so no
        # cycle waits for the collector), and frames the client sent early are parsed.
        assert self.ws is not None
        self.ws.parser.close()
        self.ws = None
        self.request = None
        self.open = not self.lost
        early, self.early = self.early, []
        if self.reading_paused and self.transport is not None and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()
        for data in early:
            self.data_received(data)

    def refuse(self, status: http.HTTPStatus, body: str) -> None:
        """An HTTP response instead of the upgrade (the app refused it, or failed before answering)."""
        assert self.ws is not None
        self.respond(self.ws.reject(status, body))

    def respond(self, response: Response) -> None:
        for name, value in self.server_state.default_headers:
            key = name.decode("latin-1")
            if key.lower() not in ("date",) and key not in response.headers:
                response.headers[key] = value.decode("latin-1")
        if "Date" not in response.headers:
            response.headers["Date"] = email.utils.formatdate(usegmt=True)
        self.handshake_done = True
        assert self.ws is not None
        self.ws.send_response(response)
        if response.status_code != 101:
            self.disconnected(1006)
        self.pump()

    # --- the app -------------------------------------------------------------------------------------------------
    def start_app(self, request: Request) -> None:
        self.request = request
        assert self.transport is not None
        raw_path, _, query = request.path.partition("?")
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.raw_items()
        ]
        subprotocols = [
            p.strip()
            for v in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in v.split(",")
            if p.strip()
        ]
        path = unquote(raw_path)
        root = self.root_path
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": _ASGI,
            "http_version": "1.1",
            "scheme": "wss" if self.transport.get_extra_info("sslcontext") else "ws",
            "server": _address(self.transport.get_extra_info("sockname")),
            "client": _address(self.transport.get_extra_info("peername")),
            "root_path": root,
            "path": root + path,
            "raw_path": (root + raw_path).encode(),
            "query_string": query.encode(),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": dict(self.app_state),
            "extensions": {"websocket.http.response": _NO_OPTIONS, SEND_BATCH: _NO_OPTIONS, DIRECT: self},
        }
        self.inbox.append({"type": "websocket.connect"})
        self.task = self.loop.create_task(self.run_app(scope))
        self.server_state.tasks.add(self.task)
        self.task.add_done_callback(self.server_state.tasks.discard)

    async def run_app(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self.receive, self.send)
        except Exception:
            log.exception("exception in the ASGI websocket app")
            if not self.handshake_done:
                self.refuse(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            elif self.open:
                self.send_close(1011)
            return
        if not self.handshake_done:
            self.refuse(http.HTTPStatus.FORBIDDEN, "WebSocket connection refused\n")
        elif self.open:
            self.send_close(1000)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


__all__ = ["SEND_BATCH", "EngineWebSocketProtocol", "WebSocketClosed", "frame_bytes"]
