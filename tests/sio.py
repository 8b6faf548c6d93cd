"""A recording python-socketio client for tests: every received event is queued for assertions."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import socketio


class RecordingClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._cond = asyncio.Condition()
        self.connect_error: Any = None

        @self.sio.on("*")
        async def any_event(event: str, *args: Any) -> None:
            async with self._cond:
                self.received[event].append(args[0] if len(args) == 1 else list(args))
                self._cond.notify_all()

        @self.sio.event
        async def connect_error(data: Any) -> None:
            self.connect_error = data

    async def connect(self, token: str | None = None, *, join: bool = True) -> RecordingClient:
        auth = {"token": token} if token else None
        await self.sio.connect(
            self.url, auth=auth, socketio_path="ws/socket.io", transports=["websocket"], wait_timeout=10
        )
        if join and token:
            ack = await self.call("user-join", {"auth": {"token": token}})
            assert "error" not in ack, ack
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data)

    async def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5
    ) -> Any:
        """The first received `event` payload matching `predicate` (already received ones count)."""

        def find() -> Any:
            for item in self.received[event]:
                if predicate(item):
                    return item
            return None

        async with self._cond:
            found = find()
            if found is not None:
                return found
            await asyncio.wait_for(self._cond.wait_for(lambda: find() is not None), timeout)
            return find()

    async def expect_none(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, wait: float = 0.5
    ) -> None:
        await asyncio.sleep(wait)
        matches = [item for item in self.received[event] if predicate(item)]
        assert not matches, f"unexpected {event}: {matches}"

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
