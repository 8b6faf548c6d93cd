"""chatwire's Socket.IO server and local client manager: python-socketio with the fast send path plugged in.

Every packet to a session served over uvicorn's websocket goes through `FastPath` (see fastpath.py); everything
else (long-polling sessions, binary attachments, emits with a callback) takes python-socketio's stock path.
"""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from chatwire.transport.fastpath import FastPath, broadcast


class ChatwireServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        *args: Any,
        fast_path: bool = True,
        fast_path_limits: tuple[int, int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        high, items, size = fast_path_limits or (1 << 20, 1000, 8 << 20)
        self.fastpath = FastPath(self, high_water=high, max_backlog=items, max_backlog_bytes=size)
        self.fast_enabled = fast_path

    async def _send_packet(self, eio_sid: str, pkt: sio_packet.Packet) -> None:
        if self.fast_enabled and self.fastpath.write_packet(eio_sid, pkt):
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
            self.fastpath.forget(eio_sid)


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
