"""EventLog in Redis for fleets: one history shared by every process, so a client recovers on any of them.

Keys under the prefix:
- `log:epoch` (and `log:epoch_at`, when it began): the name of the current history; a Redis without it (restarted,
  flushed) starts a new epoch, so offsets of the lost history are refused instead of replaying a gap.
- `log:seq`: the last sequence number. A sequence number is `max(last + 1, now_ms * 1000)`: strictly increasing
  across the fleet, and it tells when it was given, so an offset too old for the history is recognised.
- `log:room:{room}`: a stream per recoverable room with entry ids `<seq>-0` and fields event, data (JSON),
  skip sid and time; at most `max_per_room` entries (the oldest dropped, noted in `log:trim:{room}`), and the whole
  stream expires when the room has been quiet longer than the age bound.
- `log:park:{pid}`: a parked session, taken with GETDEL so it is claimed once, on whichever process.

- `log:epoch_replid`: the replication id of the primary the epoch was begun on. Redis replicates asynchronously,
  so when Sentinel (or a cluster) promotes a replica, the last writes acknowledged by the old primary may be gone;
  the promoted replica has another replication id. `read` compares the two before and after reading and, when they
  differ, begins a new epoch (once, compare-and-set) and refuses the read: the client starts fresh instead of
  getting a replay with a hole.

In a Redis Cluster every key carries the hash tag `{log}` (`chatwire:{log}:seq`), so the append script touches
one slot: the fleet-wide sequence is one counter on one shard, which is what gives one total order. Its room
channels are tagged alike (see bus_redis.py) and published with SPUBLISH from the script.

Append, sequence and publication happen in one Lua script: the entry is stored, and (optionally) published on the
room's bus channel with its seq, atomically. Since Redis runs scripts one at a time, every subscriber receives
the publications in sequence order, which is what lets each process deliver them in offset order.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import orjson

from chatwire.backends.eventlog import LogEntry, ParkedSession, format_offset, parse_offset
from chatwire.backends.redis_client import AnyRedis

log = logging.getLogger("chatwire.eventlog")

# How long past the age bound an idle room's stream is kept (then it expires as a whole).
STREAM_GRACE_SECONDS = 30.0

_APPEND = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[5], ARGV[6])
  redis.call('SET', KEYS[6], ARGV[12])
  epoch = ARGV[1]
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local seq = math.max(last + 1, tonumber(ARGV[6]) * 1000)
redis.call('SET', KEYS[2], string.format('%.0f', seq))
local sseq = string.format('%.0f', seq)
local maxlen = tonumber(ARGV[7])
local len = redis.call('XLEN', KEYS[3])
if len >= maxlen then
  local dropped = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', len - maxlen + 1)
  local id = dropped[#dropped][1]
  redis.call('SET', KEYS[4], string.match(id, '^(%d+)'))
end
redis.call('XADD', KEYS[3], 'MAXLEN', maxlen, sseq .. '-0', 'e', ARGV[2], 'd', ARGV[3], 's', ARGV[4], 't', ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[8]) end
if ARGV[9] ~= '' then
  redis.call(ARGV[11], ARGV[9], 'L' .. sseq .. '|' .. epoch .. '|' .. ARGV[10])
end
return {sseq, epoch}
"""

# Begin a new epoch unless one was already begun on this primary (KEYS: epoch_replid, epoch, epoch_at).
_ROTATE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""

# Adopt the primary's id for an epoch begun before any process knew it (KEYS: epoch_replid).
_ADOPT = """
local v = redis.call('GET', KEYS[1])
if v == false or v == '' then redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1] end
return v
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventLog:
    def __init__(
        self,
        client: AnyRedis,
        prefix: str,
        max_per_room: int,
        max_age: float,
        *,
        clock: Callable[[], float] = time.time,
        cluster: bool = False,
        primary_id: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        if max_per_room <= 0 or max_age <= 0:
            raise ValueError("max_per_room and max_age must be positive")
        self.r: Any = client
        self.p = prefix + ("{log}:" if cluster else "log:")
        self.cluster = cluster
        self._primary_id = primary_id
        self._replid = ""  # the primary's replication id, as last seen
        self.rotations = 0  # epochs begun here because the primary changed (tests, logs)
        self._rotate = client.register_script(_ROTATE)
        self._adopt = client.register_script(_ADOPT)
        self.max_per_room = max_per_room
        self.max_age = max_age
        self._clock = clock
        self._append = client.register_script(_APPEND)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _stream_ttl_ms(self) -> int:
        return int((self.max_age + STREAM_GRACE_SECONDS) * 1000)

    async def epoch(self) -> str:
        if await self.r.set(self.p + "epoch", secrets.token_hex(6), nx=True):
            await self.r.set(self.p + "epoch_replid", self._replid)
        await self.r.set(self.p + "epoch_at", self._now_ms(), nx=True)
        return _s(await self.r.get(self.p + "epoch"))

    async def primary_changed(self) -> bool:
        """Compare the primary's replication id with the epoch's; begin a new epoch when they differ (the
        history may have lost acknowledged writes). True when the epoch is not to be trusted."""
        if self._primary_id is None:
            return False
        self._replid = current = await self._primary_id()
        key = self.p + "epoch_replid"
        stored = _s(await self._adopt(keys=[key], args=[current]))
        if stored == current:
            return False
        begun = await self._rotate(
            keys=[key, self.p + "epoch", self.p + "epoch_at"],
            args=[current, secrets.token_hex(6), self._now_ms()],
        )
        if begun:
            self.rotations += 1
            log.warning("redis primary changed: new recovery epoch", extra={"replid": current[:12]})
        return True

    async def append(self, room: str, event: str, data: Any, *, skip_sid: str | None = None) -> LogEntry:
        return await self.append_and_publish(room, event, data, skip_sid=skip_sid)

    async def append_and_publish(
        self,
        room: str,
        event: str,
        data: Any,
        *,
        skip_sid: str | None = None,
        channel: str = "",
        message: bytes = b"",
    ) -> LogEntry:
        """Append, and publish `message` on `channel` as `L<seq>|<epoch>|<message>` in the same atomic step."""
        seq, epoch = await self._append(
            keys=[
                self.p + "epoch",
                self.p + "seq",
                self.p + f"room:{room}",
                self.p + f"trim:{room}",
                self.p + "epoch_at",
                self.p + "epoch_replid",
            ],
            args=[
                secrets.token_hex(6),
                event,
                orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
                skip_sid or "",
                "",
                self._now_ms(),
                self.max_per_room,
                self._stream_ttl_ms(),
                channel,
                message,
                "SPUBLISH" if self.cluster else "PUBLISH",
                self._replid,
            ],
        )
        seq_i = int(_s(seq))
        return LogEntry(seq_i, format_offset(_s(epoch), seq_i), room, event, data, skip_sid)

    async def data_of(self, room: str, seq: int) -> tuple[bool, Any]:
        """The stored data of one entry, `(found, data)`: how a process fetches an event that was published
        by reference because it is larger than the fleet's pub/sub limit (see transport/fleet_broker.py)."""
        raw = await self.r.xrange(self.p + f"room:{room}", min=f"{seq}-0", max=f"{seq}-0")
        if not raw:
            return False, None
        fields = {_s(k): v for k, v in (raw[0][1] or {}).items()}
        return True, orjson.loads(fields["d"])

    async def head(self) -> str:
        epoch = await self.epoch()
        seq = await self.r.get(self.p + "seq")
        return format_offset(epoch, int(_s(seq)) if seq is not None else 0)

    async def read(self, after: str, rooms: Collection[str]) -> list[LogEntry] | None:
        parsed = parse_offset(after)
        if parsed is None:
            return None
        if await self.primary_changed():
            return None
        found = await self._read(parsed, rooms)
        if found is not None and await self.primary_changed():
            return None  # the primary changed while we read: what we read may be a lost history
        return found

    async def _read(self, parsed: tuple[str, int], rooms: Collection[str]) -> list[LogEntry] | None:
        epoch, seq = parsed
        current = await self.r.get(self.p + "epoch")
        last = await self.r.get(self.p + "seq")
        if current is None or _s(current) != epoch or seq > (int(_s(last)) if last is not None else 0):
            return None
        now = self._now_ms()
        limit = now - int(self.max_age * 1000)
        started = await self.r.get(self.p + "epoch_at")
        epoch_young = started is not None and int(_s(started)) > now - self._stream_ttl_ms()
        found: list[LogEntry] = []
        for room in set(rooms):
            trimmed = await self.r.get(self.p + f"trim:{room}")
            if trimmed is not None and int(_s(trimmed)) > seq:
                return None
            raw = await self.r.xrange(self.p + f"room:{room}", min=f"{seq + 1}-0", max="+")
            if not raw and not epoch_young and seq // 1000 < now - self._stream_ttl_ms():
                # The room's stream may have expired while idle with entries after `after`: not provable whole.
                if await self.r.exists(self.p + f"room:{room}") == 0:
                    return None
            for entry_id, fields in raw:
                f = {_s(k): v for k, v in fields.items()}
                if int(_s(f["t"])) < limit:
                    return None  # older than the age bound: outside the history
                entry_seq = int(_s(entry_id).split("-", 1)[0])
                skip = _s(f.get("s", b"")) or None
                found.append(
                    LogEntry(
                        entry_seq,
                        format_offset(epoch, entry_seq),
                        room,
                        _s(f["e"]),
                        orjson.loads(f["d"]),
                        skip,
                    )
                )
        found.sort(key=lambda e: e.seq)
        return found

    async def since_seq(self, seq: int, rooms: Collection[str]) -> list[LogEntry]:
        """Every entry of `rooms` above `seq` still in the streams, in seq order, whatever the epoch: what a
        process missed while its subscription was down (live catch-up after a bus gap, not a recovery)."""
        epoch = await self.epoch()
        found: list[LogEntry] = []
        for room in set(rooms):
            for entry_id, fields in await self.r.xrange(self.p + f"room:{room}", min=f"{seq + 1}-0", max="+"):
                f = {_s(k): v for k, v in fields.items()}
                entry_seq = int(_s(entry_id).split("-", 1)[0])
                skip = _s(f.get("s", b"")) or None
                data = orjson.loads(f["d"])
                found.append(
                    LogEntry(entry_seq, format_offset(epoch, entry_seq), room, _s(f["e"]), data, skip)
                )
        found.sort(key=lambda e: e.seq)
        return found

    async def park(self, pid: str, session: ParkedSession, ttl: float) -> None:
        value = json.dumps(
            {
                "sid": session.sid,
                "user_id": session.user_id,
                "rooms": list(session.rooms),
                "baseline": session.baseline,
                "deadline": self._now_ms() + int(ttl * 1000),
            }
        )
        await self.r.set(self.p + f"park:{pid}", value, px=int(ttl * 1000) + 5000)

    async def claim(self, pid: str) -> ParkedSession | None:
        raw = await self.r.getdel(self.p + f"park:{pid}")
        if raw is None:
            return None
        d = json.loads(raw)
        if d["deadline"] <= self._now_ms():
            return None
        return ParkedSession(d["sid"], d["user_id"], tuple(d["rooms"]), d["baseline"])

    async def close(self) -> None:
        return None
