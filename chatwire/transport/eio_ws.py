"""Engine.IO's websocket transport, run in the connection's own task: what an idle connection costs.

python-engineio serves each websocket with four tasks that live as long as the connection (the reader, a task per
read wrapped in a timeout, a writer task blocked on the packet queue inside another timeout) plus a sleeping task
per ping: ~7 KiB per idle connection, mostly coroutine frames, futures and timers. Here the same protocol runs with
one object per connection (`LeanWebSocket`) and:

- the reader in the ASGI task that already exists for the connection, reading the ASGI messages directly;
- the read timeout (no frame for ping interval + ping timeout ends the connection) and the next ping as entries in
  coarse timer wheels shared by all connections (`Wheel`), not a timer each; a frame only records its time;
- a writer task that exists only while the socket's queue holds packets (`LeanQueue.on_put` starts it); packets
  keep their order and `close()`'s `queue.join()` still waits for them.

The handshake of a session that upgrades from long-polling (probe, NOOP to end the pending poll, UPGRADE) is
handled too, so those sessions get the same lean websocket afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

log = logging.getLogger("chatwire.socket")


def decodable(frame: str) -> bool:
    """Whether python-engineio can decode a text websocket frame (it raises on the others: empty, a first
    character that is not a digit, bad base64 after `b`) or handle (a packet type above 6)."""
    if not frame:
        return False
    head = frame[0]
    if head == "b":
        try:
            base64.b64decode(frame[1:])
        except (binascii.Error, ValueError):
            return False
        return True
    return "0" <= head <= "6"  # open, close, ping, pong, message, upgrade, noop


class Wheel:
    """Coarse timers for many connections: entries due in the same `tick` share one event-loop timer, and an
    entry is a plain reference (no handle, no context copy). Entries cannot be cancelled; the callback checks
    whether there is still something to do. Calls come at most `tick` seconds late, never early."""

    __slots__ = ("buckets", "callback", "tick")

    def __init__(self, callback: Callable[[Any], None], tick: float = 0.1) -> None:
        self.callback = callback
        self.tick = tick
        self.buckets: dict[int, list[Any]] = {}

    def at(self, when: float, entry: Any) -> None:
        """Call `callback(entry)` at loop time `when` (rounded up to the tick)."""
        key = math.ceil(when / self.tick)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = []
            asyncio.get_running_loop().call_at(key * self.tick, self._fire, key)
        bucket.append(entry)

    def _fire(self, key: int) -> None:
        callback = self.callback
        for entry in self.buckets.pop(key, ()):
            try:
                callback(entry)
            except Exception:
                log.exception("connection timer failed")


def ping_due(sock: Any) -> None:
    """Engine.IO's PING to `sock`, one ping interval after the previous pong (see LeanEngineIO)."""
    if sock.closing or sock.closed:
        return
    sock.last_ping = time.time()
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


class LeanWebSocket:
    """Stands in for python-engineio's ASGI websocket wrapper and its handler: accepts the websocket, then serves
    Engine.IO socket `sock` over it in the calling task until either side ends it."""

    __slots__ = (
        "asgi_send",
        "closed",
        "deadline",
        "fired",
        "loop",
        "receive",
        "sock",
        "task",
        "waiting",
        "writer",
    )

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.receive: Callable[[], Any] | None = None
        self.asgi_send: Callable[[Any], Any] | None = None
        self.writer: asyncio.Task[None] | None = None  # exists only while queued packets are being sent
        self.closed = False  # the websocket was closed (after the final None, or a failed send)
        self.task: asyncio.Task[Any] | None = None  # the reader (the ASGI task); None once it has finished
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deadline = 0.0  # loop time after which a reader still waiting for a frame is timed out
        self.waiting = False
        self.fired = False

    # --- the ASGI side ---------------------------------------------------------------------------------------

    async def __call__(self, environ: dict[str, Any]) -> str:
        self.receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        await self.serve()
        return ""  # python-engineio's convention: nothing more to answer

    async def send(self, data: str | bytes) -> None:
        assert self.asgi_send is not None
        if isinstance(data, bytes):
            await self.asgi_send({"type": "websocket.send", "bytes": data, "text": None})
        else:
            await self.asgi_send({"type": "websocket.send", "bytes": None, "text": data})

    async def close(self) -> None:
        assert self.asgi_send is not None
        try:
            await self.asgi_send({"type": "websocket.close"})
        except Exception:  # already closed: nothing to do
            pass

    # --- reading -----------------------------------------------------------------------------------------------

    async def read(self) -> Any:
        """The next frame, or None when the connection is over (closed, timed out, too large, undecodable)."""
        assert self.receive is not None and self.loop is not None
        self.waiting = True
        try:
            message = await self.receive()
        except asyncio.CancelledError:
            task = self.task
            if self.fired and task is not None and task.uncancel() == 0:
                return None
            raise
        except Exception:  # the ASGI server could not deliver a message: the connection is over
            return None
        finally:
            self.waiting = False
        self.deadline = self.loop.time() + self._timeout()
        if message.get("type") != "websocket.receive":
            return None
        frame = message.get("bytes")
        if frame is None:
            frame = message.get("text")
            if frame is None:
                return None
        if len(frame) > self.sock.server.max_http_buffer_size:
            return None
        if isinstance(frame, str) and not decodable(frame):
            log.info("malformed Engine.IO packet; closing the connection", extra={"frame": frame[:64]})
            return None
        return frame

    def _timeout(self) -> float:
        server = self.sock.server
        return float(server.ping_interval + server.ping_timeout)

    def check_timeout(self) -> None:
        """Called by the read-timeout wheel: cancel a reader that waited too long, or come back later."""
        task, loop = self.task, self.loop
        if task is None or loop is None:
            return
        now = loop.time()
        if now < self.deadline or not self.waiting:
            self.sock.server.read_wheel.at(max(self.deadline, now + 0.5), self)
            return
        self.fired = True
        task.cancel()

    # --- writing -----------------------------------------------------------------------------------------------

    def wake(self) -> None:
        """A packet was queued: start the writer unless it is running."""
        if self.writer is None and not self.closed:
            self.writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        queue = self.sock.queue
        try:
            while not self.closed:
                try:
                    pkt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                queue.task_done()
                if pkt is None:  # the reader is finished: close the websocket after what came before
                    self.closed = True
                    await self.close()
                    return
                try:
                    await self.send(pkt.encode())
                except Exception:  # the socket is gone: nothing more can be written
                    self.closed = True
                    await self.close()
                    return
        finally:
            self.writer = None

    # --- the session -------------------------------------------------------------------------------------------

    async def serve(self) -> None:
        sock = self.sock
        server = sock.server
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + self._timeout()
        server.read_wheel.at(self.deadline, self)
        try:
            if sock.connected:
                if not await self._upgrade():
                    return
            else:
                sock.connected = True
                sock.upgraded = True
            queue = sock.queue
            queue.on_put = self.wake
            if not queue.empty():
                self.wake()  # the OPEN packet (and whatever followed it) is already queued
            try:
                while True:
                    frame = await self.read()
                    if frame is None:
                        break
                    try:
                        await sock.receive(eio_packet.Packet(encoded_packet=frame))
                    except eio_exceptions.UnknownPacketError:
                        pass
                    except eio_exceptions.SocketIsClosedError:
                        break
                    except Exception:
                        log.exception("Engine.IO receive failed")
                    if sock.closed:  # closed by either side while handling the frame: nothing more to serve
                        break
            finally:
                queue.put_nowait(None)  # the writer sends what is queued, then closes the websocket
                writer = self.writer
                if writer is not None:
                    await writer
                queue.on_put = None
        finally:
            self.task = None
        await sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        # The read-timeout wheel holds this object until its deadline (up to ping interval + timeout later):
        # through it nothing of the connection may stay alive (uvicorn's protocol keeps its parser and the last
        # frame read, up to the frame limit: a flood of short connections would otherwise pin them all).
        self.receive = None
        self.asgi_send = None
        self.sock = None

    async def _upgrade(self) -> bool:
        """The polling-to-websocket switch: answer the probe, end the pending poll, wait for UPGRADE."""
        sock = self.sock
        sock.upgrading = True  # packets are held in the queue meanwhile
        frame = await self.read()
        if frame is None:
            return False
        pkt = eio_packet.Packet(encoded_packet=frame)
        if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
            sock.upgrading = False
            return False
        await self.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        sock.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # answers the poll request still waiting
        frame = await self.read()
        pkt = eio_packet.Packet(encoded_packet=frame) if frame is not None else None
        sock.upgrading = False
        if pkt is None or pkt.packet_type != eio_packet.UPGRADE:
            sock.upgraded = False
            return False
        sock.upgraded = True
        return True
