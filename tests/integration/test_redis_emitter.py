"""The SDK's RedisEmitter speaks the fleet bus format and publishes to real Redis on the room's topic."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import redis.asyncio as aioredis

from chatwire.client.server import RedisEmitter, room_message
from tests.conftest import REDIS_URL, service_unavailable


def test_room_message_wire_format() -> None:
    raw = room_message("emitter-1", "channel:c1", "events:channel", {"a": [1, "é"]})
    assert orjson.loads(raw) == {
        "t": "emit",
        "h": "emitter-1",
        "room": "channel:c1",
        "e": "events:channel",
        "d": {"a": [1, "é"]},
        "m": False,
        "s": None,
        "ns": "/",
    }


async def test_emit_publishes_on_the_room_topic() -> None:
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}:"
    listener = aioredis.from_url(REDIS_URL)
    try:
        await listener.ping()
    except Exception as exc:
        service_unavailable("Redis", exc)
    pubsub = listener.pubsub()
    await pubsub.subscribe(f"{prefix}bus:room:user:u1")
    async with RedisEmitter(REDIS_URL, prefix=prefix) as emitter:
        assert emitter.topic("user:u1") == f"{prefix}bus:room:user:u1"
        assert await emitter.emit("user:u1", "events", {"chat_id": "c", "n": 1}) == 1
        assert await emitter.emit("user:u2", "events", {"n": 2}) == 0  # nobody listens to that room
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
            await asyncio.sleep(0)
        assert message is not None and message["channel"] == f"{prefix}bus:room:user:u1".encode()
        body = orjson.loads(message["data"])
        assert body == {
            "t": "emit",
            "h": emitter.emitter_id,
            "room": "user:u1",
            "e": "events",
            "d": {"chat_id": "c", "n": 1},
            "m": False,
            "s": None,
            "ns": "/",
        }
    await pubsub.aclose()
    await listener.aclose()


async def test_emit_on_a_cluster_reaches_the_fleet_bus(redis_cluster: str) -> None:
    """On a Redis Cluster the emitter SPUBLISHes on the hash-tagged channel the fleet's bus subscribes to."""
    from chatwire.backends.bus_redis import RedisBus
    from chatwire.backends.redis_client import RedisTarget

    target = RedisTarget(redis_cluster, cluster=True)
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}:"
    got: list[tuple[str, bytes]] = []

    async def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    bus = RedisBus(target, prefix + "bus:")
    await bus.start(handler)
    try:
        await bus.subscribe("room:user:u1", "room:note:n1")
        async with RedisEmitter(target, prefix=prefix) as emitter:
            assert emitter.topic("user:u1") == bus.channel_name("room:user:u1")
            assert await emitter.emit("user:u1", "events", {"n": 1}) == 1
            assert await emitter.emit("note:n1", "events:note", {"n": 2}) == 1
            assert await emitter.emit("user:u2", "events", {"n": 3}) == 0
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted((t, orjson.loads(p)["d"]["n"]) for t, p in got) == [
            ("room:note:n1", 2),
            ("room:user:u1", 1),
        ]
    finally:
        await bus.stop()
