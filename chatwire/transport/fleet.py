"""FleetManager: python-socketio's client manager extended across processes over the Bus.

Routing design (why not python-socketio's stock pub/sub manager): the stock manager publishes every operation on one
shared channel that every process decodes. Here each room has its own topic (`room:{name}`) that a process
subscribes to only while it has a local member, and each process has its own topic (`host:{id}`) for operations on
one session (emit to a sid, event calls and their answers, room entry/exit after a membership change,
disconnects). A process with no member of a room never receives, decodes or encodes that room's traffic.

Naming rule: a room name containing ':' is a room (`user:`, `channel:`, `note:`, `doc_note:`); anything else is a
session id, located through the SessionStore.

Large events: an operation over `max_payload_bytes` (the fleet limit, 1 MiB by default) is never published itself,
so it cannot trip Redis's pub/sub output buffer limit. A logged event (recoverable rooms) is stored whole in the
shared log as always, and the publication carries a reference (`ref`) instead of the data: each receiving process
reads the entry back from the log before delivering it. Anything else is put in the BlobStore (chunked, with a
TTL) and a `blob` reference is published. Receivers resolve references inside the bus handler, one message at a
time, so a large event keeps its place in its room's order; local sessions receive the event whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import socketio

from chatwire.backends.bus import Bus
from chatwire.backends.eventlog import LogEntry, format_offset, is_ephemeral, is_recoverable, parse_offset
from chatwire.transport.fleet_wire import RELOAD_EVENT, FleetWire, is_room_name, is_rostered
from chatwire.transport.recovery import RecoveringManager

log = logging.getLogger("chatwire.fleet")

Locate = Callable[[str], Awaitable[str | None]]


class FleetManager(RecoveringManager, FleetWire):
    def __init__(
        self, bus: Bus, host_id: str, locate: Locate, max_payload_bytes: int, call_timeout: float = 60.0
    ) -> None:
        super().__init__()
        self.init_wire(bus, host_id, max_payload_bytes, call_timeout)
        self.locate = locate
        self._calls: dict[str, tuple[Callable[..., Any], float]] = {}
        # The log position this process has delivered (or skipped, at start) up to: a gap catch-up starts here.
        self._caught_up = 0

    # lifecycle

    async def start(self) -> None:
        self.bus.on_gap(self._on_gap)
        await self.bus.start(self._on_message)
        await self.bus.subscribe(f"host:{self.host_id}", "all")
        if self._shared_log():
            with contextlib.suppress(Exception):
                parsed = parse_offset(await self.eventlog.head())  # type: ignore[union-attr]
                self._caught_up = parsed[1] if parsed is not None else 0

    async def stop(self) -> None:
        self.cancel_tasks()
        await self.bus.stop()

    # helpers

    def _is_local(self, sid: str, namespace: str) -> bool:
        return self.eio_sid_from_sid(sid, namespace) is not None

    async def _to_host_of(self, sid: str, message: dict[str, Any]) -> bool:
        """Send an operation to the process that holds `sid`; False when no live process holds it."""
        host = await self.locate(sid)
        if host is None or host == self.host_id:
            return False
        return await self.bus.publish(f"host:{host}", await self._pack(message)) > 0

    async def _room_changed(self, namespace: str, room: Any, had: bool) -> None:
        if not isinstance(room, str) or not is_room_name(room):
            return
        has = room in self.rooms.get(namespace, {})
        if has and not had:
            await self.bus.subscribe(f"room:{room}")
        elif had and not has:
            await self.bus.unsubscribe(f"room:{room}")

    # room membership

    async def enter_room(self, sid: str, namespace: str, room: str, eio_sid: str | None = None) -> None:
        if eio_sid is None and not self._is_local(sid, namespace):
            await self._to_host_of(sid, {"t": "enter", "sid": sid, "room": room, "ns": namespace})
            return
        had = room in self.rooms.get(namespace, {})
        self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        await self._room_changed(namespace, room, had)
        if self.roster is not None and is_rostered(room):
            await self.roster.add(room, sid)
        if not had and is_recoverable(room) and self._shared_log():
            # Newly subscribed: entries published before the subscription never arrive live, so a replay for this
            # session must cover the log up to now (what arrives live after that is deduplicated by seq).
            parsed = parse_offset(await self.eventlog.head())  # type: ignore[union-attr]
            if parsed is not None and sid in self.entered:
                bound = self.entered[sid]
                bound[room] = max(bound.get(room, 0), parsed[1])

    async def enter_rooms(self, sid: str, namespace: str, rooms: list[str]) -> None:
        """`enter_room` for many rooms at once (user-join): one bus subscription for all new topics, one read of
        the log head for all newly subscribed recoverable rooms."""
        if not self._is_local(sid, namespace):
            for room in rooms:
                await self.enter_room(sid, namespace, room)
            return
        topics: list[str] = []
        fresh: list[str] = []
        for room in rooms:
            had = room in self.rooms.get(namespace, {})
            self.basic_enter_room(sid, namespace, room)
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
        if fresh and self._shared_log():
            parsed = parse_offset(await self.eventlog.head())  # type: ignore[union-attr]
            if parsed is not None and sid in self.entered:
                bound = self.entered[sid]
                for room in fresh:
                    bound[room] = max(bound.get(room, 0), parsed[1])

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        if not self._is_local(sid, namespace):
            await self._to_host_of(sid, {"t": "leave", "sid": sid, "room": room, "ns": namespace})
            return
        had = room in self.rooms.get(namespace, {})
        self.basic_leave_room(sid, namespace, room)
        await self._room_changed(namespace, room, had)
        if self.roster is not None and is_rostered(room):
            await self.roster.remove(room, sid)

    async def close_room(self, room: str, namespace: str) -> None:
        await self._close_local(room, namespace)
        await self.bus.publish(
            f"room:{room}", self._encode({"t": "close", "h": self.host_id, "room": room, "ns": namespace})
        )

    async def _close_local(self, room: str, namespace: str) -> None:
        had = room in self.rooms.get(namespace, {})
        self.basic_close_room(room, namespace)
        await self._room_changed(namespace, room, had)

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        rooms = [r for r in self.get_rooms(sid, namespace) if r != sid]
        self.basic_disconnect(sid, namespace, **kwargs)
        for room in rooms:
            await self._room_changed(namespace, room, True)
            if self.roster is not None and is_rostered(room):
                await self.roster.remove(room, sid)

    async def fleet_room_sids(self, room: str) -> list[str]:
        """The sessions in `room` on every process (document rooms), else this process's."""
        if self.roster is not None and is_rostered(room):
            return list(await self.roster.members(room))
        return [sid for sid, _eio in self.get_participants("/", room)]

    async def can_disconnect(self, sid: str, namespace: str) -> bool:
        if self.is_connected(sid, namespace):
            return True
        await self._to_host_of(sid, {"t": "disconnect", "sid": sid, "ns": namespace})
        return False

    # delivery

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Callable[..., Any] | None = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        args = list(data) if isinstance(data, tuple) else data
        multi = isinstance(data, tuple)
        if room is not None and not is_room_name(room):
            if self._is_local(room, namespace):
                await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback)
                return
            message: dict[str, Any] = {
                "t": "emit",
                "sid": room,
                "e": event,
                "d": args,
                "m": multi,
                "ns": namespace,
            }
            if callback is not None:
                now = asyncio.get_running_loop().time()
                for stale in [k for k, (_cb, deadline) in self._calls.items() if deadline < now]:
                    del self._calls[stale]  # the asking side timed out long ago
                call_id = f"{self.host_id}:{next(self._call_ids)}"
                self._calls[call_id] = (callback, now + self.call_timeout * 2)
                message.update(t="call", id=call_id, reply=self.host_id, timeout=self.call_timeout)
                if not await self._to_host_of(room, message):
                    self._calls.pop(call_id, None)
                    callback({"error": "session gone"})
                return
            await self._to_host_of(room, message)
            return
        if (
            callback is None
            and namespace == "/"
            and self._shared_log()
            and room is not None
            and is_recoverable(room)
            and not is_ephemeral(event, args)
        ):
            await self._log_and_publish(event, args, multi, room, skip_sid)
            return
        raw = await self._pack(
            {
                "t": "emit",
                "h": self.host_id,
                "room": room,
                "e": event,
                "d": args,
                "m": multi,
                "s": skip_sid,
                "ns": namespace,
            }
        )
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback)
        await self.bus.publish("all" if room is None else f"room:{room}", raw)

    # receiving

    def _shared_log(self) -> bool:
        """True when the EventLog is the fleet's (Redis): recoverable events then travel through it."""
        return hasattr(self.eventlog, "append_and_publish") and hasattr(self.bus, "channel_name")

    async def _log_and_publish(self, event: str, args: Any, multi: bool, room: str, skip_sid: Any) -> None:
        """Append to the shared log and publish on the room's topic in one atomic step (see eventlog_redis.py).

        No local delivery here: this process gets the event back from its own subscription (when it has members
        in the room), so every process, this one included, delivers a room's events in sequence order."""
        skip = skip_sid if isinstance(skip_sid, str) else None
        body = self._dumps({"room": room, "e": event, "d": args, "m": multi, "s": skip})
        if len(body) > self.max_payload_bytes:
            # Published by reference: receivers read the data back from the log entry (see the module doc).
            body = self._dumps({"room": room, "e": event, "ref": True, "m": multi, "s": skip})
            self.large_sent += 1
        data = tuple(args) if multi else args
        await self.eventlog.append_and_publish(  # type: ignore[union-attr]
            room, event, data, skip_sid=skip, channel=self.bus.channel_name(f"room:{room}"), message=body
        )

    async def _on_logged(self, payload: bytes) -> None:
        """A logged publication `L<seq>|<epoch>|<json>`: deliver it to this process's members, in order."""
        head, _, body = payload[1:].partition(b"|")
        epoch, _, body = body.partition(b"|")
        seq = int(head)
        if seq <= self.delivered_seq:
            return  # already delivered by a gap catch-up (a room's entries arrive in seq order otherwise)
        msg = orjson.loads(body)
        if msg.get("ref"):
            found, data_of = await self.eventlog.data_of(msg["room"], seq)  # type: ignore[union-attr]
            if not found:
                log.warning(
                    "large event gone from the log before delivery", extra={"room": msg["room"], "seq": seq}
                )
                return
            msg["d"] = data_of
            self.large_received += 1
        data = tuple(msg["d"]) if msg.get("m") else msg["d"]
        entry = LogEntry(seq, format_offset(epoch.decode(), seq), msg["room"], msg["e"], data, msg.get("s"))
        self.received += 1
        tasks = self.deliver(entry, msg.get("s"))
        if tasks:
            await asyncio.wait(tasks)

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
        ns = msg.get("ns", "/")
        if kind == "emit":
            data = tuple(msg["d"]) if msg.get("m") else msg["d"]
            target = msg.get("sid") or msg.get("room")
            await RecoveringManager.emit(self, msg["e"], data, ns, room=target, skip_sid=msg.get("s"))
        elif kind == "enter" and self._is_local(msg["sid"], ns):
            await self.enter_room(msg["sid"], ns, msg["room"])
        elif kind == "leave" and self._is_local(msg["sid"], ns):
            await self.leave_room(msg["sid"], ns, msg["room"])
        elif kind == "close":
            await self._close_local(msg["room"], ns)
        elif kind == "disconnect" and self.is_connected(msg["sid"], ns):
            await self.server.disconnect(msg["sid"], namespace=ns, ignore_queue=True)
        elif kind == "call":
            self._spawn(self._answer_call(msg))
        elif self.handle_common(msg):
            pass
        elif kind == "reply":
            pending = self._calls.pop(msg["id"], None)
            if pending is not None:
                pending[0](*msg["d"])

    async def _on_gap(self) -> None:
        """The bus was away: events for local sessions may be lost. First deliver, in order, what the shared log
        holds for the local recoverable rooms past what this process delivered (it runs before the resubscribed
        listener reads on, which then skips what was caught up). Then tell each local user room to reload its
        chats (the same `chat:reload` a slow reader gets): events that are not logged (stream deltas of other
        rooms, documents) cannot be caught up, and a browser must never show a silently incomplete answer."""
        for hook in self.gap_hooks:  # first: what this process learnt from the bus is not trusted any more
            hook()
        await self._catch_up()
        rooms = [r for r in self.rooms.get("/", {}) if isinstance(r, str) and r.startswith("user:")]
        log.warning("bus gap: local user rooms told to reload", extra={"rooms": len(rooms)})
        for room in rooms:
            await RecoveringManager.emit(self, "events", dict(RELOAD_EVENT), "/", room=room)

    async def _catch_up(self) -> None:
        since = getattr(self.eventlog, "since_seq", None)
        if since is None or not self._shared_log():
            return
        rooms = [r for r in self.rooms.get("/", {}) if is_recoverable(r)]
        start = max(self.delivered_seq, self._caught_up)
        try:
            entries = await since(start, rooms)
        except Exception as exc:
            log.warning("bus gap: catch-up from the log failed", extra={"error": repr(exc)})
            return
        caught = 0
        for entry in entries:
            if entry.seq <= self.delivered_seq:
                continue
            caught += 1
            tasks = self.deliver(entry, entry.skip_sid)
            if tasks:
                await asyncio.wait(tasks)
        log.warning("bus gap: caught up from the log", extra={"entries": caught, "rooms": len(rooms)})

    async def _answer_call(self, msg: dict[str, Any]) -> None:
        """Run an event call for a session of this process and send the answer back to the asking process."""
        ns = msg.get("ns", "/")
        answer: list[Any]
        if not self.is_connected(msg["sid"], ns):
            answer = [{"error": "session gone"}]
        else:
            data = tuple(msg["d"]) if msg.get("m") else msg["d"]
            try:
                result = await self.server.call(
                    msg["e"], data, to=msg["sid"], namespace=ns, timeout=msg.get("timeout") or 60
                )
                answer = list(result) if isinstance(result, tuple) else [result]
            except socketio.exceptions.TimeoutError:
                return  # the asking process times out by itself
        with contextlib.suppress(Exception):
            await self.bus.publish(
                f"host:{msg['reply']}", self._encode({"t": "reply", "id": msg["id"], "d": answer})
            )
