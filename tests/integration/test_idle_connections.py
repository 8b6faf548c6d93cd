"""Idle connections on the engine: pings, a client that never answers them, the polling upgrade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import socketio

from chatwire.config import Settings
from tests.conftest import RunningServer, run_server
from tests.integration.test_fuzz import RawSocket


@pytest.fixture
async def quick_ping(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"ping_interval": 1.0, "ping_timeout": 1.0})) as running:
        yield running


@pytest.fixture
async def with_polling(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"transports": ["polling", "websocket"]})) as running:
        yield running


async def test_a_websocket_that_never_answers_pings_is_closed(quick_ping: RunningServer) -> None:
    sock = await RawSocket.open(quick_ping.url)
    frames: list[bytes] = []
    try:
        while (frame := await sock.recv(timeout=30)) is not None:
            frames.append(frame)
    finally:
        sock.writer.close()
    # Engine.IO pinged, got no pong, and the server ended the websocket itself (not a hang until the client leaves).
    assert b"2" in frames
    assert quick_ping.services.sessions._sessions == {}


async def test_a_client_that_answers_pings_stays_connected_and_served(quick_ping: RunningServer) -> None:
    ada = await quick_ping.signup("Ada")
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        quick_ping.url, auth={"token": ada["token"]}, socketio_path="ws/socket.io", transports=["websocket"]
    )
    try:
        await asyncio.sleep(3.5)  # several ping intervals, each answered
        assert client.connected
        ack = await client.call("user-join", {"auth": {"token": ada["token"]}}, timeout=10)
        assert ack["id"] == ada["id"]
    finally:
        await client.disconnect()


async def test_a_polling_session_upgrades_to_the_websocket_and_is_served(with_polling: RunningServer) -> None:
    ada = await with_polling.signup("Ada")
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        with_polling.url,
        auth={"token": ada["token"]},
        socketio_path="ws/socket.io",
        transports=["polling", "websocket"],
    )
    try:
        for _ in range(250):
            if client.transport() == "websocket":
                break
            await asyncio.sleep(0.02)
        assert client.transport() == "websocket"
        ack = await client.call("user-join", {"auth": {"token": ada["token"]}}, timeout=10)
        assert ack["id"] == ada["id"]
        sid = client.get_sid()
        assert with_polling.app.state.hub.transport(sid) == "websocket"
    finally:
        await client.disconnect()
    for _ in range(250):
        if not with_polling.services.sessions._sessions:
            break
        await asyncio.sleep(0.02)
    assert with_polling.services.sessions._sessions == {}
