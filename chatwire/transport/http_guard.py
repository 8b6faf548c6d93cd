"""Slow-client guard for uvicorn's HTTP protocol: a deadline for each request's headers and a bound on the
connections per client IP whose first request has not finished its headers (slowloris).

uvicorn closes idle keep-alive connections, but a connection that never finishes a request's headers (nothing
sent, or one header line every few seconds) is kept forever, each holding a socket and a parser. Here every
request's headers must be complete within `header_timeout` seconds and within `MAX_HEADER_BYTES`; past either,
the connection is closed (408/431 when nothing was answered yet). A client IP may hold at most
`max_pending_per_ip` connections that have not completed their first request's headers; more are closed at
once. Websocket upgrades count until their handshake request is complete, then leave the table.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("chatwire.http")

MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one request

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: uvicorn's own protocol, unguarded
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


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


def http_protocol(header_timeout: float, max_pending_per_ip: int) -> Any:
    """The `http=` protocol class for uvicorn: httptools' protocol with the guard, bound to these limits (each
    call makes its own table, so servers in one process do not share counts); "auto" without httptools."""
    if HttpToolsProtocol is None:
        return "auto"
    table = PendingTable(max_pending_per_ip)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """httptools' protocol with a header deadline per request and the per-IP table of unfinished ones."""

        pending = table

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard_ip: str | None = None
            self._guard_timer: asyncio.TimerHandle | None = None
            self._guard_bytes = 0
            self._in_headers = True
            ip = self.client[0] if self.client else None
            if ip is not None:
                if not table.enter(ip):
                    log.info("connection refused: too many unfinished requests", extra={"remote": ip})
                    transport.close()
                    return
                self._guard_ip = ip
            self._arm()

        def _arm(self) -> None:
            self._in_headers = True
            self._guard_bytes = 0
            if self._guard_timer is None:
                self._guard_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            self._in_headers = False
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None
            if self._guard_ip is not None:
                table.leave(self._guard_ip)
                self._guard_ip = None

        def _too_slow(self) -> None:
            self._guard_timer = None
            log.info("connection closed: request headers too slow", extra={"remote": self._remote()})
            self._refuse(b"408 Request Timeout")

        def _refuse(self, status: bytes) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:  # nothing in flight: say why
                self.transport.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            self.transport.close()

        def _remote(self) -> str:
            return self.client[0] if self.client else "?"

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._guard_bytes += len(data)
                if self._guard_bytes > MAX_HEADER_BYTES:
                    log.info("connection closed: request headers too large", extra={"remote": self._remote()})
                    self._refuse(b"431 Request Header Fields Too Large")
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:  # the next request on a kept-alive connection gets a deadline too
                self._guard_bytes = 0
                self._in_headers = True
                self._guard_timer = self.loop.call_later(header_timeout, self._too_slow)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol
