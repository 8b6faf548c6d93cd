"""EventLog in process memory: a bounded ring per room, an age bound, a bound on the bytes held in all, and a random
epoch per start."""

from __future__ import annotations

import heapq
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from itertools import islice
from typing import Any

from chatwire.backends.eventlog import LogEntry, ParkedSession, format_offset, parse_offset

# What one entry costs beyond its payload's strings: the LogEntry, its tuple and deque slot, its offset string.
ENTRY_OVERHEAD = 320
# Per container or scalar inside the payload (a dict, a list, an int): CPython object headers and slots.
NODE_OVERHEAD = 64
MAX_SIZE_DEPTH = 8
# A str object beyond its characters.
STR_OVERHEAD = 49
# A number, a bool, None, or anything else that is not a string or a container.
SCALAR_SIZE = NODE_OVERHEAD // 2
_SCALARS = frozenset((int, float, bool, type(None)))
# A room's ring holds each entry as three consecutive items: append time, LogEntry, estimated size. Not a tuple
# each: a held entry outlives many young-generation collections, and every container it brings along is one more
# object the cyclic collector counts and walks (the LogEntry itself is the only one left).
AT, ENTRY, SIZE, SLOTS = 0, 1, 2, 3
_new_tuple = tuple.__new__


def approx_size(data: Any, depth: int = 0) -> int:
    """A cheap estimate of the memory a payload holds: string lengths plus a fixed cost per object.

    Not exact (no sys.getsizeof walk), but proportional to what the payload keeps alive, which is what a bound
    on the history needs; deeper than a few levels everything counts as one node. Runs once per logged event
    (per token while answers stream): string keys and values, and numbers, are counted in place, without a call
    each."""
    kind = type(data)
    if kind is str or kind is bytes:
        return len(data) + STR_OVERHEAD
    if depth >= MAX_SIZE_DEPTH:
        return NODE_OVERHEAD
    inner = depth + 1
    if isinstance(data, dict):
        total = NODE_OVERHEAD * 2
        for key in data:
            total += len(key) + STR_OVERHEAD if type(key) is str else approx_size(key, inner)
        return total + _values_size(data.values(), inner)
    if isinstance(data, list | tuple):
        return NODE_OVERHEAD + _values_size(data, inner)
    if isinstance(data, str | bytes):  # subclasses
        return len(data) + STR_OVERHEAD
    return SCALAR_SIZE


def _values_size(values: Iterable[Any], depth: int) -> int:
    """approx_size of a container's values at `depth`: strings and plain scalars counted in place, with no call
    per value (this runs for every logged event)."""
    total = 0
    for value in values:
        kind = type(value)
        if kind is str:
            total += len(value) + STR_OVERHEAD
        elif kind in _SCALARS and depth < MAX_SIZE_DEPTH:
            total += SCALAR_SIZE
        else:
            total += approx_size(value, depth)
    return total


class MemoryEventLog:
    """One process's history. Restarting the process loses it, and the new epoch tells clients so."""

    def __init__(
        self,
        max_per_room: int,
        max_age: float,
        *,
        max_bytes: int = 64 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_room <= 0 or max_age <= 0 or max_bytes <= 0:
            raise ValueError("max_per_room, max_age and max_bytes must be positive")
        self.max_per_room = max_per_room
        self.max_age = max_age
        # Many busy rooms each under their own count bound can still add up: the oldest entries of the whole
        # log go first once the estimated bytes held pass this bound.
        self.max_bytes = max_bytes
        self._bytes = 0
        self._held = 0
        # The seq and the room of every held entry, oldest first, in two deques side by side (plain ints and
        # strings: nothing for the collector); entries trimmed by their room's own bounds linger here until
        # skipped or until the deques are rebuilt (when they hold more than twice the entries held).
        self._order: deque[int] = deque()
        self._order_rooms: deque[str] = deque()
        self._clock = clock
        self._epoch = secrets.token_hex(6)
        self._seq = 0
        # room -> its entries oldest first, each as AT, ENTRY, SIZE (see SLOTS)
        self._rooms: dict[str, deque[Any]] = {}
        # room -> highest seq trimmed from that room; rooms that emptied fold into `_floor`
        self._trimmed: dict[str, int] = {}
        self._floor = 0
        self._parked: dict[str, tuple[float, ParkedSession]] = {}
        # (expiry, pid) of every park, soonest first: expired sessions are dropped from the front, so a mass
        # disconnect (a deploy, a network blip) costs O(log n) per session, not a scan of all parked ones.
        self._park_expiry: list[tuple[float, str]] = []
        self._next_sweep = 0.0

    async def epoch(self) -> str:
        return self._epoch

    async def append(self, room: str, event: str, data: Any, *, skip_sid: str | None = None) -> LogEntry:
        return self.append_now(room, event, data, skip_sid=skip_sid)

    def append_now(self, room: str, event: str, data: Any, *, skip_sid: str | None = None) -> LogEntry:
        """`append` without an await (AppendsNow): nothing here waits, so the delivery pipeline appends and
        delivers in one synchronous step, without a lock or a coroutine per event."""
        now = self._clock()
        seq = self._seq = self._seq + 1
        # the named tuple's own __new__ is a Python function around this same call
        entry = _new_tuple(LogEntry, (seq, format_offset(self._epoch, seq), room, event, data, skip_sid))
        size = ENTRY_OVERHEAD + approx_size(data)
        ring = self._rooms.get(room)
        if ring is None:
            ring = self._rooms[room] = deque()
        ring.append(now)
        ring.append(entry)
        ring.append(size)
        self._order.append(seq)
        self._order_rooms.append(room)
        self._bytes += size
        self._held += 1
        while len(ring) > self.max_per_room * SLOTS:
            self._trim_one(room, ring)
        while self._bytes > self.max_bytes:
            self._trim_oldest()
        if now >= self._next_sweep:
            self._expire(now)
        if len(self._order) > 2 * self._held + 1024:
            self._rebuild_order()
        return entry

    def _rebuild_order(self) -> None:
        held = sorted((e.seq, r) for r, ring in self._rooms.items() for e in islice(ring, ENTRY, None, SLOTS))
        self._order = deque(seq for seq, _room in held)
        self._order_rooms = deque(room for _seq, room in held)

    async def head(self) -> str:
        return format_offset(self._epoch, self._seq)

    def size(self) -> int:
        """Entries held (metrics: chatwire_event_log_entries)."""
        return sum(len(ring) for ring in self._rooms.values()) // SLOTS

    def nbytes(self) -> int:
        """Estimated bytes held by the entries (what `max_bytes` bounds)."""
        return self._bytes

    async def read(self, after: str, rooms: Collection[str]) -> list[LogEntry] | None:
        parsed = parse_offset(after)
        if parsed is None or parsed[0] != self._epoch or parsed[1] > self._seq:
            return None
        self._expire(self._clock())
        seq = parsed[1]
        if self._floor > seq:
            return None
        found: list[LogEntry] = []
        for room in set(rooms):
            if self._trimmed.get(room, 0) > seq:
                return None
            ring = self._rooms.get(room)
            if ring:
                found.extend(e for e in islice(ring, ENTRY, None, SLOTS) if e.seq > seq)
        found.sort(key=lambda e: e.seq)
        return found

    async def park(self, pid: str, session: ParkedSession, ttl: float) -> None:
        now = self._clock()
        expiry = self._park_expiry
        while expiry and expiry[0][0] <= now:
            at, old = heapq.heappop(expiry)
            item = self._parked.get(old)
            if item is not None and item[0] == at:  # not claimed, nor parked again since
                del self._parked[old]
        self._parked[pid] = (now + ttl, session)
        heapq.heappush(expiry, (now + ttl, pid))

    async def claim(self, pid: str) -> ParkedSession | None:
        item = self._parked.pop(pid, None)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]

    async def close(self) -> None:
        self._rooms.clear()
        self._order.clear()
        self._order_rooms.clear()
        self._bytes = self._held = 0
        self._parked.clear()
        self._park_expiry.clear()

    def _trim_oldest(self) -> None:
        """Drop the oldest entry of the whole log (entries already trimmed by their room are skipped)."""
        while self._order:
            seq = self._order.popleft()
            room = self._order_rooms.popleft()
            ring = self._rooms.get(room)
            if ring and ring[ENTRY].seq == seq:
                self._trim_one(room, ring)
                return

    def _trim_one(self, room: str, ring: deque[Any]) -> None:
        ring.popleft()
        dropped: LogEntry = ring.popleft()
        size: int = ring.popleft()
        self._bytes -= size
        self._held -= 1
        self._trimmed[room] = dropped.seq
        if not ring:
            # An empty room keeps no state of its own; its trim point becomes a (conservative) global floor.
            del self._rooms[room]
            self._floor = max(self._floor, self._trimmed.pop(room))

    def _expire(self, now: float) -> None:
        """Drop entries older than the age bound (a full sweep, at most a few times per age bound on append)."""
        self._next_sweep = now + min(1.0, self.max_age / 4)
        limit = now - self.max_age
        for room in [r for r, ring in self._rooms.items() if ring[AT] < limit]:
            ring = self._rooms[room]
            while room in self._rooms and ring[AT] < limit:
                self._trim_one(room, ring)
