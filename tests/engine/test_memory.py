"""Closed sessions give their memory back by reference counting alone: chatwire's server runs the cyclic collector
rarely (app.py `_tune_gc`), so whatever a closed connection leaves in a reference cycle stays until a full
collection, and under connection churn that is most of the process's growth (bench/churn.py measures it)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import httpx
import pytest
import websockets
from websockets.server import ServerProtocol

from chatwire.engine.eio import EngineConfig, Session
from chatwire.engine.server import Connection, Socket
from chatwire.engine.wsprotocol import EngineWebSocketProtocol
from tests.engine.harness import Engine, running_engine, until

# What one connection is made of on the server; none of it may outlive the connection.
PER_CONNECTION = (Session, Connection, Socket, EngineWebSocketProtocol, ServerProtocol)
QUIET = EngineConfig(ping_interval_ms=25_000, ping_timeout_ms=20_000)


def census() -> Counter[str]:
    """Live (or not yet collected) objects of the per-connection types."""
    return Counter(type(o).__name__ for o in gc.get_objects() if type(o) in PER_CONNECTION)


async def one_session(engine: Engine, transport: str) -> None:
    """Open a session, connect to the main namespace, and close it from the client side."""
    if transport == "websocket":
        async with websockets.connect(engine.ws()) as ws:
            assert str(await ws.recv()).startswith("0")
            await ws.send("40")
            assert str(await ws.recv()).startswith("40")
        return
    async with httpx.AsyncClient(timeout=10) as client:
        sid = (await engine.handshake(client))["sid"]
        assert (await client.post(engine.eio(sid=sid), content="40")).text == "ok"
        assert (await client.get(engine.eio(sid=sid))).text.startswith("40")
        await client.post(engine.eio(sid=sid), content="1")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_closed_session_is_freed_without_the_collector(transport: str) -> None:
    """The session and its Socket.IO connection point at each other, and the WebSocket parser's generator at its
    protocol object: each closed connection used to wait for the collector with its buffers and handlers."""
    async with running_engine(QUIET, connect_timeout_ms=5000) as engine:
        await one_session(engine, transport)  # what the first connection creates once (imports, caches)
        await until(lambda: not engine.server.engine.sessions)
        gc.collect()
        gc.disable()
        try:
            before = census()
            for _ in range(5):
                await one_session(engine, transport)
            await until(lambda: not engine.server.engine.sessions)
            for _ in range(200):  # the last close may take a few loop turns to finish
                if census() == before:
                    break
                await asyncio.sleep(0.01)
            assert census() - before == Counter()
        finally:
            gc.enable()
