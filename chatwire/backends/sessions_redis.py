"""SessionStore in Redis for fleets: every process sees every session; entries expire by TTL.

Keys (under the prefix): `s:{sid}` hash of the session; `sids` zset sid -> deadline; `u:{uid}` zset sid -> deadline;
`users` zset uid -> latest deadline; `usage` zset "model\\0sid" -> deadline; `um:{sid}` set of the sid's models.
Deadlines are wall-clock milliseconds, so a process killed with SIGKILL leaves nothing alive after the TTL.

`users` is also the fleet's online roster: a user enters it with the first session's `add` (in the same
transaction, whose ZADD says whether the user is new) and leaves it in the script that removes the last live
session, so concurrent connects and disconnects of one user on any processes announce one transition each.
Refreshes (`touch`) only move deadlines of users already in it.
In a Redis Cluster every key carries the hash tag `{s}` after the prefix (`chatwire:{s}:sids`): the transactions
below touch several of them, so they must share one slot.
"""

from __future__ import annotations

import time
from typing import Any

from chatwire.backends.redis_client import AnyRedis
from chatwire.backends.sessions import Removed, SessionInfo

SEP = "\x00"

# KEYS: s:{sid}, um:{sid}, sids, usage, u:{uid}, users; ARGV: sid, uid, now (ms), then the sid's usage members.
# Removes the session everywhere and, when the user has no live session left, takes the user out of the roster,
# in one step: nobody sees the session gone while its user is still online. Returns 1 when this call took the
# user out (the user went offline).
_REMOVE_SESSION = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[4], ARGV[i])
end
redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('ZCOUNT', KEYS[5], '(' .. ARGV[3], '+inf') == 0 then
  return redis.call('ZREM', KEYS[6], ARGV[2])
end
return 0
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSessionStore:
    def __init__(
        self, client: AnyRedis, prefix: str, presence_ttl: float, usage_ttl: float, *, cluster: bool = False
    ) -> None:
        self.r: Any = client
        self.p = prefix + ("{s}:" if cluster else "")
        self.presence_ms = int(presence_ttl * 1000)
        self.usage_ms = int(usage_ttl * 1000)
        self._remove_session = client.register_script(_REMOVE_SESSION)

    @staticmethod
    def _now() -> int:
        return int(time.time() * 1000)

    def _info(self, sid: str, raw: dict[Any, Any]) -> SessionInfo | None:
        if not raw:
            return None
        d = {_s(k): _s(v) for k, v in raw.items()}
        return SessionInfo(
            sid=sid,
            user_id=d["user_id"],
            name=d.get("name", ""),
            role=d.get("role", "user"),
            jti=d.get("jti") or None,
            host=d.get("host", ""),
        )

    async def add(self, info: SessionInfo) -> bool:
        deadline = self._now() + self.presence_ms
        old = await self.get(info.sid)
        async with self.r.pipeline(transaction=True) as pipe:
            if old is not None and old.user_id != info.user_id:
                pipe.zrem(f"{self.p}u:{old.user_id}", info.sid)
            pipe.hset(
                f"{self.p}s:{info.sid}",
                mapping={
                    "user_id": info.user_id,
                    "name": info.name,
                    "role": info.role,
                    "jti": info.jti or "",
                    "host": info.host,
                },
            )
            pipe.pexpire(f"{self.p}s:{info.sid}", self.presence_ms * 2)
            pipe.zadd(f"{self.p}sids", {info.sid: deadline})
            pipe.zadd(f"{self.p}u:{info.user_id}", {info.sid: deadline})
            pipe.pexpire(f"{self.p}u:{info.user_id}", self.presence_ms * 2)
            pipe.zadd(f"{self.p}users", {info.user_id: deadline}, gt=True)
            results = await pipe.execute()
        return bool(results[-1])  # ZADD counts members added, not scores moved: 1 = the user came online

    async def remove(self, sid: str) -> Removed | None:
        info = self._info(sid, await self.r.hgetall(f"{self.p}s:{sid}"))
        usage = [f"{_s(m)}{SEP}{sid}" for m in await self.r.smembers(f"{self.p}um:{sid}")]
        if info is None:  # its hash expired: the user is unknown, the roster's deadlines expire the user
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.delete(f"{self.p}s:{sid}", f"{self.p}um:{sid}")
                pipe.zrem(f"{self.p}sids", sid)
                if usage:
                    pipe.zrem(f"{self.p}usage", *usage)
                await pipe.execute()
            return None
        keys = [f"{self.p}s:{sid}", f"{self.p}um:{sid}", f"{self.p}sids", f"{self.p}usage"]
        keys += [f"{self.p}u:{info.user_id}", f"{self.p}users"]
        last = await self._remove_session(keys=keys, args=[sid, info.user_id, self._now(), *usage])
        return Removed(info, bool(last))

    async def get(self, sid: str) -> SessionInfo | None:
        score = await self.r.zscore(f"{self.p}sids", sid)
        if score is None or score <= self._now():
            return None
        return self._info(sid, await self.r.hgetall(f"{self.p}s:{sid}"))

    async def sids_of(self, user_id: str) -> list[str]:
        return sorted(_s(s) for s in await self.r.zrangebyscore(f"{self.p}u:{user_id}", self._now(), "+inf"))

    async def touch(self, sids: list[str]) -> list[str]:
        if not sids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hget(f"{self.p}s:{sid}", "user_id")
            owners = await pipe.execute()
        deadline = self._now() + self.presence_ms
        missing = []
        async with self.r.pipeline(transaction=False) as pipe:
            for sid, uid in zip(sids, owners, strict=True):
                if uid is None:
                    missing.append(sid)
                    continue
                user_id = _s(uid)
                pipe.zadd(f"{self.p}sids", {sid: deadline}, xx=True)
                pipe.pexpire(f"{self.p}s:{sid}", self.presence_ms * 2)
                pipe.zadd(f"{self.p}u:{user_id}", {sid: deadline}, xx=True)
                pipe.pexpire(f"{self.p}u:{user_id}", self.presence_ms * 2)
                # xx: a refresh racing the removal of the user's last session must not put the user back on the
                # roster (the next connect would then not be announced)
                pipe.zadd(f"{self.p}users", {user_id: deadline}, xx=True, gt=True)
            await pipe.execute()
        return missing

    async def online_user_ids(self) -> list[str]:
        return sorted(_s(u) for u in await self.r.zrangebyscore(f"{self.p}users", self._now(), "+inf"))

    async def record_usage(self, sid: str, model: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(f"{self.p}usage", {f"{model}{SEP}{sid}": self._now() + self.usage_ms})
            pipe.sadd(f"{self.p}um:{sid}", model)
            pipe.pexpire(f"{self.p}um:{sid}", self.presence_ms * 2)
            await pipe.execute()

    async def active_models(self) -> list[str]:
        members = await self.r.zrangebyscore(f"{self.p}usage", self._now(), "+inf")
        return sorted({_s(m).split(SEP, 1)[0] for m in members})

    async def purge_expired(self) -> list[Removed]:
        now = self._now()
        expired = [_s(s) for s in await self.r.zrangebyscore(f"{self.p}sids", "-inf", now)]
        dropped = [removed for sid in expired if (removed := await self.remove(sid)) is not None]
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(f"{self.p}sids", "-inf", now)
            pipe.zremrangebyscore(f"{self.p}users", "-inf", now)
            pipe.zremrangebyscore(f"{self.p}usage", "-inf", now)
            await pipe.execute()
        return dropped
