"""Connection state recovery with the official Node socket.io-client (no client code): a cut line, a reconnect by
itself, every event exactly once and in order, `socket.recovered`; and a clear fresh start when it cannot be."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, requirement_missing, run_server
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVER = NODE_DIR / "recovery_client.mjs"


class NodeClient:
    """The driver process; its JSON lines are collected in `lines`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, token: str) -> NodeClient:
        node = shutil.which("node")
        if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").exists():
            requirement_missing("node or tests/node/node_modules missing (run `make node`)")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            url,
            token,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(json.loads(line))
            self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == kind]

    async def wait(self, ok: Callable[[NodeClient], bool], timeout: float = 30) -> None:
        async def loop() -> None:
            while not ok(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def node_behind_proxy(server: RunningServer) -> AsyncIterator[tuple[NodeClient, CuttableProxy, str]]:
    user = await server.signup("Ada")
    proxy = await CuttableProxy(int(server.url.rsplit(":", 1)[1])).start()
    client = await NodeClient.start(proxy.url, user["token"])
    try:
        await client.wait(lambda c: len(c.of("joined")) == 1)
        yield client, proxy, f"user:{user['id']}"
    finally:
        await client.close()
        await proxy.close()


async def emit_range(server: RunningServer, room: str, start: int, stop: int, over: float = 0.0) -> None:
    """Emit `events {n}` for n in [start, stop) to `room`, spread over `over` seconds."""
    pause = over / max(1, stop - start)
    for n in range(start, stop):
        await server.services.broker.emit("events", {"n": n}, room=room)
        if pause:
            await asyncio.sleep(pause)


async def cut_and_emit(
    server: RunningServer, proxy: CuttableProxy, room: str, start: int, count: int
) -> None:
    """Cut the line, emit `count` events over 5 s while it is down, then restore it."""
    await proxy.cut()
    await emit_range(server, room, start, start + count, over=5.0)
    await proxy.restore()


async def test_official_client_recovers_every_event_once_in_order(server: RunningServer) -> None:
    async with node_behind_proxy(server) as (client, proxy, room):
        await emit_range(server, room, 0, 100)
        await client.wait(lambda c: len(c.of("event")) == 100)
        await cut_and_emit(server, proxy, room, 100, 500)
        await client.wait(lambda c: len(c.of("connect")) == 2)
        await emit_range(server, room, 600, 700)
        await client.wait(lambda c: len(c.of("event")) >= 700)
        await asyncio.sleep(0.3)  # nothing extra may follow

        connects = client.of("connect")
        assert [c["recovered"] for c in connects] == [False, True]
        assert client.of("disconnect")[0]["reason"] == "transport close"
        received = [e["n"] for e in client.of("event")]
        assert received == list(range(700))  # every event, exactly once, in order
        offsets = [e["rest"][-1] for e in client.of("event")]
        assert all(isinstance(o, str) for o in offsets)  # the offset is a string last argument
        seqs = [int(o.rsplit("-", 1)[1]) for o in offsets]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("bound", ["window", "history"])
async def test_recovery_past_window_or_history_is_a_fresh_start(settings: Settings, bound: str) -> None:
    limits: dict[str, Any] = (
        {"recovery_window_seconds": 1.0} if bound == "window" else {"recovery_history_size": 50}
    )
    async with (
        run_server(settings.model_copy(update=limits)) as server,
        node_behind_proxy(server) as (client, proxy, room),
    ):
        await emit_range(server, room, 0, 20)
        await client.wait(lambda c: len(c.of("event")) == 20)
        await cut_and_emit(server, proxy, room, 20, 200)
        await client.wait(lambda c: len(c.of("joined")) == 2)
        await emit_range(server, room, 220, 230)
        await client.wait(lambda c: len(c.of("event")) >= 30)
        await asyncio.sleep(0.3)

        assert [c["recovered"] for c in client.of("connect")] == [False, False]
        # no partial replay: what came before the cut, then only what was sent after the fresh connect
        assert [e["n"] for e in client.of("event")] == list(range(20)) + list(range(220, 230))


async def test_deliberate_disconnect_is_not_recovered(server: RunningServer) -> None:
    """socket.disconnect() then socket.connect(): the client sends its pid again, the server starts it fresh."""
    async with node_behind_proxy(server) as (client, _proxy, room):
        await emit_range(server, room, 0, 5)
        await client.wait(lambda c: len(c.of("event")) == 5)
        await client.command("disconnect")
        await client.wait(lambda c: len(c.of("disconnect")) == 1)
        await asyncio.sleep(0.3)
        await emit_range(server, room, 5, 10)  # sent while it was away on purpose: not replayed
        await client.command("connect")
        await client.wait(lambda c: len(c.of("joined")) == 2)
        await emit_range(server, room, 10, 12)
        await client.wait(lambda c: len(c.of("event")) >= 7)
        await asyncio.sleep(0.2)
        assert client.of("disconnect")[0]["reason"] == "io client disconnect"
        assert [c["recovered"] for c in client.of("connect")] == [False, False]
        assert [e["n"] for e in client.of("event")] == [0, 1, 2, 3, 4, 10, 11]


async def test_server_restart_is_a_fresh_start_not_a_gap(settings: Settings) -> None:
    """The process behind the address restarts (memory mode): its history and parked sessions are gone and the
    new epoch differs, so the client starts fresh (`recovered === false`) and gets only what follows."""
    async with run_server(settings) as first:
        user = await first.signup("Ada")
        proxy = await CuttableProxy(int(first.url.rsplit(":", 1)[1])).start()
        client = await NodeClient.start(proxy.url, user["token"])
        try:
            await client.wait(lambda c: len(c.of("joined")) == 1)
            await emit_range(first, f"user:{user['id']}", 0, 10)
            await client.wait(lambda c: len(c.of("event")) == 10)
            await proxy.cut()
        except BaseException:
            await client.close()
            await proxy.close()
            raise
    try:
        # same database and secret: the token stays valid on the new process
        async with run_server(settings) as second:
            proxy.target = int(second.url.rsplit(":", 1)[1])
            await proxy.restore()
            await client.wait(lambda c: len(c.of("joined")) == 2)
            await emit_range(second, f"user:{user['id']}", 10, 15)
            await client.wait(lambda c: len(c.of("event")) >= 15)
            assert [c["recovered"] for c in client.of("connect")] == [False, False]
            assert [e["n"] for e in client.of("event")] == list(range(15))
            first_epoch = client.of("event")[0]["rest"][-1].rsplit("-", 1)[0]
            assert client.of("event")[-1]["rest"][-1].rsplit("-", 1)[0] != first_epoch
    finally:
        await client.close()
        await proxy.close()
