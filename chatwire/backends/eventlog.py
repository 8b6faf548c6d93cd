"""The EventLog: a bounded history of the events sent to recoverable rooms, with offsets, plus parked sessions.

Every publication to a recoverable room (`user:*`, `channel:*`) is appended once and gets a sequence number that
is strictly increasing across the whole log (all rooms, all processes of a fleet); its offset, the string a client
sees, is `"<epoch>-<seq>"`. One total order makes one offset per client enough: whatever rooms a session is in,
"what it missed" is every entry of those rooms with a larger seq.

Invariants every implementation keeps:
- `append` is atomic: an entry is either in the log with its seq or not at all, and seqs never go back.
- The epoch names one continuous history. When history is lost (memory backend restarted, Redis stream deleted),
  the epoch changes, so an offset of the old epoch is refused instead of silently replaying a gap.
- `read` never returns a history with a hole: if any entry of the asked rooms after `after` was trimmed (size or
  age bound), it returns None and the caller starts the client fresh.
- A parked session can be claimed once (`claim` is an atomic get-and-delete) and only within its TTL.

What a Redis Streams implementation (`eventlog_redis.py`, fleet mode) must do to keep these:
- One shared sequence for the fleet: a Lua script that INCRs a counter and XADDs `{room, event, data, skip}` with
  the explicit id `<seq>-0`, so seqs are totally ordered across processes and append is atomic. Keep a per-room
  index (a stream or sorted set per room, trimmed with MAXLEN/MINID) so `read` does not scan other rooms, and record
  the highest trimmed seq per room (or check the oldest kept id) to refuse reads that start before it.
- The epoch is stored in Redis (SET NX at first use); if the counter or stream key is missing while an epoch
  exists, the history was lost: write a new epoch.
- Live delivery must follow the log order: each process reads the shared stream (XREAD BLOCK from its last id) and
  calls `Delivery.deliver(entry)` (transport/hub.py) for each entry in order. Pub/sub delivery in arrival order would let a
  session see seq 7 before seq 6 and make one offset per client ambiguous.
- `park` = SET pid JSON EX ttl; `claim` = GETDEL (atomic), so a client can recover on any process.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

RECOVERABLE_PREFIXES = ("user:", "channel:")


def is_recoverable(room: object) -> bool:
    """Rooms whose events are logged and replayed: a user's stream and channel streams."""
    return isinstance(room, str) and room.startswith(RECOVERABLE_PREFIXES)


def is_ephemeral(event: str, data: object) -> bool:
    """Events that are never logged nor replayed: typing indicators and presence changes (a replayed "X is
    typing" would be stale, and they would crowd real messages out of a room's bounded history)."""
    if event == "events:presence":  # who is here now: a replay of old joins and leaves would mislead
        return True
    return (
        event == "events:channel"
        and isinstance(data, dict)
        and isinstance(data.get("data"), dict)
        and data["data"].get("type") == "typing"
    )


def format_offset(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq}"


def parse_offset(offset: object) -> tuple[str, int] | None:
    """`(epoch, seq)` of a well-formed offset string, None for anything else."""
    if not isinstance(offset, str) or len(offset) > 128:
        return None
    epoch, sep, seq = offset.rpartition("-")
    if not sep or not epoch or not seq.isdigit():
        return None
    return epoch, int(seq)


class LogEntry(NamedTuple):
    """One logged publication. `skip_sid` is the session the publisher excluded (it is excluded on replay too).

    Immutable; a named tuple rather than a frozen dataclass because one is made per published event (per token
    while answers stream), and a frozen dataclass costs several times as much to build."""

    seq: int
    offset: str
    room: str
    event: str
    data: Any
    skip_sid: str | None = None


@dataclass(frozen=True)
class ParkedSession:
    """What a dropped session needs to come back: who it was, where it was, and where its stream started."""

    sid: str
    user_id: str | None
    rooms: tuple[str, ...]
    # The log position when the session got its pid: nothing before it was ever sent to that session, so a
    # client that reconnects without an offset (it received no event yet) recovers from here.
    baseline: str


class EventLog(Protocol):
    async def epoch(self) -> str:
        """The current epoch of the log."""
        ...

    async def append(self, room: str, event: str, data: Any, *, skip_sid: str | None = None) -> LogEntry:
        """Store a publication to `room` and return it with its seq and offset."""
        ...

    async def head(self) -> str:
        """The offset of the newest entry (`"<epoch>-0"` when empty): "everything up to here" for a reader."""
        ...

    async def read(self, after: str, rooms: Collection[str]) -> list[LogEntry] | None:
        """Entries of `rooms` with a seq above `after`'s, in seq order; None when that history is not whole
        (another epoch, a malformed offset, or entries trimmed by the size or age bound)."""
        ...

    async def park(self, pid: str, session: ParkedSession, ttl: float) -> None:
        """Keep a dropped session for `ttl` seconds under its private id."""
        ...

    async def claim(self, pid: str) -> ParkedSession | None:
        """Take (and remove) a parked session; None when unknown or expired."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class AppendsNow(Protocol):
    """An EventLog whose append never waits (the in-process one) may offer it as a plain call: the delivery
    pipeline then appends and delivers in one synchronous step, so delivery stays in offset order without a lock
    (chatwire/transport/hub.py, `Delivery.emit_now`). Same contract as `EventLog.append`."""

    def append_now(self, room: str, event: str, data: Any, *, skip_sid: str | None = None) -> LogEntry: ...


@runtime_checkable
class SharedEventLog(EventLog, Protocol):
    """An EventLog every process of a fleet shares (Redis): recoverable events travel through it. It appends and
    publishes in one atomic step, hands out an entry's data by reference, and reads back by sequence number what a
    process missed while its bus subscription was down (transport/fleet_broker.py)."""

    async def append_and_publish(
        self,
        room: str,
        event: str,
        data: Any,
        *,
        skip_sid: str | None = None,
        channel: str = "",
        message: bytes = b"",
    ) -> LogEntry: ...

    async def data_of(self, room: str, seq: int) -> tuple[bool, Any]: ...

    async def since_seq(self, seq: int, rooms: Collection[str]) -> list[LogEntry]: ...


@runtime_checkable
class CountsEntries(Protocol):
    """An EventLog that can say how many entries it holds without a round trip (metrics at scrape time)."""

    def size(self) -> int: ...
