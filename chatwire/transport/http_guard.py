"""Slow-client guard for uvicorn's HTTP protocol: a deadline for each request's headers and a bound on the
connections per client IP whose first request has not finished its headers (slowloris).

uvicorn closes idle keep-alive connections, but a connection that never finishes a request's headers (nothing
sent, or one header line every few seconds) is kept forever, each holding a socket and a parser. Here every
request's headers must be complete within `header_timeout` seconds and within `MAX_HEADER_BYTES`; past either,
the connection is closed (408/431). A client IP may hold at most `max_pending_per_ip` connections that have not
completed their first request's headers; more are closed at once. Websocket upgrades count until their handshake
request is complete, then leave the table.

The guard composes uvicorn's protocol instead of deriving from it: `HttpGuard` is the asyncio.Protocol the event
loop's transport (asyncio's or uvloop's) talks to, and hands every call on to the uvicorn protocol it holds, which
sees the transport itself. It follows the requests with its own httptools parser (message begin, headers complete)
and uses nothing of uvicorn but its constructor and the asyncio.Protocol methods. A 408 is written on a stalled
later request of a kept-alive connection as on the first: a client that does not pipeline has its previous answer
by then (a pipelining one that stalls while an answer still streams sees the status after that answer's bytes
before the close).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

log = logging.getLogger("chatwire.http")

MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one request

try:
    import httptools
except ImportError:  # uvicorn without httptools: uvicorn's own protocol, unguarded
    httptools = None  # type: ignore[assignment]


class PendingTable:
    """Connections per client IP that have not completed their first request's headers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def enter(self, ip: str) -> bool:
        count = self.counts.get(ip, 0)
        if self.limit and count >= self.limit:
            return False
        self.counts[ip] = count + 1
        return True

    def leave(self, ip: str) -> None:
        count = self.counts.get(ip, 0) - 1
        if count > 0:
            self.counts[ip] = count
        else:
            self.counts.pop(ip, None)


class HttpGuard(asyncio.Protocol):
    """The protocol uvicorn makes per connection: its own HTTP protocol inside, with a header deadline per request
    and the per-IP table of unfinished ones around it. `http_protocol` binds the class attributes."""

    inner_class: ClassVar[Any]
    header_timeout: ClassVar[float]
    table: ClassVar[PendingTable]

    __slots__ = (
        "header_bytes",
        "in_headers",
        "inner",
        "ip",
        "loop",
        "parser",
        "pending",
        "timer",
        "transport",
    )

    def __init__(self, **kwargs: Any) -> None:
        # uvicorn's arguments (config, server_state, app_state and its loop) go to its protocol unchanged.
        self.inner: asyncio.Protocol = self.inner_class(**kwargs)
        self.loop = asyncio.get_running_loop()
        # asyncio's transport or uvloop's (which derives from none of asyncio's transport classes).
        self.transport: Any = None
        self.parser: Any = None
        self.ip: str | None = None  # the client's address
        self.pending = False  # counted in the table: its first request's headers are not complete
        self.timer: asyncio.TimerHandle | None = None
        self.header_bytes = 0
        self.in_headers = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self.parser = httptools.HttpRequestParser(self)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
        self.ip = ip
        if ip is not None:
            if not self.table.enter(ip):
                log.info("connection refused: too many unfinished requests", extra={"remote": ip})
                self.parser = None
                transport.close()
                return
            self.pending = True
        self.timer = self.loop.call_later(self.header_timeout, self.too_slow)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is not None:
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # the handshake's headers are complete; the rest is not HTTP
                self.stop_guarding()
            except httptools.HttpParserError:  # uvicorn's parser refuses it too (400) and closes
                self.stop_guarding()
            else:
                if self.in_headers:  # this whole chunk is request line and headers still
                    self.header_bytes += len(data)
                    if self.header_bytes > MAX_HEADER_BYTES:
                        log.info(
                            "connection closed: request headers too large", extra={"remote": self.remote()}
                        )
                        self.refuse(b"431 Request Header Fields Too Large")
                        return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_guarding()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        self.in_headers = True
        self.header_bytes = 0
        if self.timer is None:  # a later request of a kept-alive connection gets a deadline too
            self.timer = self.loop.call_later(self.header_timeout, self.too_slow)

    def on_headers_complete(self) -> None:
        self.disarm()

    # the guard

    def disarm(self) -> None:
        self.in_headers = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending:
            self.pending = False
            self.table.leave(self.ip or "")

    def stop_guarding(self) -> None:
        self.disarm()
        self.parser = None  # the parser refers to this object: let both go

    def too_slow(self) -> None:
        self.timer = None
        log.info("connection closed: request headers too slow", extra={"remote": self.remote()})
        self.refuse(b"408 Request Timeout")

    def refuse(self, status: bytes) -> None:
        self.stop_guarding()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        transport.close()

    def remote(self) -> str:
        return self.ip or "?"


def http_protocol(header_timeout: float, max_pending_per_ip: int, inner: str = "httptools") -> Any:
    """The `http=` protocol class for uvicorn: uvicorn's `inner` protocol ("httptools" or "h11") inside the
    guard, bound to these limits (each call makes its own table, so servers in one process do not share counts);
    "auto" without httptools, whose parser the guard follows the requests with."""
    if httptools is None:
        return "auto"
    bound = {
        "inner_class": import_from_string(HTTP_PROTOCOLS[inner]),
        "header_timeout": header_timeout,
        "table": PendingTable(max_pending_per_ip),
        "__slots__": (),
    }
    return type("GuardedHttpProtocol", (HttpGuard,), bound)
