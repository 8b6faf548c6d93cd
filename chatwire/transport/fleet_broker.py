"""The fleet Broker on chatwire's own engine: cross-process delivery over the Bus, beside `EngineBroker` (hub.py),
which it uses for everything local.

Routing (why not one shared channel that every process decodes, as python-socketio's stock Redis manager does): each
room has a topic (`room:{name}`) that a process subscribes to only while it has a local member, and each process has
a topic (`host:{id}`) for operations on one of its sessions (emit to a sid, event calls and their answers, room
entry/exit, disconnects). A process with no member of a room never receives, decodes or encodes its traffic. A room
name contains ':' (`user:`, `channel:`, `note:`, `doc_note:`); anything else is a session id, located through the
SessionStore.

Events to recoverable rooms are appended to the shared log and published in one atomic step; every process, the
publisher included, delivers them from its subscription in sequence order. An operation over the fleet limit
(`max_payload_bytes`, 1 MiB by default) is never published itself, so it cannot trip Redis's pub/sub output buffer
limit: a logged event is published as a reference to its log entry, anything else is put in the BlobStore (chunked,
with a TTL) and a `blob` reference is published. Receivers resolve references inside the bus handler, one message at
a time, so a large event keeps its place in its room's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from chatwire.backends.bus import Bus
from chatwire.backends.eventlog import (
    LogEntry,
    SharedEventLog,
    format_offset,
    is_ephemeral,
    is_recoverable,
    parse_offset,
)
from chatwire.metrics import Metrics
from chatwire.transport.fleet_wire import RELOAD_EVENT, FleetWire, is_room_name, is_rostered
from chatwire.transport.hub import EngineBroker, Hub, spread

log = logging.getLogger("chatwire.fleet")

Locate = Callable[[str], Awaitable[str | None]]


def wire_data(data: Any) -> tuple[Any, bool]:
    """Event data as it crosses the bus: a tuple of arguments travels as a list marked `m` (multi)."""
    return (list(data), True) if isinstance(data, tuple) else (data, False)


def local_data(msg: dict[str, Any]) -> Any:
    return tuple(msg["d"]) if msg.get("m") else msg["d"]


class FleetBroker(FleetWire):
    """A `Broker` for a fleet member on the own engine; also the receiver of its bus messages."""

    def __init__(
        self,
        hub: Hub,
        bus: Bus,
        host_id: str,
        locate: Locate,
        max_payload_bytes: int,
        call_timeout: float = 60.0,
    ) -> None:
        self.init_wire(bus, host_id, max_payload_bytes, call_timeout)
        self.hub = hub
        self.delivery = hub.delivery
        self.local = EngineBroker(hub)
        self.locate = locate
        self.metrics: Metrics | None = None
        self._calls: dict[str, asyncio.Future[Any]] = {}
        # The log position this process has delivered (or skipped, at start) up to: a gap catch-up starts here.
        self._caught_up = 0
        self._checked_log: object = None
        self._shared_now: SharedEventLog | None = None
        hub.left_hooks.append(self._session_left)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.bus.on_gap(self._on_gap)
        await self.bus.start(self._on_message)
        await self.bus.subscribe(f"host:{self.host_id}", "all")
        if (shared := self._shared()) is not None:
            with contextlib.suppress(Exception):
                parsed = parse_offset(await shared.head())
                self._caught_up = parsed[1] if parsed is not None else 0

    async def stop(self) -> None:
        self.cancel_tasks()
        await self.bus.stop()

    def _shared(self) -> SharedEventLog | None:
        """The EventLog when it is the fleet's (Redis): recoverable events then travel through it. The answer is
        kept for the log it was asked of (the recovery service installs the log once, at start-up), so the
        capability check does not run per emit."""
        log_now = self.delivery.eventlog
        if log_now is not self._checked_log:
            self._checked_log = log_now
            self._shared_now = log_now if isinstance(log_now, SharedEventLog) else None
        return self._shared_now

    def _is_local(self, sid: str) -> bool:
        return sid in self.hub.sockets

    def _has_local(self, room: str) -> bool:
        return bool(self.hub.namespace.rooms.get(room))

    async def _to_host_of(self, sid: str, message: dict[str, Any]) -> bool:
        """Send an operation to the process that holds `sid`; False when no live process holds it."""
        host = await self.locate(sid)
        if host is None or host == self.host_id:
            return False
        return await self.bus.publish(f"host:{host}", await self._pack(message)) > 0

    # --- Broker: delivery ----------------------------------------------------------------------------------------
    async def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        start = time.perf_counter()
        await self._emit(event, data, room, skip_sid)
        if self.metrics is not None:
            self.metrics.event_out(event, time.perf_counter() - start)

    async def _emit(self, event: str, data: Any, room: str, skip_sid: str | None) -> None:
        wired, multi = wire_data(data)
        if not is_room_name(room):
            if self._is_local(room):
                self.delivery.emit_local(event, spread(data), room, skip_sid)
            else:
                await self._to_host_of(room, {"t": "emit", "sid": room, "e": event, "d": wired, "m": multi})
            return
        shared = self._shared()
        if shared is not None and is_recoverable(room) and not is_ephemeral(event, data):
            await self._log_and_publish(shared, event, data, room, skip_sid)
            return
        raw = await self._pack(
            {"t": "emit", "h": self.host_id, "room": room, "e": event, "d": wired, "m": multi, "s": skip_sid}
        )
        self.delivery.emit_local(event, spread(data), room, skip_sid)
        await self.bus.publish(f"room:{room}", raw)

    async def _log_and_publish(
        self, shared: SharedEventLog, event: str, data: Any, room: str, skip: str | None
    ) -> None:
        """Append to the shared log and publish on the room's topic in one atomic step (see eventlog_redis.py);
        this process delivers it when it comes back from its own subscription, in sequence order."""
        wired, multi = wire_data(data)
        body = self._dumps({"room": room, "e": event, "d": wired, "m": multi, "s": skip})
        if len(body) > self.max_payload_bytes:
            # Published by reference: receivers read the data back from the log entry.
            body = self._dumps({"room": room, "e": event, "ref": True, "m": multi, "s": skip})
            self.large_sent += 1
        await shared.append_and_publish(
            room, event, data, skip_sid=skip, channel=self.bus.channel_name(f"room:{room}"), message=body
        )

    async def call(self, event: str, data: Any, *, sid: str, timeout: float) -> Any:
        if self._is_local(sid):
            return await self.local.call(event, data, sid=sid, timeout=timeout)
        wired, multi = wire_data(data)
        call_id = f"{self.host_id}:{next(self._call_ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        message = {
            "t": "call",
            "sid": sid,
            "e": event,
            "d": wired,
            "m": multi,
            "id": call_id,
            "reply": self.host_id,
            "timeout": timeout,
        }
        try:
            if not await self._to_host_of(sid, message):
                return {"error": "session gone"}
            return await asyncio.wait_for(future, timeout)
        finally:
            self._calls.pop(call_id, None)

    async def _answer_call(self, msg: dict[str, Any]) -> None:
        """Run an event call for a session of this process and send the answer back to the asking process."""
        answer: list[Any]
        if not self._is_local(msg["sid"]):
            answer = [{"error": "session gone"}]
        else:
            try:
                result = await self.local.call(
                    msg["e"], local_data(msg), sid=msg["sid"], timeout=msg.get("timeout") or 60
                )
            except TimeoutError:
                return  # the asking process times out by itself
            answer = list(result) if isinstance(result, tuple) else [result]
        with contextlib.suppress(Exception):
            await self.bus.publish(
                f"host:{msg['reply']}", self._encode({"t": "reply", "id": msg["id"], "d": answer})
            )

    # --- Broker: membership --------------------------------------------------------------------------------------
    async def enter_room(self, sid: str, room: str) -> None:
        await self.enter_rooms(sid, [room])

    async def enter_rooms(self, sid: str, rooms: list[str]) -> None:
        """Enter rooms in one step: one bus subscription for all new topics, one read of the log head for all newly
        subscribed recoverable rooms (entries published before a subscription never arrive live)."""
        if not self._is_local(sid):
            for room in rooms:
                await self._to_host_of(sid, {"t": "enter", "sid": sid, "room": room})
            return
        topics: list[str] = []
        fresh: list[str] = []
        for room in rooms:
            had = self._has_local(room)
            await self.local.enter_room(sid, room)
            if not had and is_room_name(room):
                topics.append(f"room:{room}")
                if is_recoverable(room):
                    fresh.append(room)
        if topics:
            await self.bus.subscribe(*topics)
        if self.roster is not None:
            for room in rooms:
                if is_rostered(room):
                    await self.roster.add(room, sid)
        shared = self._shared()
        if fresh and shared is not None:
            parsed = parse_offset(await shared.head())
            bound = self.delivery.entered.get(sid)
            if parsed is not None and bound is not None:
                for room in fresh:
                    bound[room] = max(bound.get(room, 0), parsed[1])

    async def leave_room(self, sid: str, room: str) -> None:
        if not self._is_local(sid):
            await self._to_host_of(sid, {"t": "leave", "sid": sid, "room": room})
            return
        await self.local.leave_room(sid, room)
        await self._room_left(room, sid)

    async def _room_left(self, room: str, sid: str) -> None:
        if is_room_name(room) and not self._has_local(room):
            await self.bus.unsubscribe(f"room:{room}")
        if self.roster is not None and is_rostered(room):
            await self.roster.remove(room, sid)

    def _session_left(self, sid: str, rooms: list[str]) -> None:
        async def left() -> None:
            for room in rooms:
                await self._room_left(room, sid)

        self._spawn(left())

    async def close_room(self, room: str) -> None:
        await self._close_local(room)
        await self.bus.publish(f"room:{room}", self._encode({"t": "close", "h": self.host_id, "room": room}))

    async def _close_local(self, room: str) -> None:
        had = self._has_local(room)
        await self.local.close_room(room)
        if had and is_room_name(room):
            await self.bus.unsubscribe(f"room:{room}")

    async def disconnect(self, sid: str) -> None:
        if self._is_local(sid):
            self.hub.disconnect(sid)
        else:
            await self._to_host_of(sid, {"t": "disconnect", "sid": sid})

    async def room_sids(self, room: str) -> list[str]:
        """The sessions in `room` on every process (document rooms), else this process's."""
        if self.roster is not None and is_rostered(room):
            return list(await self.roster.members(room))
        return await self.local.room_sids(room)

    async def rooms_of(self, sid: str) -> list[str]:
        return await self.local.rooms_of(sid)

    # --- receiving -----------------------------------------------------------------------------------------------
    async def _on_logged(self, payload: bytes) -> None:
        """A logged publication `L<seq>|<epoch>|<json>`: deliver it to this process's members, in order."""
        head, _, body = payload[1:].partition(b"|")
        epoch, _, body = body.partition(b"|")
        seq = int(head)
        if seq <= self.delivery.delivered_seq:
            return  # already delivered by a gap catch-up
        msg = orjson.loads(body)
        shared = self._shared()
        if msg.get("ref") and shared is not None:
            found, data_of = await shared.data_of(msg["room"], seq)
            if not found:
                log.warning(
                    "large event gone from the log before delivery", extra={"room": msg["room"], "seq": seq}
                )
                return
            msg["d"] = data_of
            self.large_received += 1
        entry = LogEntry(
            seq, format_offset(epoch.decode(), seq), msg["room"], msg["e"], local_data(msg), msg.get("s")
        )
        self.received += 1
        self.delivery.deliver(entry, msg.get("s"))

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if payload[:1] == b"L":
            await self._on_logged(payload)
            return
        msg = orjson.loads(payload)
        if msg.get("h") == self.host_id:
            return
        resolved = await self.resolve(topic, msg)
        if resolved is None:
            return
        msg = resolved
        self.received += 1
        kind = msg.get("t")
        if kind == "emit":
            target = str(msg.get("sid") or msg.get("room"))
            self.delivery.emit_local(msg["e"], spread(local_data(msg)), target, msg.get("s"))
        elif kind == "enter" and self._is_local(msg["sid"]):
            await self.enter_room(msg["sid"], msg["room"])
        elif kind == "leave" and self._is_local(msg["sid"]):
            await self.leave_room(msg["sid"], msg["room"])
        elif kind == "close":
            await self._close_local(msg["room"])
        elif kind == "disconnect" and self._is_local(msg["sid"]):
            self.hub.disconnect(msg["sid"])
        elif kind == "call":
            self._spawn(self._answer_call(msg))
        elif self.handle_common(msg):
            pass
        elif kind == "reply":
            future = self._calls.pop(msg["id"], None)
            if future is not None and not future.done():
                values = msg["d"]
                future.set_result(values[0] if len(values) == 1 else tuple(values) if values else None)

    async def _on_gap(self) -> None:
        """The bus was away: first deliver, in order, what the shared log holds for the local recoverable rooms past
        what this process delivered; then tell each local user room to reload (what is not logged cannot be
        caught up, and a browser must never show a silently incomplete answer)."""
        for hook in self.gap_hooks:  # first: what this process learnt from the bus is not trusted any more
            hook()
        await self._catch_up()
        rooms = [r for r in self.hub.namespace.rooms if r.startswith("user:")]
        log.warning("bus gap: local user rooms told to reload", extra={"rooms": len(rooms)})
        for room in rooms:
            self.delivery.emit_local("events", [dict(RELOAD_EVENT)], room, None)

    async def _catch_up(self) -> None:
        shared = self._shared()
        if shared is None:
            return
        since = shared.since_seq
        rooms = [r for r in self.hub.namespace.rooms if is_recoverable(r)]
        start = max(self.delivery.delivered_seq, self._caught_up)
        try:
            entries = await since(start, rooms)
        except Exception as exc:
            log.warning("bus gap: catch-up from the log failed", extra={"error": repr(exc)})
            return
        caught = 0
        for entry in entries:
            if entry.seq <= self.delivery.delivered_seq:
                continue
            caught += 1
            self.delivery.deliver(entry, entry.skip_sid)
        log.warning("bus gap: caught up from the log", extra={"entries": caught, "rooms": len(rooms)})
