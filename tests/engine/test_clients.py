"""The engine with real, browser-like clients: the official socket.io-client (Node) and python-socketio's client.

These clients start on long-polling and upgrade, batch packets into one POST, and reassemble binary packets on
their own; what they see is what a browser would see.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import socketio

from chatwire.engine.eio import EngineConfig
from chatwire.engine.state import EioState
from tests.engine.harness import Engine, running_engine
from tests.nodeclient import NodeClient

CONFIG = EngineConfig(ping_interval_ms=400, ping_timeout_ms=1000)


@pytest.fixture
async def engine() -> Any:
    async with running_engine(CONFIG, connect_timeout_ms=5000) as running:
        yield running


async def node_client(engine: Engine, transports: list[str]) -> NodeClient:
    client = NodeClient(engine.url, path="/socket.io", transports=transports, join=False)
    await client.start(wait_joined=False)
    await client.wait_for(lambda line: line["type"] == "connect", 10)
    return client


async def test_polling_only_client_gets_every_batched_packet(engine: Engine) -> None:
    """socket.io-client batches what it buffered into one POST: 40 acked emits, over 16 in one payload."""
    client = await node_client(engine, ["polling"])
    try:
        assert await client.wait_event("auth") == {}
        assert client.proc is not None and client.proc.stdin is not None
        lines = [
            json.dumps({"emit": "message-with-ack", "data": i, "ack": True, "seq": 1000 + i})
            for i in range(40)
        ]
        client.proc.stdin.write(("\n".join(lines) + "\n").encode())
        await client.proc.stdin.drain()
        for i in range(40):
            seq = 1000 + i
            line = await client.wait_for(lambda ln: ln.get("seq") == seq, 10)  # noqa: B023 (awaited at once)
            assert line["type"] == "ack" and line["args"] == [i]
        assert max(engine.posts.counts) > 16, engine.posts.counts
        # the heartbeat (400 ms) kept the session alive through all of it
        await asyncio.sleep(1.0)
        assert await client.call("message-with-ack", "still") == "still"
    finally:
        await client.close()


async def test_client_upgrades_to_websocket_and_keeps_talking(engine: Engine) -> None:
    client = await node_client(engine, ["polling", "websocket"])
    try:
        assert await client.wait_event("auth") == {}
        for _ in range(100):
            if any(s.state is EioState.WEBSOCKET for s in engine.server.engine.sessions.values()):
                break
            await asyncio.sleep(0.05)
        assert [s.state for s in engine.server.engine.sessions.values()] == [EioState.WEBSOCKET]
        assert await client.call("message-with-ack", {"k": [1, 2]}) == {"k": [1, 2]}
        await client.emit("message", "hi")
        assert await client.wait_event("message-back") == "hi"
        await asyncio.sleep(1.0)  # several pings answered over WebSocket
        assert await client.call("message-with-ack", 7) == 7
    finally:
        await client.close()


async def test_invalid_namespace_reaches_the_client_as_connect_error(engine: Engine) -> None:
    client = NodeClient(f"{engine.url}/random", path="/socket.io", transports=["websocket"], join=False)
    await client.start(wait_joined=False)
    try:
        line = await client.wait_for(lambda ln: ln["type"] == "connect_error", 10)
        assert line["message"] == "Invalid namespace"
    finally:
        await client.close()


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]])
async def test_python_socketio_client(engine: Engine, transports: list[str]) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    sio.on("auth", lambda data: got.put_nowait(("auth", data)))
    sio.on("message-back", lambda *args: got.put_nowait(("message-back", args)))
    sio.on("heard", lambda text: got.put_nowait(("heard", text)))
    sio.on("question", lambda q: f"answer to {q}")
    await sio.connect(engine.url, socketio_path="/socket.io", transports=transports, auth={"token": "t"})
    try:
        assert await asyncio.wait_for(got.get(), 5) == ("auth", {"token": "t"})
        assert await sio.call("message-with-ack", "x", timeout=5) == "x"
        await sio.emit("message", (b"\x00\x01", {"nested": b"\xff"}, "text"))
        kind, args = await asyncio.wait_for(got.get(), 5)
        assert kind == "message-back" and args == (b"\x00\x01", {"nested": b"\xff"}, "text")
        assert await sio.call("ask", "why", timeout=5) == "answer to why"
        assert await sio.call("join", "room-a", timeout=5) == "joined"
        assert engine.server.emit("heard", "for room-a", to="room-a") == 1
        assert await asyncio.wait_for(got.get(), 5) == ("heard", "for room-a")
    finally:
        await sio.disconnect()
