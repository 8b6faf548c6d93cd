"""Engine.IO's websocket transport, run in the connection's own task: what an idle connection costs.

python-engineio serves each websocket with four tasks that live as long as the connection (the reader, a task per
read wrapped in a timeout, a writer task blocked on the packet queue inside another timeout) plus a sleeping task
per ping: ~7 KiB per idle connection, mostly coroutine frames, futures and timers. Here the same protocol runs with:

- the reader in the ASGI task that already exists for the connection, reading frames directly; the read timeout
  (no packet for ping interval + ping timeout ends the connection) is one timer per connection, re-armed only when
  it fires, not one per packet;
- a writer task that exists only while the socket's queue holds packets (`LeanQueue.on_put` starts it); packets
  keep their order and `close()`'s `queue.join()` still waits for them;
- the ping as a timer that queues the PING packet (see `LeanEngineIO.start_background_task`).

The handshake of a session that upgrades from long-polling (probe, NOOP to end the pending poll, UPGRADE) is
handled too, so those sessions get the same lean websocket afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
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


class Writer:
    """Sends what the Engine.IO socket queues, in order, from a task that exists only while there is work."""

    __slots__ = ("done", "queue", "task", "ws")

    def __init__(self, ws: Any, queue: Any) -> None:
        self.ws = ws
        self.queue = queue
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the websocket was closed (after the final None, or a failed send)

    def wake(self) -> None:
        if self.task is None and not self.done:
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        queue = self.queue
        try:
            while not self.done:
                try:
                    pkt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                queue.task_done()
                if pkt is None:  # the reader is finished: close the websocket after what came before
                    self.done = True
                    await self.ws.close()
                    return
                try:
                    await self.ws.send(pkt.encode())
                except Exception:  # the socket is gone: nothing more can be written
                    self.done = True
                    await self.ws.close()
                    return
        finally:
            self.task = None


class ReadTimeout:
    """Cancels the reader when no frame arrived for `timeout` seconds while it waits for one.

    `seen()` only records the time; the timer is re-armed when it fires early, so a busy connection costs no
    timer operations per frame."""

    __slots__ = ("deadline", "fired", "handle", "loop", "task", "timeout", "waiting")

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.timeout = timeout
        self.deadline = self.loop.time() + timeout
        self.waiting = False
        self.fired = False
        self.handle: asyncio.TimerHandle | None = self.loop.call_at(self.deadline, self._check)

    def seen(self) -> None:
        self.deadline = self.loop.time() + self.timeout

    def _check(self) -> None:
        now = self.loop.time()
        if now < self.deadline or not self.waiting:
            self.handle = self.loop.call_at(max(self.deadline, now + 0.05), self._check)
            return
        self.handle = None
        self.fired = True
        if self.task is not None:
            self.task.cancel()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def _read(ws: Any, server: Any, timer: ReadTimeout) -> Any:
    """The next frame, or None when the connection is over (closed, timed out, too large, undecodable)."""
    timer.waiting = True
    try:
        frame = await ws.wait()
    except asyncio.CancelledError:
        task = timer.task
        if timer.fired and task is not None and task.uncancel() == 0:
            return None
        raise
    except Exception:  # the websocket closed (python-engineio's ASGI wrapper raises OSError)
        return None
    finally:
        timer.waiting = False
    timer.seen()
    if frame is None:
        return None
    if len(frame) > server.max_http_buffer_size:
        return None
    if isinstance(frame, str) and not decodable(frame):
        log.info("malformed Engine.IO packet; closing the connection", extra={"frame": frame[:64]})
        return None
    return frame


async def _upgrade(sock: Any, ws: Any, timer: ReadTimeout) -> bool:
    """The polling-to-websocket switch: answer the probe, end the pending poll, wait for UPGRADE."""
    server = sock.server
    sock.upgrading = True  # packets are held in the queue meanwhile
    frame = await _read(ws, server, timer)
    if frame is None:
        return False
    pkt = eio_packet.Packet(encoded_packet=frame)
    if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
        sock.upgrading = False
        return False
    await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # answers the poll request still waiting
    frame = await _read(ws, server, timer)
    pkt = eio_packet.Packet(encoded_packet=frame) if frame is not None else None
    sock.upgrading = False
    if pkt is None or pkt.packet_type != eio_packet.UPGRADE:
        sock.upgraded = False
        return False
    sock.upgraded = True
    return True


async def serve_websocket(sock: Any, ws: Any) -> None:
    """Run Engine.IO socket `sock` over websocket `ws` until either side ends it."""
    server = sock.server
    timer = ReadTimeout(server.ping_interval + server.ping_timeout)
    try:
        if sock.connected:
            if not await _upgrade(sock, ws, timer):
                return
        else:
            sock.connected = True
            sock.upgraded = True
        queue = sock.queue
        writer = Writer(ws, queue)
        queue.on_put = writer.wake
        if not queue.empty():
            writer.wake()  # the OPEN packet (and whatever followed it) is already queued
        try:
            while True:
                frame = await _read(ws, server, timer)
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
        finally:
            queue.put_nowait(None)  # the writer sends what is queued, then closes the websocket
            task = writer.task
            if task is not None:
                await task
            queue.on_put = None
    finally:
        timer.stop()
    await sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


def ping_later(sock: Any) -> asyncio.TimerHandle:
    """Engine.IO's next PING to `sock`, one ping interval from now, as a timer instead of a sleeping task."""
    loop = asyncio.get_running_loop()
    return loop.call_later(sock.server.ping_interval, _ping_due, sock)


def _ping_due(sock: Any) -> None:
    if sock.closing or sock.closed:
        return
    sock.last_ping = time.time()
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
