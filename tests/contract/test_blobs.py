"""One contract for every BlobStore (memory and real Redis): bytes come back exactly, in any size, until the
TTL ends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from chatwire.backends.blobs import BlobStore
from chatwire.backends.blobs_memory import MemoryBlobStore
from chatwire.backends.blobs_redis import RedisBlobStore
from tests.contract.conftest import redis_prefix


@pytest.fixture(params=["memory", "redis"])
async def blobs(request: pytest.FixtureRequest) -> AsyncIterator[BlobStore]:
    if request.param == "memory":
        yield MemoryBlobStore()
        return
    async with redis_prefix() as (client, prefix):
        yield RedisBlobStore(client, prefix, chunk_bytes=64 * 1024)


async def test_bytes_come_back_exactly_and_keys_are_fresh(blobs: BlobStore) -> None:
    big = os.urandom(3 * 64 * 1024 + 17)  # several chunks and a partial one
    for data in (b"", b"x", big):
        key = await blobs.put(data, 10)
        assert await blobs.get(key) == data
    assert await blobs.put(b"a", 10) != await blobs.put(b"a", 10)
    assert await blobs.get("unknown") is None


async def test_a_blob_expires_after_its_ttl(blobs: BlobStore) -> None:
    key = await blobs.put(b"short-lived", 0.2)
    assert await blobs.get(key) == b"short-lived"
    await asyncio.sleep(0.35)
    assert await blobs.get(key) is None
