"""The Broker: how an event reaches a room or one session, and who is in which room.

Services publish only through this interface, so they never know whether delivery is local (one process)
or crosses a fleet. Invariant: events published to one room from one task arrive in publication order.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class Broker(Protocol):
    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        """Send `event` to every session in `room` (a room name or a session id), except `skip_sid`."""
        ...

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        """Send `event` to one session and return its acknowledgement; raises TimeoutError."""
        ...

    async def enter_room(self, sid: str, room: str) -> None: ...

    async def enter_rooms(self, sid: str, rooms: list[str]) -> None:
        """Enter every room of `rooms` (in one step where the backend can)."""
        ...

    async def leave_room(self, sid: str, room: str) -> None: ...

    async def close_room(self, room: str) -> None:
        """Remove every session from `room`."""
        ...

    async def disconnect(self, sid: str) -> None: ...

    async def room_sids(self, room: str) -> list[str]:
        """The sessions in `room`."""
        ...

    async def rooms_of(self, sid: str) -> list[str]:
        """The rooms `sid` is in (its own sid room excluded)."""
        ...


@runtime_checkable
class EmitsNow(Protocol):
    """A Broker that can deliver an event without awaiting when nothing needs to wait (the own engine with the
    in-process event log, see `Delivery.emit_now` in chatwire/transport/hub.py). Callers on a hot path (one call
    per token) use it and fall back to `emit` when it declines."""

    def emit_now(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> bool:
        """`emit` as one plain call: True if delivered, False if nothing was done and only `emit` can (an
        awaiting emit is in progress and must not be overtaken, or the delivery itself awaits)."""
        ...
