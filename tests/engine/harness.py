"""Run chatwire's engine in-process on a free port and talk to it with raw clients (httpx, Node `ws`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from chatwire.engine.eio import EngineConfig
from chatwire.engine.reference import REFERENCE_CONFIG, build
from chatwire.engine.server import ConnectionRefused, Socket, SocketServer
from chatwire.engine.wsprotocol import EngineWebSocketProtocol
from tests.conftest import free_port, requirement_missing

WS_DRIVER = Path(__file__).parents[1] / "node" / "ws_frames.mjs"


@dataclass
class Engine:
    """A running reference server (plus the test-only handlers below)."""

    server: SocketServer
    port: int
    posts: PostCounter

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def eio(self, transport: str = "polling", sid: str | None = None, scheme: str = "http") -> str:
        query = f"EIO=4&transport={transport}" + (f"&sid={sid}" if sid else "")
        return f"{scheme}://127.0.0.1:{self.port}/socket.io/?{query}"

    def ws(self, sid: str | None = None) -> str:
        return self.eio("websocket", sid, "ws")

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10)

    async def handshake(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """Open a long-polling session; returns the decoded open packet."""
        r = await client.get(self.eio())
        assert r.status_code == 200, r.text
        assert r.text.startswith("0")
        return json.loads(r.text[1:])  # type: ignore[no-any-return]


def add_test_handlers(server: SocketServer) -> None:
    """Handlers beyond the suite's: rooms, server-to-client acks, and one that crashes."""
    main = server.of("/")

    @main.on("join")
    def join(socket: Socket, room: str) -> str:
        socket.join(room)
        return "joined"

    @main.on("shout")
    def shout(socket: Socket, room: str, text: str) -> int:
        return main.emit("heard", text, to=room, skip=socket.sid)

    @main.on("ask")
    async def ask(socket: Socket, question: str) -> Any:
        return await socket.call("question", question, timeout=5)

    @main.on("boom")
    def boom(socket: Socket) -> None:
        raise RuntimeError("handler failure, on purpose")

    @main.on("leave-me")
    def leave_me(socket: Socket) -> None:
        socket.disconnect()

    private = server.of("/private")

    @private.on("connect")
    async def refuse(socket: Socket, auth: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        socket.emit("never-seen")  # held until CONNECT, and dropped with the refusal
        if auth.get("key") == "open":
            return True
        if auth.get("key") == "quiet":
            return False
        raise ConnectionRefused("nope", {"why": 1})


class PostCounter:
    """ASGI middleware in front of the engine: how many Engine.IO packets each long-polling POST carried."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def counting_receive() -> Any:
            msg = await receive()
            if msg["type"] == "http.request":
                body.extend(msg.get("body", b""))
                if not msg.get("more_body"):
                    self.counts.append(body.count(b"\x1e") + 1)
            return msg

        await self.app(scope, counting_receive, send)


@contextlib.asynccontextmanager
async def running_engine(
    config: EngineConfig = REFERENCE_CONFIG, connect_timeout_ms: int = 1000, ws: str | None = None
) -> AsyncIterator[Engine]:
    """The engine on uvicorn; `ws` None means chatwire's own WebSocket protocol (CHATWIRE_ENGINE_WS=auto|wsproto|...
    runs the whole directory on one of uvicorn's instead)."""
    chosen = ws or os.environ.get("CHATWIRE_ENGINE_WS", "chatwire")
    protocol: Any = EngineWebSocketProtocol if chosen == "chatwire" else chosen
    server = build(config, connect_timeout_ms)
    add_test_handlers(server)
    port = free_port()
    posts = PostCounter(server.asgi)
    uv = uvicorn.Server(
        uvicorn.Config(posts, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws=protocol)
    )
    task = asyncio.create_task(uv.serve())
    for _ in range(500):
        if uv.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield Engine(server, port, posts)
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)


async def ws_frames(
    url: str, steps: list[dict[str, Any]], *, autopong: bool = False, linger: int = 3000
) -> list[dict[str, Any]]:
    """Run tests/node/ws_frames.mjs (a Node `ws` client) to completion; every frame and the close, in order."""
    node = shutil.which("node")
    if node is None or not (WS_DRIVER.parent / "node_modules" / "ws").exists():
        requirement_missing("node with tests/node/node_modules (make node installs them)")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node,
        str(WS_DRIVER),
        json.dumps({"url": url, "steps": steps, "autopong": autopong, "linger": linger}),
        stdout=asyncio.subprocess.PIPE,
        cwd=str(WS_DRIVER.parent),
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), linger / 1000 + 20)
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (polling the server's state) until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def texts(events: list[dict[str, Any]], *, pings: bool = False) -> list[str]:
    """The text frames received, without Engine.IO pings unless asked."""
    return [e["data"] for e in events if e["type"] == "text" and (pings or e["data"] != "2")]


def closed(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in events if e["type"] == "close"), None)
