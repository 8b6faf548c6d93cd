"""A Broker over python-socketio's AsyncServer: its client manager does the routing (memory or pub/sub)."""

from __future__ import annotations

from typing import Any

import socketio

NAMESPACE = "/"


class SioBroker:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        await self.sio.emit(event, data, room=room, skip_sid=skip_sid, namespace=NAMESPACE)

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        return await self.sio.call(event, data, to=sid, timeout=timeout, namespace=NAMESPACE)

    async def enter_room(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)

    async def leave_room(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room, namespace=NAMESPACE)

    async def close_room(self, room: str) -> None:
        await self.sio.close_room(room, namespace=NAMESPACE)

    async def disconnect(self, sid: str) -> None:
        await self.sio.disconnect(sid, namespace=NAMESPACE)

    async def room_sids(self, room: str) -> list[str]:
        return [sid for sid, _eio in self.sio.manager.get_participants(NAMESPACE, room)]

    async def rooms_of(self, sid: str) -> list[str]:
        return [r for r in self.sio.rooms(sid, namespace=NAMESPACE) if r != sid]
