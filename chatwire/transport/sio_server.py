"""chatwire's Socket.IO server and local client manager: python-socketio with the fast send path plugged in.

Every packet to a session served over uvicorn's websocket goes through `FastPath` (see fastpath.py); everything
else (long-polling sessions, binary attachments, emits with a callback) takes python-socketio's stock path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from chatwire.transport.eio_ws import LeanWebSocket, Wheel, ping_due
from chatwire.transport.fastpath import FastPath, broadcast

log = logging.getLogger("chatwire.socket")

# What a malformed Socket.IO packet raises while python-socketio decodes or dispatches it (orjson's
# JSONDecodeError is a ValueError).
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)
# Names python-socketio would dispatch to the lifecycle handlers if a client sent them as events.
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


def _lean(make_ws: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps python-engineio's websocket driver: an Engine.IO socket's websocket is served by `LeanWebSocket`
    (eio_ws.py), which also ends the connection cleanly on a frame python-engineio cannot decode."""

    def make(handler: Callable[[Any], Awaitable[Any]], server: Any) -> Any:
        sock = getattr(handler, "__self__", None)
        if (
            isinstance(sock, AsyncSocket)
            and getattr(handler, "__func__", None) is AsyncSocket._websocket_handler
        ):
            return LeanWebSocket(sock)
        return make_ws(handler, server)

    return make


class LeanQueue:
    """The part of asyncio.Queue that Engine.IO's sockets use (put, get, get_nowait, task_done, join), without
    the four deques and the Event an asyncio.Queue allocates up front: an idle connection's queue is ~100 bytes
    instead of ~2.5 KiB. Items wait in a deque that exists only while there are items."""

    __slots__ = ("_getters", "_items", "_joined", "_unfinished", "before_put", "on_put")

    def __init__(self) -> None:
        # Called before an item is queued: the fast path writes out what it gathered for this session, so that
        # packets taking Engine.IO's own path (its pings, CLOSE) never overtake them on the wire.
        self.before_put: Callable[[], None] | None = None
        # Called after an item is queued: wakes the on-demand writer of a websocket session (eio_ws.py).
        self.on_put: Callable[[], None] | None = None
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._joined: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self.before_put is not None:
            self.before_put()
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._unfinished += 1
        self._wake_one()
        if self.on_put is not None:
            self.on_put()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and self._items:
                    self._wake_one()  # woken, then cancelled: pass the item's wake-up on
                raise
            finally:
                if self._getters is not None and waiter in self._getters:
                    self._getters.remove(waiter)
                if not self._getters:
                    self._getters = None
        return self.get_nowait()

    def keep_only(self, keep: Callable[[Any], bool]) -> None:
        """Drop the waiting items for which `keep` is false (counted as done)."""
        items = self._items
        if not items:
            return
        kept = [item for item in items if keep(item)]
        for _ in range(len(items) - len(kept)):
            self.task_done()
        self._items = deque(kept) if kept else None

    def _wake_one(self) -> None:
        for waiter in self._getters or ():
            if not waiter.done():
                waiter.set_result(None)
                return

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joined is not None and not self._joined.done():
            self._joined.set_result(None)

    async def join(self) -> None:
        if self._unfinished > 0:
            if self._joined is None or self._joined.done():
                self._joined = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._joined)


class LeanEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """Engine.IO server whose per-connection packet queues are `LeanQueue`s and whose pings and websocket read
    timeouts wait in timer wheels shared by all connections (eio_ws.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ping_wheel = Wheel(ping_due)
        self.read_wheel = Wheel(LeanWebSocket.check_timeout, tick=0.5)

    def create_queue(self, *args: Any, **kwargs: Any) -> LeanQueue:
        return LeanQueue()

    def start_background_task(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A socket's next ping waits in the ping wheel, not in a task sleeping for the ping interval (~1.5 KiB
        less per connection); every other background task is started as usual."""
        if getattr(target, "__func__", None) is AsyncSocket._send_ping and not args and not kwargs:
            loop = asyncio.get_running_loop()
            self.ping_wheel.at(loop.time() + self.ping_interval, target.__self__)  # type: ignore[attr-defined]
            return None
        return super().start_background_task(target, *args, **kwargs)


class ChatwireServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        *args: Any,
        fast_path: bool = True,
        fast_path_limits: tuple[int, int, int] | None = None,
        attachment_limits: tuple[int, int] = (16, 1 << 20),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Binary attachments of one packet: at most this many, of at most this many bytes in all. Checked on the
        # announcement (its count) and before each attachment is kept, so nothing past the limit is buffered.
        self.max_attachments, self.max_attachment_bytes = attachment_limits
        self._attachment_bytes: dict[str, int] = {}
        # Binary frames still to be thrown away after a refused packet, by Engine.IO session.
        self._discard: dict[str, int] = {}
        # Whether a Socket.IO session has authenticated (set by the transport): anonymous ones over a limit are
        # disconnected, authenticated ones get an error ack and keep their connection.
        self.is_authenticated: Callable[[str], bool] = lambda _sid: False
        self.attachments_refused = 0
        high, items, size = fast_path_limits or (1 << 20, 1000, 8 << 20)
        self.fastpath = FastPath(self, high_water=high, max_backlog=items, max_backlog_bytes=size)
        self.fast_enabled = fast_path
        # This server's Engine.IO websockets are served by eio_ws.LeanWebSocket (a per-instance copy of the
        # driver table: nothing global is patched).
        drivers = dict(self.eio._async)
        if drivers.get("websocket") is not None:
            drivers["websocket"] = _lean(drivers["websocket"])
            self.eio._async = drivers

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        """A client event named like a lifecycle event (`disconnect`, `connect`, ...) is refused: python-socketio
        would otherwise run the server's own disconnect handler for a session that is still connected."""
        name = data[0] if isinstance(data, list) and data else None
        if isinstance(name, str) and name in RESERVED_EVENTS:
            log.info("reserved event name refused", extra={"eio_sid": eio_sid, "event": name})
            ns = namespace or "/"
            sid = self.manager.sid_from_eio_sid(eio_sid, ns)
            if id is not None and sid is not None and self.manager.is_connected(sid, ns):
                error = {
                    "error": {"code": "invalid_payload", "message": f"{name!r} is a reserved event name"}
                }
                await self._send_packet(
                    eio_sid, self.packet_class(sio_packet.ACK, namespace=ns, id=id, data=[error])
                )
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """A Socket.IO packet that does not decode (bad JSON, text that is not encodable UTF-8, wrong shape, an
        attachment nobody announced) is dropped with one log line and, when it asked for an ack, answered with
        `invalid_payload`; the connection stays open, as for any other refused input. Binary attachments are
        held to the per-packet limits before they are kept."""
        if isinstance(data, bytes | bytearray | memoryview):
            if await self._guard_attachment(eio_sid, len(data)):
                return
        elif isinstance(data, str) and data[:1] in ("5", "6"):
            count = _attachment_count(data)
            if count is not None and count > self.max_attachments:
                await self._refuse_binary(
                    eio_sid, data, count, f"more than {self.max_attachments} binary attachments in one packet"
                )
                return
            self._attachment_bytes.pop(eio_sid, None)
        try:
            await super()._handle_eio_message(eio_sid, data)
        except MALFORMED as exc:
            self._binary_packet.pop(eio_sid, None)
            self._attachment_bytes.pop(eio_sid, None)
            log.info(
                "malformed Socket.IO packet dropped",
                extra={"eio_sid": eio_sid, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            if isinstance(data, str):
                await self._ack_error(eio_sid, data, "payload is not valid JSON of encodable text")
        if eio_sid not in self._binary_packet:
            self._attachment_bytes.pop(eio_sid, None)

    async def _guard_attachment(self, eio_sid: str, size: int) -> bool:
        """Whether a binary frame is thrown away: it belongs to a refused packet, or it would take the packet
        over its byte limit (then the packet is refused)."""
        left = self._discard.get(eio_sid)
        if left is not None:
            if left <= 1:
                del self._discard[eio_sid]
            else:
                self._discard[eio_sid] = left - 1
            return True
        pkt = self._binary_packet.get(eio_sid)
        if pkt is None:
            return False  # nobody announced it: python-socketio refuses it as malformed
        total = self._attachment_bytes.get(eio_sid, 0) + size
        if total <= self.max_attachment_bytes:
            self._attachment_bytes[eio_sid] = total
            return False
        del self._binary_packet[eio_sid]
        self._attachment_bytes.pop(eio_sid, None)
        left = pkt.attachment_count - len(pkt.attachments) - 1
        pkt.attachments.clear()  # freed now, whatever may still reference the packet
        await self._refuse_binary(
            eio_sid,
            None,
            left,
            f"binary attachments over {self.max_attachment_bytes} bytes in one packet",
            pkt=pkt,
        )
        return True

    async def _refuse_binary(
        self, eio_sid: str, header: str | None, left: int, reason: str, pkt: Any = None
    ) -> None:
        """Refuse a binary packet over the limits: an anonymous session is disconnected; an authenticated one
        gets `payload_too_large` (when it asked for an ack) and its remaining attachments are thrown away."""
        namespace = (pkt.namespace if pkt is not None else None) or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        self.attachments_refused += 1
        if sid is None or not self.is_authenticated(sid):
            log.info(
                "binary packet over the limits; anonymous connection closed",
                extra={"eio_sid": eio_sid, "reason": reason},
            )
            self._discard.pop(eio_sid, None)
            await self.eio.disconnect(eio_sid)
            return
        log.info(
            "binary packet over the limits refused", extra={"eio_sid": eio_sid, "sid": sid, "reason": reason}
        )
        if left > 0:
            self._discard[eio_sid] = left
        if pkt is not None:
            ack_id, ns = pkt.id, namespace
        else:
            ack_id, ns = _ack_target(header or "")
        if ack_id is not None:
            error = {"error": {"code": "payload_too_large", "message": reason}}
            await self._send_packet(
                eio_sid, self.packet_class(sio_packet.ACK, namespace=ns, id=ack_id, data=[error])
            )

    async def _ack_error(self, eio_sid: str, data: str, reason: str) -> None:
        """Answer a refused event packet with an `invalid_payload` ack when it carried an ack id."""
        if data[:1] not in ("2", "5"):
            return
        ack_id, ns = _ack_target(data)
        if ack_id is None:
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, ns)
        if sid is None or not self.manager.is_connected(sid, ns):
            return
        error = {"error": {"code": "invalid_payload", "message": reason}}
        await self._send_packet(
            eio_sid, self.packet_class(sio_packet.ACK, namespace=ns, id=ack_id, data=[error])
        )

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return LeanEngineIO

    async def _send_packet(self, eio_sid: str, pkt: sio_packet.Packet) -> None:
        if self.fast_enabled and self.fastpath.write_packet(eio_sid, pkt):
            if pkt.packet_type == sio_packet.CONNECT:
                self.fastpath.release_handshake(eio_sid)
            return
        await super()._send_packet(eio_sid, pkt)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: eio_packet.Packet) -> None:
        if self.fast_enabled and self.fastpath.write_eio(eio_sid, eio_pkt):
            return
        await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            # Engine.IO's service task keeps closed sockets in its list for up to a ping timeout: through the
            # queue's flush hook they would keep the websocket protocol alive, with its parser and last frame.
            queue = getattr(self.eio.sockets.get(eio_sid), "queue", None)
            if isinstance(queue, LeanQueue) and queue.before_put is not None:
                queue.before_put()  # what the fast path gathered still goes out before Engine.IO's CLOSE
                queue.before_put = None
            self.fastpath.forget(eio_sid)
            self._attachment_bytes.pop(eio_sid, None)
            self._discard.pop(eio_sid, None)
            self._binary_packet.pop(eio_sid, None)


def _attachment_count(data: str) -> int | None:
    """The attachment count a binary packet (`5<n>-...`, `6<n>-...`) announces, read before any decoding."""
    dash = data.find("-", 1, 24)
    digits = data[1:dash] if dash > 0 else ""
    return int(digits) if digits.isdigit() else None


def _ack_target(data: str) -> tuple[int | None, str]:
    """The ack id and namespace in the header of an encoded event packet (`2/ns,12[...]`, `51-12[...]`)."""
    i = 1
    if data[:1] in ("5", "6"):
        dash = data.find("-", 1, 24)
        if dash < 0:
            return None, "/"
        i = dash + 1
    namespace = "/"
    if data[i : i + 1] == "/":
        comma = data.find(",", i, i + 256)
        if comma < 0:
            return None, "/"
        namespace, i = data[i:comma], comma + 1
    j = i
    while j < len(data) and j - i < 18 and data[j].isdigit():
        j += 1
    return (int(data[i:j]) if j > i else None), namespace


class LocalManager(socketio.AsyncManager):  # type: ignore[misc]
    """The in-process client manager with the one-encoding, no-task broadcast."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or not getattr(self.server, "fast_enabled", False):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        try:
            fallback = broadcast(self, event, data, namespace, room, skip_sid)
        except TypeError:  # not JSON-encodable by orjson (binary attachments): the stock path handles it
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
            return
        if fallback:
            args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
            pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
            encoded = pkt.encode()
            for ep in encoded if isinstance(encoded, list) else [encoded]:
                eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, ep)
                for eio_sid in fallback:
                    await self.server.eio.send_packet(eio_sid, eio_pkt)
