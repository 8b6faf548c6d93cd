"""A Broker without sockets: rooms kept in dicts and emits recorded, for driving services in tests and benchmarks."""

from __future__ import annotations

from typing import Any


class MemoryBroker:
    """Keeps room membership and records every emit as `(event, data, room, skip_sid)`; nothing is delivered."""

    def __init__(self, *, record: bool = True) -> None:
        self.rooms: dict[str, set[str]] = {}
        self.emitted: list[tuple[str, Any, str, str | None]] = []
        self.record = record

    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        if self.record:
            self.emitted.append((event, data, room, skip_sid))

    def emit_now(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> bool:
        """`emit` without an await (EmitsNow): recording never waits."""
        if self.record:
            self.emitted.append((event, data, room, skip_sid))
        return True

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        raise TimeoutError("no session answers through a MemoryBroker")

    async def enter_room(self, sid: str, room: str) -> None:
        self.rooms.setdefault(room, set()).add(sid)

    async def enter_rooms(self, sid: str, rooms: list[str]) -> None:
        for room in rooms:
            await self.enter_room(sid, room)

    async def leave_room(self, sid: str, room: str) -> None:
        self.rooms.get(room, set()).discard(sid)

    async def close_room(self, room: str) -> None:
        self.rooms.pop(room, None)

    async def disconnect(self, sid: str) -> None:
        return None

    async def room_sids(self, room: str) -> list[str]:
        return sorted(self.rooms.get(room, set()))

    async def rooms_of(self, sid: str) -> list[str]:
        return [room for room, sids in self.rooms.items() if sid in sids]

    def events(self, name: str) -> list[Any]:
        """The data of every recorded emit of `name`."""
        return [data for event, data, _room, _skip in self.emitted if event == name]
