"""A uvicorn server run in the test's event loop, and raw TCP clients for speaking HTTP to it byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config, force: bool = False) -> AsyncIterator[uvicorn.Server]:
    """`config`'s server, started (its startup error raised) and stopped at the end (`force`: without waiting for
    its connections, and whatever its stopping raises is ignored)."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        server.force_exit = force
        with contextlib.suppress(*((Exception,) if force else ())):
            await asyncio.wait_for(task, 15)


async def opened(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to `host:port`."""
    host, port = address.split(":")
    return await asyncio.open_connection(host, int(port))


async def closed(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before closing, if it closed within `within` seconds; None if still open."""
    got = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                got += chunk
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return got


async def drip(writer: asyncio.StreamWriter, every: float, lines: int = 20) -> None:
    """Header lines one at a time, `every` seconds apart, never the end of the headers (slowloris)."""
    with contextlib.suppress(ConnectionError):
        for i in range(lines):
            writer.write(f"X-Drip-{i}: 1\r\n".encode())
            await writer.drain()
            await asyncio.sleep(every)
