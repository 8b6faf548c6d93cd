"""chatwire's WebSocket protocol class (chatwire/engine/wsprotocol.py) on its own, and the public interfaces it uses.

The protocol runs on a recording transport (every `write` kept, so the number of writes is exact) and is spoken to
by websockets' own Sans-I/O *client* (`ClientProtocol`), which masks, fragments and parses as a real peer does.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from chatwire.engine.eio import SEND_BATCH
from chatwire.engine.wsframes import FrameReader
from chatwire.engine.wsprotocol import READ_HIGH, EngineWebSocketProtocol, frame_bytes

Message = dict[str, Any]


class RecordingTransport(asyncio.Transport):
    """A transport that keeps every write and every pause/resume/close call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.paused_reading = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused_reading = True

    def resume_reading(self) -> None:
        self.paused_reading = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class Peer:
    """The protocol under test, its transport, and a websockets client on the other end."""

    def __init__(
        self, app: Any, *, max_size: int = 1 << 20, path: str = "/socket.io/?EIO=4", subprotocols: Any = None
    ) -> None:
        self.transport = RecordingTransport()
        self.state = SimpleNamespace(connections=set(), tasks=set(), default_headers=[(b"server", b"test")])
        config = SimpleNamespace(loaded_app=app, ws_max_size=max_size, root_path="")
        self.protocol = EngineWebSocketProtocol(config=config, server_state=self.state, app_state={})
        self.protocol.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8000" + path), subprotocols=subprotocols)
        self.read = 0
        self.response: Response | None = None
        self.events: list[Any] = []

    def handshake(self) -> None:
        request = self.client.connect()
        self.client.send_request(request)
        self.push()

    def push(self) -> None:
        """Client bytes to the server."""
        for data in self.client.data_to_send():
            if data:
                self.protocol.data_received(data)

    def pull(self) -> list[Any]:
        """Server bytes written since the last pull, parsed by the client; returns the new events."""
        for data in self.transport.writes[self.read :]:
            self.client.receive_data(data)
        self.read = len(self.transport.writes)
        new = self.client.events_received()
        for event in new:
            if isinstance(event, Response):
                self.response = event
        self.events += new
        return new

    def texts(self) -> list[str]:
        return [
            bytes(e.data).decode() for e in self.events if isinstance(e, Frame) and e.opcode is Opcode.TEXT
        ]


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def recorder(script: Any) -> tuple[list[Message], Any]:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await script(scope, receive, send, seen)

    return seen, app


async def echo(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
    while True:
        msg = await receive()
        seen.append(msg)
        if msg["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", **{k: v for k, v in msg.items() if k in ("text", "bytes")}})


async def test_handshake_builds_the_asgi_scope_and_answers_101_with_the_chosen_subprotocol() -> None:
    seen, app = recorder(echo)
    peer = Peer(app, path="/socket.io/caf%C3%A9?EIO=4&transport=websocket", subprotocols=["chat", "other"])
    peer.handshake()
    await turns()
    peer.pull()
    assert peer.response is not None and peer.response.status_code == 101
    assert peer.client.state is State.OPEN  # the client checked Sec-WebSocket-Accept
    assert peer.response.headers["Sec-WebSocket-Protocol"] == "chat"
    assert peer.response.headers["server"] == "test"
    scope = seen[0]
    assert scope["type"] == "websocket" and scope["path"] == "/socket.io/café"
    assert scope["query_string"] == b"EIO=4&transport=websocket"
    assert scope["subprotocols"] == ["chat", "other"]
    assert scope["client"] == ("127.0.0.1", 50000) and scope["scheme"] == "ws"
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert SEND_BATCH in scope["extensions"] and "websocket.http.response" in scope["extensions"]
    assert peer.protocol in peer.state.connections


async def test_a_refused_handshake_is_403_and_the_http_response_extension_sends_its_own_status() -> None:
    async def refuse(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    peer = Peer(recorder(refuse)[1])
    peer.handshake()
    await turns()
    peer.pull()
    assert peer.response is not None and peer.response.status_code == 403 and peer.transport.closed

    async def teapot(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 400, "headers": [(b"x-why", b"bad")]})
        await send({"type": "websocket.http.response.body", "body": b'{"code":3}'})

    peer = Peer(recorder(teapot)[1])
    peer.handshake()
    await turns()
    peer.pull()
    assert peer.response is not None and peer.response.status_code == 400
    assert peer.response.body == b'{"code":3}' and peer.response.headers["x-why"] == "bad"
    assert peer.transport.closed


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 16])
async def test_a_request_in_any_chunks_with_frames_right_behind_it_is_parsed_once_accepted(
    chunk: int,
) -> None:
    """The request's end may straddle chunks, and a client may send frames before the 101: those wait for the
    app's accept and are then read as frames, not handed to the handshake parser."""
    seen, app = recorder(echo)
    peer = Peer(app)
    peer.client.send_request(peer.client.connect())
    request = b"".join(peer.client.data_to_send())
    frames = Frame(Opcode.TEXT, b"early").serialize(mask=True) + Frame(Opcode.BINARY, b"\x01").serialize(
        mask=True
    )
    stream = request + frames
    for pos in range(0, len(stream), chunk):
        peer.protocol.data_received(stream[pos : pos + chunk])
    await turns()
    assert {"type": "websocket.receive", "text": "early"} in seen
    assert {"type": "websocket.receive", "bytes": b"\x01"} in seen
    peer.pull()
    assert peer.response is not None and peer.response.status_code == 101
    assert peer.texts() == ["early"]


async def test_fragmented_messages_reach_the_app_whole() -> None:
    seen, app = recorder(echo)
    peer = Peer(app)
    peer.handshake()
    await turns()
    peer.pull()
    peer.client.send_text(b"hel", fin=False)
    peer.client.send_continuation(b"lo ", fin=False)
    peer.client.send_continuation("wörld".encode(), fin=True)
    peer.client.send_binary(b"\x00\x01", fin=False)
    peer.client.send_continuation(b"\x02", fin=True)
    peer.push()
    await turns()
    assert {"type": "websocket.receive", "text": "hello wörld"} in seen
    assert {"type": "websocket.receive", "bytes": b"\x00\x01\x02"} in seen
    peer.pull()
    assert peer.texts() == ["hello wörld"]


async def test_close_codes_both_ways() -> None:
    seen, app = recorder(echo)
    peer = Peer(app)
    peer.handshake()
    await turns()
    peer.pull()
    peer.client.send_close(4001, "bye")
    peer.push()
    await turns()
    assert seen[-1] == {"type": "websocket.disconnect", "code": 4001}
    peer.pull()
    close = [Close.parse(e.data) for e in peer.events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert [c.code for c in close] == [4001]  # echoed, then the server ends TCP
    assert peer.transport.closed

    async def closer(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4002, "reason": "done"})
        with pytest.raises(OSError):
            await send({"type": "websocket.send", "text": "too late"})
        seen.append(await receive())

    seen, app = recorder(closer)
    peer = Peer(app)
    peer.handshake()
    await turns()
    peer.pull()
    close = [Close.parse(e.data) for e in peer.events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert [(c.code, c.reason) for c in close] == [(4002, "done")]
    assert seen[-1] == {"type": "websocket.disconnect", "code": 4002}


async def test_a_ping_gets_a_pong_with_its_payload() -> None:
    peer = Peer(recorder(echo)[1])
    peer.handshake()
    await turns()
    peer.pull()
    peer.client.send_ping(b"are you there")
    peer.push()
    await turns()
    pongs = [bytes(e.data) for e in peer.pull() if isinstance(e, Frame) and e.opcode is Opcode.PONG]
    assert pongs == [b"are you there"]


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_over_the_max_size_closes_with_1009(fragmented: bool) -> None:
    seen, app = recorder(echo)
    peer = Peer(app, max_size=1000)
    peer.handshake()
    await turns()
    peer.pull()
    if fragmented:
        peer.client.send_text(b"x" * 600, fin=False)
        peer.client.send_continuation(b"x" * 600, fin=True)
    else:
        peer.client.send_text(b"x" * 1001)
    peer.push()
    await turns()
    peer.pull()
    close = [Close.parse(e.data) for e in peer.events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert [c.code for c in close] == [1009]
    assert seen[-1] == {"type": "websocket.disconnect", "code": 1009}
    assert not any(m.get("text") for m in seen[1:])


async def test_invalid_utf8_in_a_text_frame_closes_with_1007() -> None:
    seen, app = recorder(echo)
    peer = Peer(app)
    peer.handshake()
    await turns()
    peer.pull()
    peer.client.send_text(b"\xff\xfe")
    peer.push()
    await turns()
    peer.pull()
    close = [Close.parse(e.data) for e in peer.events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert [c.code for c in close] == [1007]
    assert seen[-1] == {"type": "websocket.disconnect", "code": 1007}


async def test_frames_sent_in_one_loop_turn_leave_in_one_write() -> None:
    async def burst(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # "go"
        for i in range(50):
            await send({"type": "websocket.send", "text": f"4frame {i}"})
        await send({"type": "websocket.send", "bytes": b"\x00\x01"})
        await receive()  # "batch"
        await send({"type": SEND_BATCH, "frames": ["4a", b"\x02", "4b"]})
        await receive()  # "alone"
        await send({"type": SEND_BATCH, "frames": ["40reply"], "flush": True})  # written at once, on its own
        await send({"type": SEND_BATCH, "frames": ["42auth"]})
        await send({"type": "websocket.send", "text": "42next"})
        await receive()

    peer = Peer(recorder(burst)[1])
    peer.handshake()
    await turns()
    peer.pull()
    peer.client.send_text(b"go")
    peer.push()
    await turns()
    before = len(peer.transport.writes)
    peer.pull()
    assert len(peer.transport.writes) - before == 0  # pull only reads
    assert peer.texts() == [f"4frame {i}" for i in range(50)]
    # the handshake response was one write, the 51 frames one more
    assert len(peer.transport.writes) == 2
    peer.client.send_text(b"batch")
    peer.push()
    await turns()
    peer.pull()
    assert len(peer.transport.writes) == 3
    assert peer.texts()[-2:] == ["4a", "4b"]
    peer.client.send_text(b"alone")
    peer.push()
    await turns()
    peer.pull()
    assert len(peer.transport.writes) == 5  # the flushed batch, then the two frames after it together
    assert peer.transport.writes[3] == frame_bytes("40reply")
    assert peer.texts()[-3:] == ["40reply", "42auth", "42next"]


async def test_backpressure_send_waits_while_writing_is_paused_and_reading_pauses_when_the_app_lags() -> None:
    sent: list[int] = []
    go = asyncio.Event()

    async def slow(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(3):
            await send({"type": "websocket.send", "text": f"4m{i}"})
            sent.append(i)
        await go.wait()  # does not read while the client floods it
        while (await receive())["type"] != "websocket.disconnect":
            pass

    peer = Peer(recorder(slow)[1])
    peer.protocol.pause_writing()  # the transport's buffer is over its high-water mark
    peer.handshake()
    await turns(5)
    assert sent == []  # the first send is buffered, then waits for the drain
    peer.protocol.resume_writing()
    await turns(5)
    assert sent == [0, 1, 2]
    peer.pull()
    assert peer.texts() == ["4m0", "4m1", "4m2"]
    for i in range(READ_HIGH + 5):
        peer.client.send_text(f"4in{i}".encode())
    peer.push()
    assert peer.transport.paused_reading  # the app has not read: the socket is not read either
    go.set()
    await turns(10)
    assert not peer.transport.paused_reading


async def test_an_app_crash_after_accept_closes_with_1011() -> None:
    async def crash(scope: Message, receive: Any, send: Any, seen: list[Message]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise RuntimeError("boom")

    peer = Peer(recorder(crash)[1])
    peer.handshake()
    await turns()
    peer.pull()
    close = [Close.parse(e.data) for e in peer.events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert [c.code for c in close] == [1011]


@pytest.mark.parametrize("ending", ["eof", "reset"])
async def test_a_connection_dropped_without_the_closing_handshake_frees_its_frames_without_the_collector(
    ending: str,
) -> None:
    """A peer that drops TCP in the middle of a large frame: the protocol object, its frame reader and the bytes
    it buffered go by reference counting alone (the collector runs rarely, app.py `_tune_gc`; issue 21)."""
    big = 600_000

    def alive() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, EngineWebSocketProtocol | FrameReader))

    # an app that keeps no scope (the scope's extensions refer to the protocol object)
    async def sink(scope: Message, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    gc.collect()
    gc.disable()
    try:
        peer = Peer(sink)
        peer.handshake()
        await turns()
        peer.pull()
        peer.client.send_binary(b"z" * big)
        peer.client.send_binary(b"y" * big)
        data = b"".join(peer.client.data_to_send())
        peer.protocol.data_received(data[: len(data) - big // 2])  # the second frame, half of it
        await turns()
        reader = peer.protocol.reader
        assert reader.pending_size > big // 2  # buffered, waiting for the rest
        if ending == "eof":
            peer.protocol.eof_received()
        peer.protocol.connection_lost(None)
        await turns()
        assert reader.pending == [] and reader.closed
        del peer, reader
        assert alive() == 0
    finally:
        gc.enable()


def test_the_public_interfaces_the_protocol_relies_on() -> None:
    """Fails when a relied-on public interface of websockets or uvicorn changes (names, parameters, behaviour)."""
    params = inspect.signature(ServerProtocol.__init__).parameters
    assert params["max_size"].kind is inspect.Parameter.KEYWORD_ONLY
    for name in ("receive_data", "receive_eof", "events_received", "data_to_send", "close_expected"):
        assert callable(getattr(ServerProtocol, name))
    # its parser is a generator (closed once the handshake is done, or the stream has ended, to end its cycle)
    assert inspect.isgenerator(ServerProtocol().parser)
    for name in ("accept", "reject", "send_response", "send_close", "fail"):
        assert callable(getattr(ServerProtocol, name))
    assert list(inspect.signature(Frame.serialize).parameters)[:3] == ["self", "mask", "extensions"]
    # behaviour: an unmasked text frame is opcode 0x81, a 7-bit length, the payload
    assert frame_bytes("4hi") == b"\x81\x034hi" and frame_bytes(b"\x00") == b"\x82\x01\x00"
    assert Close.parse(Close(4001, "x").serialize()).code == 4001
    headers = Headers([("A", "1"), ("a", "2")])
    assert headers.get_all("a") == ["1", "2"] and list(headers.raw_items()) == [("A", "1"), ("a", "2")]
    request = Request("/p?q", Headers())
    assert request.path == "/p?q"
    server = ServerProtocol(max_size=10)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(server.events_received()[0], Request)
    assert server.reject(403, "no").status_code == 403
    assert hasattr(server, "close_sent") and server.state is State.CONNECTING
    # an end of stream in the middle: the parser's error is the cause of `close_exc`, with its traceback
    client = ClientProtocol(parse_uri("ws://x/"))
    client.send_request(client.connect())
    server = ServerProtocol()
    server.receive_data(b"".join(client.data_to_send()))
    server.send_response(server.accept(server.events_received()[0]))
    assert server.state is State.OPEN
    server.receive_eof()
    server.receive_eof()  # idempotent
    cause = server.close_exc.__cause__
    assert server.state is State.CLOSED and isinstance(cause, EOFError) and cause.__traceback__ is not None
    # uvicorn: a protocol class passed as `ws` is used as is, built with these keyword arguments
    config = uvicorn.Config(lambda *a: None, ws=EngineWebSocketProtocol)
    config.load()
    assert config.ws_protocol_class is EngineWebSocketProtocol
    assert isinstance(config.ws_max_size, int) and isinstance(config.root_path, str)
    assert config.loaded_app is not None
    state = ServerState()
    assert isinstance(state.connections, set) and isinstance(state.tasks, set)
    assert isinstance(state.default_headers, list)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_hand_framed_server_frames_are_what_websockets_serializes(length: int) -> None:
    """frame_bytes frames by hand; websockets' own serializer is the reference at the 7-, 16- and 64-bit length
    forms and at their edges, for text (lengths count UTF-8 bytes, not characters) and binary payloads."""
    text = ("é" * (length // 2) + "x" * (length % 2)) if length else ""
    assert len(text.encode()) == length
    assert frame_bytes(text) == Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    data = bytes(i % 251 for i in range(length))
    assert frame_bytes(data) == Frame(Opcode.BINARY, data).serialize(mask=False)
    assert frame_bytes(bytearray(data)) == frame_bytes(data)
