"""The slow-client guard (chatwire/transport/http_guard.py) around uvicorn's HTTP protocols, on asyncio's event
loop and on uvloop's (whose transports derive from none of asyncio's transport classes).

Each case runs a real uvicorn server with a small ASGI app in its own event loop and speaks raw HTTP to it over
TCP: a dripping request is cut off with 408 at the deadline, oversized headers with 431, the per-IP table of
unfinished connections is bounded, a later request of a kept-alive connection gets its own deadline, a request
whose headers and large body come in one read is served, and a websocket upgrade leaves the table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
import uvloop

from chatwire.transport.http_guard import MAX_HEADER_BYTES, HttpGuard, http_protocol
from tests.conftest import free_port
from tests.rawhttp import closed, drip, opened, serving

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with the size of its body; accepts websockets and echoes one message."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text")})
        await send({"type": "websocket.close"})


def run(loop: str, inner: str, case: Callable[[str, Any], Awaitable[None]]) -> None:
    """`case(address, protocol_class)` against a guarded server (deadline 0.5 s, 3 unfinished per IP)."""

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith(loop)
        port = free_port()
        protocol = http_protocol(0.5, 3, inner=inner)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="on", http=protocol
        )
        async with serving(config):
            await case(f"127.0.0.1:{port}", protocol)

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())


@contextlib.asynccontextmanager
async def connection(address: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await opened(address)
    try:
        yield reader, writer
    finally:
        writer.close()


both = pytest.mark.parametrize(
    ("loop", "inner"),
    [("asyncio", "httptools"), ("uvloop", "httptools"), ("uvloop", "h11"), ("asyncio", "h11")],
)


@both
def test_dripping_headers_are_cut_off_with_408_and_the_table_is_bounded(loop: str, inner: str) -> None:
    async def case(address: str, protocol: Any) -> None:
        async with connection(address) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            dripping = asyncio.create_task(drip(writer, every=0.1))
            answer = await closed(reader, within=2)
            dripping.cancel()
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        # Three silent connections fill this IP's table: a fourth is closed at once, unanswered.
        silent = [await opened(address) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert protocol.table.counts == {"127.0.0.1": 3}
        async with connection(address) as (reader4, _):
            assert await closed(reader4, within=0.4) == b""
        for r, w in silent:
            assert (await closed(r, within=2) or b"").startswith(b"HTTP/1.1 408")
            w.close()
        assert protocol.table.counts == {}

    run(loop, inner, case)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_headers_over_the_bound_get_431(loop: str) -> None:  # (h11 has a smaller bound of its own: 400)
    async def case(address: str, protocol: Any) -> None:
        async with connection(address) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            line = b"X-Big: " + b"a" * 1000 + b"\r\n"
            with contextlib.suppress(ConnectionError):
                for _ in range(MAX_HEADER_BYTES // len(line) + 2):
                    writer.write(line)
                    await writer.drain()
            answer = await closed(reader, within=2)
            assert answer is not None and answer.startswith(b"HTTP/1.1 431"), answer

    run(loop, "httptools", case)


@both
def test_kept_alive_requests_are_served_and_each_gets_its_own_deadline(loop: str, inner: str) -> None:
    async def case(address: str, protocol: Any) -> None:
        body = b"b" * (4 * MAX_HEADER_BYTES)  # headers and a large body in one write: served, not 431
        async with connection(address) as (reader, writer):
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n")
            answer = await closed(reader, within=3)
            assert answer is not None, "the stalled third request was never cut off"
            assert answer.count(b"HTTP/1.1 200") == 2 and answer.rstrip().endswith(b"connection: close"), (
                answer
            )
            assert str(len(body)).encode() in answer and b"HTTP/1.1 408" in answer, answer

    run(loop, inner, case)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_websocket_upgrade_leaves_the_table_and_is_not_cut_off(loop: str) -> None:
    async def case(address: str, protocol: Any) -> None:
        import websockets

        async with websockets.connect(f"ws://{address}/") as ws:
            assert protocol.table.counts == {}
            await asyncio.sleep(0.8)  # past the header deadline
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(loop, "httptools", case)


def test_the_guard_composes_uvicorns_protocol_and_derives_from_none_of_its_classes() -> None:
    protocol = http_protocol(1.0, 1)
    foreign = [
        k for k in protocol.__mro__ if not k.__module__.startswith(("chatwire", "asyncio", "builtins"))
    ]
    assert foreign == [] and issubclass(protocol, HttpGuard)
    assert protocol.inner_class.__module__.startswith("uvicorn.protocols.http")
