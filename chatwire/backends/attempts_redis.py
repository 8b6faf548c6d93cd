"""AttemptLog in Redis: one sorted set per key (members are failures, scores their times in ms by the Redis
server's clock, so processes with skewed clocks agree), trimmed to the window and to `limit` members, expiring
with the window. One key per script, so it works on a Redis Cluster too."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from chatwire.backends.redis_client import AnyRedis

# KEYS[1] the set; ARGV: window ms, limit, member (add only). Returns ms to wait, or -1 while under the limit.
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then return -1 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(0, tonumber(oldest[2]) + window - now)
"""

_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisAttemptLog:
    def __init__(self, client: AnyRedis, prefix: str, name: str, limit: int, window: float) -> None:
        self.r: Any = client
        self.p = f"{prefix}attempts:{name}:"
        self.limit = limit
        self.window_ms = max(1, int(window * 1000))
        self._check = client.register_script(_CHECK)
        self._add = client.register_script(_ADD)

    def _key(self, key: str) -> str:
        # Hashed: keys are emails and addresses of any length and alphabet; the digest is short and fixed.
        return self.p + hashlib.sha256(key.encode()).hexdigest()[:32]

    async def retry_after(self, key: str) -> float | None:
        if not self.limit:
            return None
        wait = int(await self._check(keys=[self._key(key)], args=[self.window_ms, self.limit]))
        return None if wait < 0 else wait / 1000

    async def add(self, key: str) -> None:
        if self.limit:
            await self._add(keys=[self._key(key)], args=[self.window_ms, self.limit, uuid.uuid4().hex])

    async def clear(self, key: str) -> None:
        await self.r.delete(self._key(key))
