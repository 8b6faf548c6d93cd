"""Connection state recovery (Socket.IO v4.6+ semantics) and new-tab catch-up on top of python-socketio.

How it works, for a session that uses offsets (the official JS client; chatwire's Python SDK):
- Every event to a recoverable room is appended to the EventLog and delivered with its offset as the last argument.
- The CONNECT reply carries a private id `pid`. When the transport drops (not a client or server initiated
  disconnect), the session's user, rooms and stream baseline are parked under that pid for the recovery window.
- A CONNECT whose auth carries `{pid, offset}` claims the parked session: live events for the new sid are held
  back, its rooms are restored (access re-checked), the CONNECT reply repeats the same pid (the client sets
  `socket.recovered = true`), the missed events are replayed in offset order, then the held live events follow.
  Replay and live delivery never overlap: replay takes entries up to the delivery position at which the sid entered
  each room; live delivery gives everything after it.
- When recovery is impossible (unknown or expired pid, other user, history trimmed, other epoch) the reply carries
  a new pid and the client sees `recovered === false`: a fresh start, never a silent gap.

Fleet seam: `RecoveringManager.emit` = `log_event` (append once, at the publisher) + `deliver` (on each process, in
offset order). A fleet manager publishes through a shared log (Redis Streams) and calls `deliver` for each entry it
reads, in stream order; nothing else here needs to change.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engineio import packet as eio_packet
from socketio import packet

from chatwire.backends.eventlog import (
    EventLog,
    LogEntry,
    ParkedSession,
    format_offset,
    is_ephemeral,
    is_recoverable,
    parse_offset,
)
from chatwire.db.models import User
from chatwire.errors import ChatwireError
from chatwire.services.rooms import user_room
from chatwire.transport.context import Context, SessionState
from chatwire.transport.fastpath import encode_event, text_frame
from chatwire.transport.sio_server import ChatwireServer, LocalManager

log = logging.getLogger("chatwire.recovery")

NAMESPACE = "/"
# Disconnect reasons after which a session is not parked: the client or the server meant it.
_INTENDED = {"client disconnect", "server disconnect"}

Packets = list[eio_packet.Packet]


def _args(data: Any) -> list[Any]:
    """Event arguments as python-socketio forms them: a tuple spreads, None is no argument."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


def looks_like_python_client(environ: Mapping[str, Any]) -> bool:
    """python-socketio's clients (which call handlers with every argument) tell themselves apart at the handshake:
    their HTTP libraries announce Python in the User-Agent (aiohttp, requests), and python-engineio writes
    `transport=` before `EIO=` in the query string, where the JS engine.io-client writes `EIO=` first."""
    agent = str(environ.get("HTTP_USER_AGENT", "")).lower()
    if "python" in agent or "aiohttp" in agent:
        return True
    query = str(environ.get("QUERY_STRING", ""))
    t, e = query.find("transport="), query.find("EIO=")
    return t != -1 and e != -1 and t < e


class RecoveringManager(LocalManager):
    """Client manager that logs events to recoverable rooms and appends offsets for the sessions that use them."""

    def __init__(self) -> None:
        super().__init__()
        self.eventlog: EventLog | None = None
        self.offset_sids: set[str] = set()
        # sid -> the offset the client last got (what a string-ending event must carry so it is not taken for one)
        self.last_offset: dict[str, str] = {}
        # sid -> live packets held back while a replay is being sent: (seq, offset, packets)
        self.held: dict[str, deque[tuple[int, str | None, Packets]]] = {}
        # sid -> room -> delivery position when the sid entered the room (replay bound)
        self.entered: dict[str, dict[str, int]] = {}
        self.delivered_seq = 0
        self.hold_eio_sids: set[str] = set()
        self._lock = asyncio.Lock()

    # --- membership bookkeeping -------------------------------------------------------------------------------

    async def pre_connect(self, eio_sid: str, namespace: str) -> Any:
        sid = await super().pre_connect(eio_sid, namespace)
        if sid is not None and eio_sid in self.hold_eio_sids:
            # A reconnect that may recover: hold its live events from the first moment it can get any.
            self.held[sid] = deque()
        return sid

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> Any:
        if is_recoverable(room):
            self.entered.setdefault(sid, {}).setdefault(room, self.delivered_seq)
        return super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> Any:
        rooms = self.entered.get(sid)
        if rooms is not None:
            rooms.pop(room, None)
        return super().basic_leave_room(sid, namespace, room)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        if namespace in (None, NAMESPACE):
            self.forget(sid)
        return super().basic_disconnect(sid, namespace, **kwargs)

    def forget(self, sid: str) -> None:
        self.offset_sids.discard(sid)
        self.last_offset.pop(sid, None)
        self.held.pop(sid, None)
        self.entered.pop(sid, None)

    # --- emit ------------------------------------------------------------------------------------------------

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
    ) -> Any:
        room = to or room
        namespace = namespace or NAMESPACE
        if (
            self.eventlog is None
            or callback is not None
            or namespace != NAMESPACE
            or not is_recoverable(room)
            or is_ephemeral(event, data)
        ):
            if callback is None and self.offset_sids and namespace == NAMESPACE:
                args = _args(data)
                if args and isinstance(args[-1], str):
                    return await self._emit_guarded(event, args, room, skip_sid)
            return await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
        async with self._lock:
            # Appending and queueing under one lock keeps each session's delivery in offset order.
            entry = await self.log_event(event, data, room, skip_sid)
            tasks = self.deliver(entry, skip_sid)
        if tasks:
            await asyncio.wait(tasks)

    async def log_event(self, event: str, data: Any, room: str, skip_sid: Any) -> LogEntry:
        """Append one publication to the EventLog (once per publication, at the publisher)."""
        assert self.eventlog is not None
        return await self.eventlog.append(
            room, event, data, skip_sid=skip_sid if isinstance(skip_sid, str) else None
        )

    def deliver(self, entry: LogEntry, skip_sid: Any = None) -> list[asyncio.Task[Any]]:
        """Send a logged entry to this process's sessions in its room; call in offset order.

        Sessions with a direct websocket sink get the frame written at once (one frame per variant: with and
        without the offset); others get a task on the stock path, which the caller awaits."""
        self.delivered_seq = max(self.delivered_seq, entry.seq)
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid or entry.skip_sid}
        data_args = _args(entry.data)
        # per variant (with / without the offset): [event args, frame or None, Engine.IO packets or None]
        variants: dict[bool, list[Any]] = {}
        fast = self.server.fastpath if getattr(self.server, "fast_enabled", False) else None
        tasks: list[asyncio.Task[Any]] = []
        held_map, offset_sids, last_offset = self.held, self.offset_sids, self.last_offset
        for sid, eio_sid in self.get_participants(NAMESPACE, entry.room):
            if sid in skip:
                continue
            with_offset = sid in offset_sids
            variant = variants.get(with_offset)
            if variant is None:
                event_args = [*data_args, entry.offset] if with_offset else data_args
                try:  # one orjson encoding, no packet object (binary data: the stock encoder below)
                    frame: bytes | None = text_frame(encode_event(entry.event, event_args))
                except TypeError:
                    frame = None
                variant = variants[with_offset] = [event_args, frame, None]
            event_args, frame, pkts = variant
            held = held_map.get(sid) if held_map else None
            if held is not None:
                if pkts is None:
                    pkts = variant[2] = self.encode([entry.event, *event_args])
                held.append((entry.seq, entry.offset, pkts))
                continue
            if with_offset:
                last_offset[sid] = entry.offset
            if frame is not None and fast is not None:
                sink = fast.sink(eio_sid)
                if sink is not None and sink.write(frame, entry.event, event_args, NAMESPACE):
                    continue
            if pkts is None:
                pkts = variant[2] = self.encode([entry.event, *event_args])
            tasks.extend(asyncio.create_task(self.server._send_eio_packet(eio_sid, p)) for p in pkts)
        return tasks

    def encode(self, args: list[Any]) -> Packets:
        pkt = self.server.packet_class(packet.EVENT, namespace=NAMESPACE, data=args)
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    async def _emit_guarded(self, event: str, args: list[Any], room: Any, skip_sid: Any) -> None:
        """A non-logged event whose last argument is a string: sessions using offsets get their current offset
        appended, so the client does not mistake that string for an offset."""
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        plain: Packets | None = None
        tasks: list[asyncio.Task[Any]] = []
        for sid, eio_sid in self.get_participants(NAMESPACE, room):
            if sid in skip:
                continue
            offset = self.last_offset.get(sid) if sid in self.offset_sids else None
            if offset is not None:
                pkts = self.encode([event, *args, offset])
            else:
                if plain is None:
                    plain = self.encode([event, *args])
                pkts = plain
            # Not held back during a replay: it carries the position the client already has, which the replay
            # only moves forward.
            tasks.extend(asyncio.create_task(self.server._send_eio_packet(eio_sid, p)) for p in pkts)
        if tasks:
            await asyncio.wait(tasks)

    async def replay_then_release(self, sid: str, entries: Iterable[LogEntry]) -> int:
        """Send `entries` to `sid` in order, then its held live packets (those not already replayed), then
        deliver to it directly again. Returns how many entries were replayed."""
        eio_sid = self.eio_sid_from_sid(sid, NAMESPACE)
        sent = 0
        last_seq = 0
        try:
            if eio_sid is None:
                return 0
            uses_offsets = sid in self.offset_sids
            for entry in entries:
                args = [entry.event, *_args(entry.data)]
                if uses_offsets:
                    offset = self._monotonic_offset(sid, entry)
                    args.append(offset)
                for p in self.encode(args):
                    await self.server._send_eio_packet(eio_sid, p)
                last_seq = max(last_seq, entry.seq)
                sent += 1
            held = self.held.get(sid)
            while held:
                seq, held_offset, pkts = held.popleft()
                if seq and seq <= last_seq:
                    continue
                if held_offset is not None and uses_offsets:
                    self.last_offset[sid] = held_offset
                for p in pkts:
                    await self.server._send_eio_packet(eio_sid, p)
        finally:
            self.held.pop(sid, None)
        return sent

    def _monotonic_offset(self, sid: str, entry: LogEntry) -> str:
        """The offset to send with a replayed entry: its own, unless the client already has a later one (a
        catch-up replays older entries after live ones), so the client's position never moves back."""
        current = parse_offset(self.last_offset.get(sid))
        mine = parse_offset(entry.offset)
        if current is not None and mine is not None and current[0] == mine[0] and current[1] >= mine[1]:
            return self.last_offset[sid]
        self.last_offset[sid] = entry.offset
        return entry.offset


@dataclass(slots=True)
class Tracked:
    """A session that has a pid."""

    pid: str
    baseline: str
    recovered: bool = False
    replay: list[LogEntry] | None = None


class RecoveringServer(ChatwireServer):
    """AsyncServer whose CONNECT reply carries the recovery pid, followed by the replay of a recovered session."""

    recovery: Recovery | None = None

    async def _handle_connect(self, eio_sid: str, namespace: str, data: Any) -> None:
        manager = self.manager
        marked = (
            isinstance(manager, RecoveringManager)
            and (namespace or NAMESPACE) == NAMESPACE
            and isinstance(data, dict)
            and (isinstance(data.get("pid"), str) or data.get("since") is not None)
        )
        if marked:
            manager.hold_eio_sids.add(eio_sid)
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            if marked:
                manager.hold_eio_sids.discard(eio_sid)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        recovery = self.recovery
        if (
            recovery is None
            or pkt.packet_type != packet.CONNECT
            or (pkt.namespace or NAMESPACE) != NAMESPACE
            or not isinstance(pkt.data, dict)
            or "sid" not in pkt.data
        ):
            await super()._send_packet(eio_sid, pkt)
            return
        sid = pkt.data["sid"]
        pid = recovery.pid_of(sid)
        if pid is not None:
            pkt.data = {**pkt.data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)
        await recovery.after_connect_reply(sid)


class Recovery:
    """Pids, parking on drop, restoring on reconnect, and `user-join {since}` catch-up."""

    def __init__(self, sio: RecoveringServer, ctx: Context) -> None:
        manager = sio.manager
        if not isinstance(manager, RecoveringManager):
            raise TypeError("recovery needs the RecoveringManager as the server's client manager")
        self.sio = sio
        self.ctx = ctx
        self.manager = manager
        self.eventlog: EventLog = ctx.services.eventlog
        self.settings = ctx.settings
        self.tracked: dict[str, Tracked] = {}
        self.live_pids: dict[str, str] = {}
        self._superseded: set[str] = set()
        # catch-up entries to send right after the CONNECT reply (`since` in the CONNECT auth)
        self._pending: dict[str, list[LogEntry]] = {}
        manager.eventlog = self.eventlog
        sio.recovery = self
        ctx.join_hooks.append(self.catch_up)
        ctx.disconnect_hooks.append(self.on_disconnect)
        ctx.connect_hooks.append(self.on_connect)
        self._wrap_user_join()

    def _wrap_user_join(self) -> None:
        """Hold a session's live events from the moment a `user-join {since}` arrives (before it enters the user
        room), so the catch-up replay and live events reach it in offset order, whatever happens in between."""
        handlers = self.sio.handlers.get(NAMESPACE, {})
        original = handlers.get("user-join")
        if original is None:
            return
        manager = self.manager

        async def user_join(sid: str, *args: Any) -> Any:
            payload = args[0] if args else None
            if not isinstance(payload, dict) or payload.get("since") is None:
                return await original(sid, *args)
            manager.held.setdefault(sid, deque())
            try:
                return await original(sid, *args)
            finally:
                if sid in manager.held:  # the handler failed before the catch-up: release what was held
                    await manager.replay_then_release(sid, [])

        handlers["user-join"] = user_join

    @property
    def enabled(self) -> bool:
        return self.settings.recovery_window_seconds > 0

    def pid_of(self, sid: str) -> str | None:
        t = self.tracked.get(sid)
        return t.pid if t is not None else None

    def recovered(self, sid: str) -> bool:
        t = self.tracked.get(sid)
        return bool(t and t.recovered)

    def wants_offsets(self, environ: Mapping[str, Any], auth: Any) -> bool:
        """Whether this session gets offsets (and so a pid): settings first, then what the client says."""
        mode = self.settings.recovery_offsets
        if mode != "auto":
            return mode == "always"
        if isinstance(auth, dict):
            flag = auth.get("offsets")
            if isinstance(flag, bool):
                return flag
            if isinstance(auth.get("pid"), str):
                return True  # only a client that got a pid (and so understood offsets) sends one back
        return not looks_like_python_client(environ)

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        """Give the session a pid, or restore the parked session its client names; or catch up from `since`."""
        await self._recover_or_track(sid, environ, auth)
        since = auth.get("since") if isinstance(auth, dict) else None
        st = self.ctx.local.get(sid)
        if since is not None and not self.recovered(sid) and st is not None and st.user is not None:
            entries = await self._catch_up_entries(sid, st.user, since)
            self._pending[sid] = entries if entries is not None else []

    async def _recover_or_track(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        if not self.enabled or not self.wants_offsets(environ, auth):
            return
        self.manager.offset_sids.add(sid)
        baseline = await self.eventlog.head()
        tracked = Tracked(pid=secrets.token_urlsafe(16), baseline=baseline)
        self.manager.last_offset[sid] = baseline
        claimed = auth.get("pid") if isinstance(auth, dict) else None
        if isinstance(claimed, str) and len(claimed) <= 64:
            try:
                parked = await self._claim(sid, claimed)
                if parked is not None:
                    await self._restore(sid, tracked, claimed, parked, auth.get("offset"))
            except Exception:
                log.exception("recovery failed; starting fresh", extra={"sid": sid})
                tracked = Tracked(pid=tracked.pid, baseline=baseline)
                self.manager.last_offset[sid] = baseline
        self.tracked[sid] = tracked
        self.live_pids[tracked.pid] = sid

    async def _claim(self, sid: str, pid: str) -> ParkedSession | None:
        """The parked session of `pid` if it belongs to the user of `sid` (else it stays parked for its owner)."""
        user_id = self._user_id(sid)
        parked = await self.eventlog.claim(pid)
        old_sid = self.live_pids.get(pid)
        if parked is None and old_sid is not None and old_sid in self.tracked:
            if self._user_id(old_sid) != user_id:
                return None
            # The old connection is half-open (its client already came back): end it, park it, take it over.
            self._superseded.add(old_sid)
            await self.sio.disconnect(old_sid, namespace=NAMESPACE)
            parked = await self.eventlog.claim(pid)
        if parked is not None and parked.user_id != user_id:
            log.info("recovery refused: another user", extra={"sid": sid})
            await self.eventlog.park(pid, parked, self.settings.recovery_window_seconds)
            return None
        return parked

    def _user_id(self, sid: str) -> str | None:
        st = self.ctx.local.get(sid)
        return st.user.id if st is not None and st.user is not None else None

    async def _restore(
        self, sid: str, tracked: Tracked, pid: str, parked: ParkedSession, offset: Any
    ) -> None:
        st = self.ctx.local.get(sid)
        user = st.user if st is not None else None
        epoch = await self.eventlog.epoch()
        base = parse_offset(parked.baseline)
        if base is None or base[0] != epoch:
            return
        start = parked.baseline
        mine = parse_offset(offset)
        # An offset of this epoch at or after the baseline is the client's position; anything else means the
        # client got nothing from this session yet (an older offset is from an earlier, fresh session).
        if mine is not None and mine[0] == epoch and mine[1] >= base[1]:
            start = offset
        # Replayed entries carry their own offsets from the client's position on.
        self.manager.last_offset[sid] = start
        rooms = await self._allowed_rooms(parked, user)
        for room in rooms:
            await self.ctx.services.broker.enter_room(sid, room)
        entries = await self.eventlog.read(start, [r for r in rooms if is_recoverable(r)])
        if entries is None:
            log.info("recovery impossible: history gone", extra={"sid": sid})
            self.manager.last_offset[sid] = tracked.baseline
            return
        bounds = self.manager.entered.get(sid, {})
        tracked.replay = [
            e for e in entries if e.seq <= bounds.get(e.room, 0) and e.skip_sid not in (parked.sid, sid)
        ]
        tracked.pid = pid
        tracked.baseline = parked.baseline
        tracked.recovered = True
        if st is not None:
            st.extra["recovered"] = True

    async def _allowed_rooms(self, parked: ParkedSession, user: User | None) -> list[str]:
        """The parked rooms this user may still be in: access is checked again, never trusted from the past."""
        if user is None:
            return []
        services = self.ctx.services
        channel_rooms = set(await services.channels.room_names_for(user.id))
        allowed: list[str] = []
        for room in parked.rooms:
            if room == user_room(user.id) or room in channel_rooms:
                allowed.append(room)
            elif room.startswith("note:"):
                try:
                    await services.notes.require(room.removeprefix("note:"), user, "read")
                    allowed.append(room)
                except ChatwireError:
                    pass
        return allowed

    async def after_connect_reply(self, sid: str) -> None:
        """Right after the CONNECT reply: the replay, then the held live events."""
        tracked = self.tracked.get(sid)
        replay = tracked.replay if tracked is not None and tracked.replay is not None else []
        if tracked is not None:
            tracked.replay = None
        replay = replay or self._pending.pop(sid, [])
        self._pending.pop(sid, None)
        if sid not in self.manager.held and not replay:
            return
        count = await self.manager.replay_then_release(sid, replay)
        if tracked is not None and tracked.recovered:
            log.info("session recovered", extra={"sid": sid, "replayed": count})

    async def on_disconnect(self, sid: str, st: SessionState | None) -> None:
        """Park a session that dropped (not one that was closed on purpose) for the recovery window."""
        self._pending.pop(sid, None)
        tracked = self.tracked.pop(sid, None)
        superseded = sid in self._superseded
        self._superseded.discard(sid)
        if tracked is None:
            return
        if self.live_pids.get(tracked.pid) == sid:
            del self.live_pids[tracked.pid]
        reason = st.extra.get("disconnect_reason") if st is not None else None
        if reason in _INTENDED and not superseded:
            return
        rooms = tuple(r for r in self.sio.rooms(sid, namespace=NAMESPACE) if r != sid)
        user_id = st.user.id if st is not None and st.user is not None else None
        await self.eventlog.park(
            tracked.pid,
            ParkedSession(sid=sid, user_id=user_id, rooms=rooms, baseline=tracked.baseline),
            self.settings.recovery_window_seconds,
        )

    async def catch_up(self, sid: str, user: User, payload: Any) -> dict[str, Any] | None:
        """`user-join {since}`: replay the user's stream after `since` to this session (a new tab)."""
        since = getattr(payload, "since", None)
        if since is None:
            return None
        self.manager.held.setdefault(sid, deque())  # normally already held since the event arrived
        entries = await self._catch_up_entries(sid, user, since)
        count = await self.manager.replay_then_release(sid, entries or [])
        return {"caught_up": False if entries is None else count}

    async def _catch_up_entries(self, sid: str, user: User, since: Any) -> list[LogEntry] | None:
        """The user's stream entries after `since` that `sid` did not get live; None when that history is gone."""
        if isinstance(since, int) and not isinstance(since, bool):
            since = format_offset(await self.eventlog.epoch(), since)
        room = user_room(user.id)
        entries = await self.eventlog.read(since, [room]) if isinstance(since, str) else None
        if entries is None:
            return None
        bound = self.manager.entered.get(sid, {}).get(room, 0)
        return [e for e in entries if e.seq <= bound and e.skip_sid != sid]
