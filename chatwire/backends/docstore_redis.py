"""DocStore in Redis: a document's log as a hash of entries plus a sorted index, compaction in one Lua script.

Durability follows Redis's own (chatwire's fleet keeps documents in the database by default, because the Redis of
a fleet is often run without persistence; this store is for deployments whose Redis is durable, and it passes the
same contract). Keys: `doc:seq` (ids for every document), `doc:{id}:data` (entry id -> bytes),
`doc:{id}:index` (sorted set: entry id -> id, with snapshots marked in `doc:{id}:snap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from chatwire.backends.docstore import StoredDoc

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


class RedisDocStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r = client
        self.p = prefix + "doc:"
        self._append = client.register_script(_APPEND)
        self._compact = client.register_script(_COMPACT)

    def _keys(self, document_id: str) -> list[str]:
        base = f"{self.p}{document_id}:"
        return [self.p + "seq", base + "data", base + "index", base + "snap"]

    async def append(self, document_id: str, update: bytes) -> int:
        return int(await self._append(keys=self._keys(document_id), args=[bytes(update), "0"]))

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
        return int(
            await self._compact(
                keys=self._keys(document_id), args=[bytes(snapshot), *[str(s) for s in replaces]]
            )
        )

    async def delete(self, document_id: str) -> None:
        _, data_key, index_key, snap_key = self._keys(document_id)
        await self.r.delete(data_key, index_key, snap_key)
