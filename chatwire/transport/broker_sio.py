"""A Broker over python-socketio's AsyncServer: its client manager does the routing (memory or pub/sub)."""

from __future__ import annotations

import time
from typing import Any

import socketio

from chatwire.metrics import Metrics

NAMESPACE = "/"


class SioBroker:
    def __init__(self, sio: socketio.AsyncServer, metrics: Metrics | None = None) -> None:
        self.sio = sio
        self.metrics = metrics

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        start = time.perf_counter()
        await self.sio.emit(event, data, room=room, skip_sid=skip_sid, namespace=NAMESPACE)
        if self.metrics is not None:
            self.metrics.event_out(event, time.perf_counter() - start)

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        return await self.sio.call(event, data, to=sid, timeout=timeout, namespace=NAMESPACE)

    async def enter_room(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)

    async def enter_rooms(self, sid: str, rooms: list[str]) -> None:
        """Enter all `rooms` in one step where the manager can batch (fleet: one bus subscription)."""
        batch = getattr(self.sio.manager, "enter_rooms", None)
        if batch is not None:
            await batch(sid, NAMESPACE, rooms)
            return
        for room in rooms:
            await self.sio.enter_room(sid, room, namespace=NAMESPACE)

    async def leave_room(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room, namespace=NAMESPACE)

    async def close_room(self, room: str) -> None:
        await self.sio.close_room(room, namespace=NAMESPACE)

    async def disconnect(self, sid: str) -> None:
        await self.sio.disconnect(sid, namespace=NAMESPACE)

    async def room_sids(self, room: str) -> list[str]:
        fleet_wide = getattr(self.sio.manager, "fleet_room_sids", None)
        if fleet_wide is not None:
            return list(await fleet_wide(room))
        return [sid for sid, _eio in self.sio.manager.get_participants(NAMESPACE, room)]

    async def rooms_of(self, sid: str) -> list[str]:
        return [r for r in self.sio.rooms(sid, namespace=NAMESPACE) if r != sid]
