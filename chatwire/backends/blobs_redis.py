"""BlobStore in Redis: a list of chunks under `blob:{key}` with a TTL, written in one pipeline, read
with one LRANGE. Chunks keep each command below the fleet payload limit."""

from __future__ import annotations

import uuid

from chatwire.backends.redis_client import AnyRedis


class RedisBlobStore:
    def __init__(self, client: AnyRedis, prefix: str, chunk_bytes: int = 1 << 20) -> None:
        self.r = client
        self.p = prefix + "blob:"
        self.chunk_bytes = chunk_bytes

    async def put(self, data: bytes, ttl: float) -> str:
        key = uuid.uuid4().hex
        name = self.p + key
        view = memoryview(data)
        async with self.r.pipeline(transaction=False) as pipe:
            for start in range(0, max(len(data), 1), self.chunk_bytes):
                pipe.rpush(name, bytes(view[start : start + self.chunk_bytes]))
            pipe.pexpire(name, int(ttl * 1000))
            await pipe.execute()
        return key

    async def get(self, key: str) -> bytes | None:
        chunks = await self.r.lrange(self.p + key, 0, -1)
        if not chunks:
            return None
        return b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
