"""A client that never reads: the server's memory stays bounded, the client is told to reload, others keep up.

A raw websocket client completes the Engine.IO/Socket.IO handshake and joins its user room, then stops reading
(a tiny receive buffer, no reads) while large chat deltas stream to that room. A second session of the same user
reads normally. The server is a real process, so its RSS is what an operator would see.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from chatwire.client import ChatwireClient, ChatwireHTTP
from tests.process import serve_process

pytestmark = pytest.mark.e2e

DELTA_BYTES = 128 * 1024
DELTAS = 400  # 51 MB through the user room
BACKLOG_BYTES = 1 << 20
# What the stalled session may cost: its 1 MB backlog, the 64 KB high-water mark, the recovery history
# (20 events of 128 KB) and allocator slack. Without the bound, the backlog alone would hold the 51 MB answer twice
# (merged frame and merged content).
RSS_GROWTH_BOUND = 32 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def raw_session(port: int, token: str) -> ClientConnection:
    """Handshake as a browser tab would (CONNECT with a token, then user-join), over a socket with a tiny buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/socket.io/?EIO=4&transport=websocket",
        sock=sock,
        max_queue=1,
        max_size=None,
        compression=None,
    )
    opened = await ws.recv()
    assert str(opened).startswith("0{"), opened
    await ws.send("40" + orjson.dumps({"token": token}).decode())
    connected = await ws.recv()
    assert str(connected).startswith("40{"), connected
    await ws.send("420" + orjson.dumps(["user-join", {"auth": {"token": token}}]).decode())
    while True:
        reply = str(await ws.recv())
        if reply == "2":
            await ws.send("3")
        elif reply.startswith("430"):
            assert "error" not in reply, reply
            return ws


async def read_until_reload(ws: ClientConnection, timeout: float) -> list[Any]:
    """Resume reading (answering pings) until `chat:reload` arrives; returns the events seen."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = str(await ws.recv())
            if frame == "2":
                await ws.send("3")
                continue
            if frame.startswith("42"):
                event = orjson.loads(frame[2:])
                seen.append(event)
                if event[0] == "events" and event[1].get("data", {}).get("type") == "chat:reload":
                    return seen


async def test_never_reading_client_bounded_memory_reload_and_others_unaffected(tmp_path: Path) -> None:
    env = {
        "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
        "CHATWIRE_SLOW_READER_BACKLOG_BYTES": str(BACKLOG_BYTES),
        "CHATWIRE_RECOVERY_HISTORY_SIZE": "20",
        "CHATWIRE_LOG_LEVEL": "WARNING",
    }
    async with serve_process(tmp_path, env) as server:
        async with ChatwireHTTP(server.url) as rest:
            user = await rest.signup("Ada", "ada@example.com", "pw-secret-1")
            stalled = await raw_session(server.port, user["token"])
            chat_id = "local:" + uuid.uuid4().hex
            async with ChatwireClient(server.url, user["token"], reconnection=False) as reader:
                chat = reader.track(chat_id)
                await rest.emit_event(chat_id, "m1", "chat:message:delta", {"content": "warm-up "})
                await reader.wait_for(lambda: "m1" in chat.messages, 10)
                before = rss(server.proc.pid)
                peak = before
                piece = "x" * (DELTA_BYTES - 1) + " "
                for i in range(DELTAS):
                    await rest.emit_event(chat_id, "m1", "chat:message:delta", {"content": piece})
                    if i % 20 == 0:
                        peak = max(peak, rss(server.proc.pid))
                expected = len("warm-up ") + DELTAS * DELTA_BYTES
                # The reading session gets every delta while the other one is stalled.
                await reader.wait_for(lambda: len(chat.messages["m1"].get("content", "")) == expected, 60)
                peak = max(peak, rss(server.proc.pid))
                assert peak - before < RSS_GROWTH_BOUND, f"RSS grew {(peak - before) >> 20} MB"
            # The stalled session, once it reads again, is told to reload instead of replaying 51 MB.
            seen = await read_until_reload(stalled, 60)
            delivered = sum(
                len(e[1]["data"]["data"].get("content", ""))
                for e in seen
                if e[0] == "events" and e[1].get("data", {}).get("type") == "chat:message:delta"
            )
            assert delivered < expected
            await stalled.close()
        assert "slow reader: backlog dropped" in server.log()
