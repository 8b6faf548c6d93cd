"""Lease lock in Redis: SET NX PX to take it; Lua compare-and-set to renew or release, so only the owner can.

Each lock is one key, so every script touches one slot in a Redis Cluster too."""

from __future__ import annotations

from typing import Any

from chatwire.backends.redis_client import AnyRedis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    def __init__(self, client: AnyRedis, prefix: str) -> None:
        self.r: Any = client
        self.p = prefix
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        key = f"{self.p}lock:{name}"
        if await self.r.set(key, owner, nx=True, px=int(ttl * 1000)):
            return True
        return await self.renew(name, owner, ttl)

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        return bool(await self._renew(keys=[f"{self.p}lock:{name}"], args=[owner, int(ttl * 1000)]))

    async def release(self, name: str, owner: str) -> bool:
        return bool(await self._release(keys=[f"{self.p}lock:{name}"], args=[owner]))
