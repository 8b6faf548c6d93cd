"""A fleet background step that fails is logged once and forgotten, not left as an unretrieved task exception."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from chatwire.backends.bus_memory import MemoryBus, MemoryHub
from chatwire.transport.fleet_wire import FleetWire


class Wire(FleetWire):
    def spawn(self, coro: object) -> None:
        self._spawn(coro)  # type: ignore[arg-type]

    def pending(self) -> int:
        return len(self._tasks)


async def test_a_failed_background_step_is_logged_and_its_exception_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = Wire()
    wire.init_wire(MemoryBus(MemoryHub()), "h1", 1 << 20, 5.0)
    unretrieved: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))

    async def fails() -> None:
        raise ConnectionError("redis went away")

    async def works() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="chatwire.fleet"):
        wire.spawn(fails())
        wire.spawn(works())
        for _ in range(5):
            await asyncio.sleep(0)
    gc.collect()  # an unretrieved exception is reported when its task is collected
    assert wire.pending() == 0
    failed = [r for r in caplog.records if r.getMessage() == "fleet background step failed"]
    assert len(failed) == 1 and "redis went away" in str(getattr(failed[0], "error", ""))
    assert unretrieved == []
    loop.set_exception_handler(None)
