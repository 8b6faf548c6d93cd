"""A real HTTP webhook receiver for tests: uvicorn on a free loopback port, in the test's event loop.

It records every request (headers, body, the status it answered) and can misbehave on purpose: answer 500 to
its first N calls, answer 503 to everything while `down`, or hang (never answer) for chosen paths.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tests.conftest import free_port
from tests.rawhttp import serving


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None: the receiver hung and never answered

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many calls, then 200
    down: bool = False  # answer 503 while set
    hang_paths: set[str] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def endpoint(self, path: str = "/hook") -> str:
        return self.url + path

    def delivered(self, path: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.status == 200 and (path is None or c.path == path)]

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    async def _note(self, call: Call) -> None:
        async with self._changed:
            self._changed.notify_all()
        del call

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        call = Call(scope["path"], headers, body)
        self.calls.append(call)
        if scope["path"] in self.hang_paths:
            await self._note(call)
            await self._release.wait()  # until the test ends
            return
        failing = sum(1 for c in self.calls if c.status == 500)
        if self.down:
            call.status = 503
        elif failing < self.fail_first:
            call.status = 500
        else:
            call.status = 200
        await send(
            {
                "type": "http.response.start",
                "status": call.status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" if call.status == 200 else b"nope"})
        await self._note(call)


@contextlib.asynccontextmanager
async def run_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    port = free_port()
    receiver.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        receiver.app, host="127.0.0.1", port=port, log_config=None, lifespan="on", interface="asgi3"
    )
    async with serving(config, force=True):
        try:
            yield receiver
        finally:
            receiver._release.set()
