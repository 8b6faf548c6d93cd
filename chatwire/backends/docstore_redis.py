"""DocStore in Redis: a document's log as a hash of entries plus a sorted index, compaction in one Lua script.

Durability follows Redis's own (chatwire's fleet keeps documents in the database by default, because the Redis of
a fleet is often run without persistence; this store is for deployments whose Redis is durable, and it passes the
same contract). Keys: `doc:seq` (ids for every document), `doc:{id}:data` (entry id -> bytes),
`doc:{id}:index` (sorted set: entry id -> id, with snapshots marked in `doc:{id}:snap`). In a Redis Cluster each
document's keys share the hash tag of its id (`doc:{note:n1}:data`), so each script touches one slot; the
store-wide id counter (`doc:{seq}`) is incremented first, in its own slot, and the id handed to the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatwire.backends.docstore import StoredDoc
from chatwire.backends.redis_client import AnyRedis

_APPEND = """
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], seq, seq)
if ARGV[2] == '1' then redis.call('SADD', KEYS[4], seq) end
return seq
"""

_COMPACT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('SADD', KEYS[4], seq)
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('SREM', KEYS[4], ARGV[i])
end
return seq
"""


# In a cluster the id comes from the store-wide counter first (its own slot); the scripts get it as ARGV[1].
_APPEND_AT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
return ARGV[1]
"""

_COMPACT_AT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('SREM', KEYS[3], ARGV[i])
end
return ARGV[1]
"""


class RedisDocStore:
    def __init__(self, client: AnyRedis, prefix: str, *, cluster: bool = False) -> None:
        self.r: Any = client
        self.p = prefix + "doc:"
        self.cluster = cluster
        self._append = client.register_script(_APPEND)
        self._compact = client.register_script(_COMPACT)
        self._append_at = client.register_script(_APPEND_AT)
        self._compact_at = client.register_script(_COMPACT_AT)

    def _keys(self, document_id: str) -> list[str]:
        if self.cluster:
            base = f"{self.p}{{{document_id}}}:"
            return [self.p + "{seq}", base + "data", base + "index", base + "snap"]
        base = f"{self.p}{document_id}:"
        return [self.p + "seq", base + "data", base + "index", base + "snap"]

    async def append(self, document_id: str, update: bytes) -> int:
        keys = self._keys(document_id)
        if self.cluster:
            seq = await self.r.incr(keys[0])
            return int(await self._append_at(keys=keys[1:3], args=[seq, bytes(update)]))
        return int(await self._append(keys=keys, args=[bytes(update), "0"]))

    async def load(self, document_id: str) -> StoredDoc:
        _, data_key, index_key, snap_key = self._keys(document_id)
        seqs = [int(s) for s in await self.r.zrange(index_key, 0, -1)]
        if not seqs:
            return StoredDoc()
        blobs = await self.r.hmget(data_key, [str(s) for s in seqs])
        snaps = {int(s) for s in await self.r.smembers(snap_key)}
        kept = [(s, b) for s, b in zip(seqs, blobs, strict=True) if b is not None]
        return StoredDoc(
            seqs=[s for s, _ in kept],
            updates=[bytes(b) for _, b in kept],
            snapshot_flags=[s in snaps for s, _ in kept],
        )

    async def compact(self, document_id: str, snapshot: bytes, replaces: Sequence[int]) -> int:
        keys = self._keys(document_id)
        if self.cluster:
            seq = await self.r.incr(keys[0])
            args = [seq, bytes(snapshot), *[str(s) for s in replaces]]
            return int(await self._compact_at(keys=keys[1:], args=args))
        return int(
            await self._compact(
                keys=self._keys(document_id), args=[bytes(snapshot), *[str(s) for s in replaces]]
            )
        )

    async def delete(self, document_id: str) -> None:
        _, data_key, index_key, snap_key = self._keys(document_id)
        await self.r.delete(data_key, index_key, snap_key)
