"""Python side of tests/node/client.mjs: run an official socket.io-client in Node and assert on what it sees."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import service_unavailable

DRIVER = Path(__file__).parent / "node" / "client.mjs"


def node_or_skip() -> str:
    """The node binary; the end-to-end tests need it and the npm packages of tests/node."""
    node = shutil.which("node")
    if node is None or not (DRIVER.parent / "node_modules" / "socket.io-client").exists():
        service_unavailable(
            "node with tests/node/node_modules (make test installs them)", FileNotFoundError()
        )
    assert node is not None
    return node


class NodeClient:
    """One Node process running client.mjs; every line it prints is kept in `lines`, in order."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        self.options = {"url": url, **({"token": token} if token else {}), **options}
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._seq = itertools.count(1)

    async def start(self, *, wait_joined: bool = True, timeout: float = 10) -> NodeClient:
        self.proc = await asyncio.create_subprocess_exec(
            node_or_skip(),
            str(DRIVER),
            json.dumps(self.options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(DRIVER.parent),
        )
        self._reader = asyncio.create_task(self._read())
        if wait_joined and self.options.get("token") and self.options.get("join", True):
            joined = await self.wait_for(lambda line: line["type"] in ("joined", "connect_error"), timeout)
            assert joined["type"] == "joined" and "error" not in (joined["ack"] or {}), joined
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = json.loads(raw)
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        """The first output line matching `predicate` (earlier lines count)."""

        def find() -> dict[str, Any] | None:
            return next((line for line in self.lines if predicate(line)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
            found = find()
            assert found is not None
            return found

    def events(self, name: str) -> list[list[Any]]:
        """The argument lists of every received `name` event so far."""
        return [line["args"] for line in self.lines if line["type"] == "event" and line["event"] == name]

    async def wait_event(
        self, name: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5
    ) -> Any:
        """The first argument of the first received `name` event whose first argument matches."""
        line = await self.wait_for(
            lambda ln: ln["type"] == "event" and ln["event"] == name and predicate(ln["args"][0]), timeout
        )
        return line["args"][0]

    async def command(self, **cmd: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()

    async def emit(self, event: str, data: Any = None) -> None:
        await self.command(emit=event, data=data)

    async def call(self, event: str, data: Any = None, timeout: float = 5) -> Any:
        """Emit with an ack and return the ack's first argument."""
        seq = next(self._seq)
        await self.command(emit=event, data=data, ack=True, seq=seq, timeout=int(timeout * 1000))
        line = await self.wait_for(lambda ln: ln.get("seq") == seq and ln["type"] != "done", timeout + 2)
        assert line["type"] == "ack", line
        return line["args"][0] if line["args"] else None

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command(close=True)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
