"""Broker contract: room membership, delivery to rooms and single sessions (skip_sid, order), event calls.

Run against every Broker: the MemoryBroker (membership only; it records emits and nobody answers its calls), the
engine's EngineBroker (one process, real python-socketio clients over chatwire's engine on uvicorn), and the fleet
Broker FleetBroker (two processes' worth of engines in this process, joined by the memory Bus, and again by two
RedisBus connections to the real Redis), where every delivery test has its receivers on the other "process" than
the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio
import uvicorn

from chatwire.backends.broker import Broker
from chatwire.backends.broker_memory import MemoryBroker
from chatwire.backends.bus import Bus
from chatwire.backends.bus_memory import MemoryBus, MemoryHub
from chatwire.backends.bus_redis import RedisBus
from chatwire.config import Settings
from chatwire.engine.wsprotocol import EngineWebSocketProtocol
from chatwire.transport.fleet_broker import FleetBroker
from chatwire.transport.hub import EngineBroker, Hub
from tests.conftest import REDIS_URL, free_port
from tests.contract.conftest import redis_prefix


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Node:
    """One engine on uvicorn; its clients by sid and what each received."""

    hub: Hub
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]
    clients: dict[str, socketio.AsyncClient] = field(default_factory=dict)
    got: dict[str, list[Any]] = field(default_factory=dict)

    async def session(self) -> str:
        client = socketio.AsyncClient(reconnection=False)
        got: list[Any] = []

        @client.on("*")
        async def anything(event: str, *args: Any) -> None:
            got.append((event, *args))

        @client.on("question")
        async def question(text: str) -> str:
            return "answer to " + text

        @client.on("slow")
        async def slow(_data: Any) -> str:
            await asyncio.sleep(2)  # python-socketio's client acks every event: this one answers too late
            return "late"

        await client.connect(self.url, socketio_path="ws/socket.io", transports=["websocket"])
        sid = client.get_sid()
        assert sid is not None
        self.clients[sid] = client
        self.got[sid] = got
        return str(sid)


@contextlib.asynccontextmanager
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    hub = Hub(Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]
    port = free_port()
    config = uvicorn.Config(
        hub.asgi(not_found), host="127.0.0.1", port=port, log_config=None, ws=EngineWebSocketProtocol
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    running = Node(hub, f"http://127.0.0.1:{port}", server, task)
    try:
        yield running
    finally:
        for client in running.clients.values():
            await client.disconnect()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Env:
    """A Broker under test, how to make a session for it, and what a session received (None: not observable)."""

    broker: Broker
    session: Callable[[], Awaitable[str]]
    received: Callable[[str], list[Any]] | None


@pytest.fixture(params=["memory", "engine", "fleet", "fleet-redis"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    kind = request.param
    if kind == "memory":
        counter = iter(range(1_000_000))

        async def fresh() -> str:
            return f"sid-{next(counter)}"

        yield Env(MemoryBroker(), fresh, None)
        return
    if kind == "engine":
        async with node(tmp_path / "a") as a:
            yield Env(EngineBroker(a.hub), a.session, lambda sid: a.got[sid])
        return
    async with contextlib.AsyncExitStack() as stack:
        buses: list[Bus]
        if kind == "fleet-redis":
            _client, prefix = await stack.enter_async_context(redis_prefix())
            buses = [RedisBus(REDIS_URL, prefix), RedisBus(REDIS_URL, prefix)]
        else:
            hub = MemoryHub()
            buses = [MemoryBus(hub), MemoryBus(hub)]
        a = await stack.enter_async_context(node(tmp_path / "a"))
        b = await stack.enter_async_context(node(tmp_path / "b"))
        hosts: dict[str, str] = {}

        async def locate(sid: str) -> str | None:
            return hosts.get(sid)

        fleets = [
            FleetBroker(n.hub, bus, name, locate, 1 << 20, 5.0)
            for n, bus, name in zip((a, b), buses, "ab", strict=True)
        ]
        for fleet in fleets:
            await fleet.start()
            stack.push_async_callback(fleet.stop)

        async def on_b() -> str:
            sid = await b.session()
            hosts[sid] = "b"
            return sid

        # the publisher is process a; every session lives on process b
        yield Env(fleets[0], on_b, lambda sid: b.got[sid])


async def until(cond: Callable[[], bool], timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_membership(env: Env) -> None:
    one, two = await env.session(), await env.session()
    await env.broker.enter_room(one, "user:u")
    await env.broker.enter_rooms(two, ["user:u", "channel:c"])
    await until_members(env, "user:u", {one, two}, one)
    assert set(await env.broker.rooms_of(two)) >= {"user:u", "channel:c"} or isinstance(
        env.broker, FleetBroker
    )
    await env.broker.leave_room(one, "user:u")
    await until_members(env, "user:u", {two}, two)
    await env.broker.close_room("channel:c")
    if not isinstance(env.broker, FleetBroker):  # the fleet's rooms_of is the caller's process only
        assert "channel:c" not in await env.broker.rooms_of(two)


async def until_members(env: Env, room: str, expected: set[str], probe: str) -> None:
    """Membership as the broker reports it; a fleet member reports its own process's, so delivery shows it."""
    if not isinstance(env.broker, FleetBroker):
        assert set(await env.broker.room_sids(room)) == expected
        return
    assert env.received is not None
    received = env.received
    # a membership change for another process's session travels over the bus: probe until it shows
    deadline = asyncio.get_running_loop().time() + 5
    for n in range(1_000_000):
        marker = f"probe-{room}-{n}"
        await env.broker.emit("probe", marker, room=room)
        with contextlib.suppress(AssertionError):
            await until(lambda m=marker: all(("probe", m) in received(sid) for sid in expected), 0.2)
            return
        assert asyncio.get_running_loop().time() < deadline, f"{room} never reached {expected}"


async def test_emit_reaches_members_but_the_skipped_in_order(env: Env) -> None:
    one, two, out = await env.session(), await env.session(), await env.session()
    for sid in (one, two):
        await env.broker.enter_room(sid, "channel:x")
    await until_members(env, "channel:x", {one, two}, one)
    for n in range(50):
        await env.broker.emit("events", {"n": n}, room="channel:x", skip_sid=two if n % 2 else None)
    if env.received is None:
        return
    received = env.received
    await until(lambda: ("events", {"n": 49}) in received(one))
    assert [args for event, *args in received(one) if event == "events"] == [[{"n": n}] for n in range(50)]
    await until(lambda: ("events", {"n": 48}) in received(two))
    assert [a for e, *a in received(two) if e == "events"] == [[{"n": n}] for n in range(0, 50, 2)]
    assert not [e for e, *_ in received(out) if e == "events"]


async def test_emit_to_one_session_and_several_arguments(env: Env) -> None:
    one, other = await env.session(), await env.session()
    await env.broker.emit("hello", ("a", 2), room=one)
    if env.received is None:
        return
    received = env.received
    await until(lambda: ("hello", "a", 2) in received(one))
    assert ("hello", "a", 2) not in received(other)


async def test_call_returns_the_answer_or_times_out(env: Env) -> None:
    sid = await env.session()
    if env.received is not None:
        assert await env.broker.call("question", "why", sid=sid, timeout=5) == "answer to why"
    with pytest.raises(TimeoutError):
        await env.broker.call("slow", {}, sid=sid, timeout=0.3)
