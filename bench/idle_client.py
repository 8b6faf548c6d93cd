"""Cheap idle Socket.IO clients for bench/idle.py: raw websockets on asyncio protocols, a few KiB each.

Each client does what a browser tab's socket.io-client does on connect, over its own TCP connection bound to one of
several loopback source addresses (each has its own range of ephemeral ports): the HTTP upgrade (checking
Sec-WebSocket-Accept), Engine.IO v4's OPEN, Socket.IO v5's CONNECT with `{"token": ...}` (or `{"room": ...}`),
and, if asked, `user-join` with the token, waiting for its acknowledgement. Then it only answers Engine.IO PINGs
(and websocket pings) until told to close. No socket.io-client: one Node or Python client object per connection
costs more memory than the server side being measured.

Run (by bench/idle.py): python -m bench.idle_client OPTIONS.json, options {host, port, path, sources: [addr],
per_source, auths: [{...}], join: bool, concurrency}. Prints one JSON line when every attempt has settled
({connected, failed, seconds, errors}), then one per line read on stdin (`status` -> {open, pings, closed_by_server},
`close` -> the same, after closing every connection, then exit).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time
from collections import Counter
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame: FIN + opcode, masked with a fresh key as RFC 6455 requires of clients."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    keystream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return head + key + masked


class Stats:
    """Counters shared by every client of this process."""

    def __init__(self) -> None:
        self.pings = 0
        self.closed_by_server = 0
        self.open = 0
        self.errors: Counter[str] = Counter()


class IdleClient(asyncio.Protocol):
    """One connection: handshake state machine, then a ping answerer. Holds only its transport and a buffer."""

    __slots__ = ("auth", "buf", "done", "join", "key", "stage", "stats", "transport", "upgraded")

    def __init__(self, request: bytes, key: bytes, auth: bytes, join: bytes | None, stats: Stats) -> None:
        self.key = key
        self.auth = auth
        self.join = join
        self.stats = stats
        self.buf = b""
        self.stage = "upgrade"  # upgrade -> open -> connect -> join -> idle (or failed/closed)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.upgraded = request  # the upgrade request, sent on connection_made, then dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.upgraded)
        self.upgraded = b""

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)
        self.stage = "failed"
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stage == "idle":
            self.stats.open -= 1
            self.stats.closed_by_server += 1
        elif self.stage not in ("failed", "closed"):
            self.fail(f"lost during {self.stage}")
        self.stage = "closed" if self.stage == "idle" else self.stage
        self.transport = None

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(mask_frame(0x1, text.encode()))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stage == "upgrade":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            lines = head.split(b"\r\n")
            accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines[1:])}
            if b" 101 " not in lines[0] + b" " or headers.get(b"sec-websocket-accept") != accept:
                self.fail(f"upgrade refused: {lines[0][:60]!r}")
                return
            self.stage = "open"
        while self.buf:
            frame = self.next_frame()
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 0x8:
                if self.stage != "idle":
                    self.fail(f"websocket closed during {self.stage}")
                elif self.transport is not None:
                    self.transport.close()
                return
            if opcode == 0x9:
                assert self.transport is not None
                self.transport.write(mask_frame(0xA, payload))
                continue
            if opcode == 0x1:
                self.packet(payload.decode())

    def next_frame(self) -> tuple[int, bytes] | None:
        """Pop one complete server frame (unmasked, unfragmented) off the buffer, or None if incomplete."""
        buf = self.buf
        if len(buf) < 2:
            return None
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < at + n:
            return None
        self.buf = buf[at + n :]
        return opcode, buf[at : at + n]

    def packet(self, text: str) -> None:
        """One Engine.IO packet: advance the handshake, answer a PING, ignore messages while idle."""
        if text == "2":
            self.send_text("3")
            if self.stage == "idle":
                self.stats.pings += 1
            return
        if self.stage == "open":
            if not text.startswith("0"):
                self.fail("no Engine.IO OPEN")
                return
            self.stage = "connect"
            self.send_text("40" + self.auth.decode())
        elif self.stage == "connect" and text.startswith("4"):
            if text.startswith("44"):
                self.fail("connect refused: " + text[2:80])
            elif text.startswith("40"):
                if self.join is None:
                    self.idle()
                else:
                    self.stage = "join"
                    self.send_text(self.join.decode())
        elif self.stage == "join" and text.startswith("43"):
            ack = text[2:].lstrip("0123456789")
            if '"error"' in ack[:20]:
                self.fail("user-join refused: " + ack[:80])
            else:
                self.idle()
        elif text.startswith("1"):
            self.fail(f"Engine.IO CLOSE during {self.stage}")

    def idle(self) -> None:
        self.stage = "idle"
        self.stats.open += 1
        self.join = None
        self.auth = b""
        if not self.done.done():
            self.done.set_result("")

    def close(self) -> None:
        if self.stage == "idle" and self.transport is not None:
            self.stats.open -= 1
            self.stage = "closed"
            self.transport.write(mask_frame(0x8, b"\x03\xe8"))
            self.transport.close()


async def run(options: dict[str, Any]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[IdleClient] = []
    host, port, path = options["host"], options["port"], options["path"]
    auths: list[dict[str, Any]] = options["auths"]
    sources: list[str] = options["sources"]
    per_source = int(options["per_source"])
    gate = asyncio.Semaphore(int(options.get("concurrency", 100)))
    timeout = float(options.get("timeout", 60))

    async def one(i: int) -> None:
        auth = auths[i]
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        join = None
        if options.get("join") and auth.get("token"):
            join = ("420" + json.dumps(["user-join", {"auth": {"token": auth["token"]}}])).encode()
        client = IdleClient(request, key, json.dumps(auth).encode(), join, stats)
        async with gate:
            try:
                await loop.create_connection(
                    lambda: client, host, port, local_addr=(sources[i // per_source], 0)
                )
                why = await asyncio.wait_for(asyncio.shield(client.done), timeout)
            except (OSError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"[:80]
                client.fail(why)
        if why:
            stats.errors[why] += 1
        else:
            clients.append(client)

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(len(auths))))
    seconds = time.monotonic() - started
    out = {
        "connected": len(clients),
        "failed": sum(stats.errors.values()),
        "seconds": seconds,
        "errors": dict(stats.errors.most_common(5)),
        "nofile": [soft, hard],
    }
    print(json.dumps(out), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line == b"close":
            for c in clients:
                c.close()
            await asyncio.sleep(0.5)
        print(
            json.dumps(
                {"open": stats.open, "pings": stats.pings, "closed_by_server": stats.closed_by_server}
            ),
            flush=True,
        )
        if line == b"close":
            return


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(run(json.load(f)))
