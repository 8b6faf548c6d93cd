"""Binary attachment floods from several anonymous connections against a real `chatwire serve` process: the
server's RSS (what an operator sees) stays within a stated bound, the flooding connections are closed, and a
signed-in user is served throughout.

Before the per-packet limits, a binary event announcing many attachments kept every binary frame that followed
(python-socketio appends them until the announced count is reached), so each connection could hold any amount of
memory while staying open: 12 frames of 4 MiB grew the process by 52 MiB.

The bound: each connection keeps at most CHATWIRE_MAX_ATTACHMENT_BYTES (1 MiB) of attachments, plus the frame
being read, which passes through a few transient copies (websockets' reader, unmasking, Engine.IO's packet):
about 1 MiB + 4 x 768 KiB = 4 MiB a connection, 32 MiB for CONNECTIONS = 8 at once, and the allocator keeps
freed arenas (RSS is a high-water mark); 64 MiB leaves room for that and stays far below the 96 MiB that one
round holds without the limits (measured on the shared 2-core machine: 125 -> 143 MB after the first round, no
growth after). Growth must not scale with the volume sent, so the later rounds must add less than 16 MiB. The
flood offers ROUNDS x CONNECTIONS x FRAMES x FRAME bytes = 384 MiB in all: without the limits the first round
alone would hold 8 x 16 x 768 KiB = 96 MiB.

Found on the way (each made the later rounds grow ~12 MB apiece): a closed connection stayed reachable, with
uvicorn's protocol, websockets' parser and the frames it had read, through Engine.IO's service task (which keeps
closed sockets listed for up to a ping timeout) and the read-timeout wheel (up to ping interval + timeout); and
messages uvicorn had queued but the app never read after closing stayed in cyclic garbage, which the tuned
collector (app.py `_tune_gc`) reaches only after 50,000 new objects. On the own engine (0.75 MB a connection): a
flooding client drops TCP without the closing handshake, so websockets' parser stops on an EOFError whose traceback
keeps the parser's frame, and the last 768 KiB frame in its locals, in a cycle with the protocol object
(wsprotocol.py `release_parser` ends the stream and clears those frames when the connection is lost).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

from tests.process import serve_process
from tests.sio import RecordingClient

CONNECTIONS = 8
ROUNDS = 4
FRAMES = 16  # the announced count: at CHATWIRE_MAX_ATTACHMENTS, so only the byte limit can stop it
FRAME = 768 << 10  # bytes per binary frame: one fits the 1 MiB packet limit, two do not
RSS_GROWTH_BOUND = 64 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def frame(opcode: int, payload: bytes) -> bytes:
    """A client websocket frame with an all-zero mask (a valid key that leaves the payload as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\x00\x00\x00\x00" + payload


async def server_closes(reader: asyncio.StreamReader) -> bool:
    """Whether the server ends the websocket within 15 s: a close frame (uvicorn then waits up to its close
    timeout for the reply, discarding what arrives) or the end of the stream."""
    try:
        async with asyncio.timeout(15):
            while True:
                head = await reader.readexactly(2)
                n = head[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await reader.readexactly(8))[0]
                await reader.readexactly(n)
                if head[0] & 0x0F == 0x8:
                    return True
    except asyncio.IncompleteReadError:
        return True
    except TimeoutError:
        return False


async def flood_once(port: int) -> tuple[int, bool]:
    """One anonymous connection: Engine.IO and Socket.IO handshakes, a binary event announcing FRAMES
    attachments, then FRAMES binary frames. Returns (frames written, whether the server closed it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(frame(0x1, b"40"))
    placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(FRAMES))
    writer.write(frame(0x1, f'45{FRAMES}-["ydoc:document:update",[{placeholders}]]'.encode()))
    payload = frame(0x2, b"\x04" + b"z" * (FRAME - 1))
    written = 0
    try:
        for _ in range(FRAMES):
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), 10)
            written += 1
        closed = await server_closes(reader)
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    return written, closed


async def run_floods(tmp_path: Path) -> tuple[int, int, int, list[tuple[int, bool]], str]:
    """ROUNDS rounds of CONNECTIONS floods against one server process while a signed-in user keeps being served:
    (RSS before, peak RSS after round 1, peak RSS, each flood's outcome, the server log)."""
    env = {"CHATWIRE_LOG_LEVEL": "WARNING", "CHATWIRE_JWT_SECRET": "s" * 32}
    async with serve_process(tmp_path, env) as server:
        ada = await server.signup("Ada")
        bystander = await RecordingClient(server.url).connect(ada["token"])
        try:
            assert await bystander.call("heartbeat", {}) is None
            before = peak = rss(server.proc.pid)
            outcomes: list[tuple[int, bool]] = []

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss(server.proc.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            after_first = 0
            try:
                for n in range(ROUNDS):
                    outcomes += await asyncio.gather(*(flood_once(server.port) for _ in range(CONNECTIONS)))
                    assert await bystander.call("heartbeat", {}, timeout=10) is None
                    if n == 0:
                        after_first = peak
            finally:
                sampler.cancel()
            peak = max(peak, rss(server.proc.pid))
            print(f"\nRSS {before >> 20} MB, after round 1 {after_first >> 20} MB, peak {peak >> 20} MB")
        finally:
            await bystander.close()
        return before, after_first, peak, outcomes, server.log()


async def test_attachment_floods_keep_rss_bounded_and_close_anonymous_connections(tmp_path: Path) -> None:
    before, _after_first, peak, outcomes, log = await run_floods(tmp_path)
    assert peak - before < RSS_GROWTH_BOUND, f"RSS grew {(peak - before) >> 20} MB"
    assert all(closed for _, closed in outcomes), outcomes
    assert "Traceback" not in log


async def test_later_floods_add_no_memory(tmp_path: Path) -> None:
    _before, after_first, peak, _outcomes, _log = await run_floods(tmp_path)
    later = peak - after_first
    assert later < RSS_GROWTH_BOUND // 4, f"rounds 2-{ROUNDS} added {later >> 20} MB"
