"""Bus over Redis pub/sub: one channel per topic, one subscriber connection per process.

The listener reconnects with capped exponential back-off and resubscribes every topic; `healthy` is False from the
moment the connection fails until the subscription is back, so readiness checks can report a deaf process. Pub/sub
does not replay what was published while a subscriber was away, so after a resubscription the gap handler runs: the
process tells its sessions that they may have missed events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatwire.backends.bus import GapHandler, Handler
from chatwire.backends.redis_client import make_client

log = logging.getLogger("chatwire.bus")

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0


class RedisBus:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._pub = make_client(url)
        self._sub_client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._topics: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._handler: Handler | None = None
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Event] = {}
        self._gap_handler: GapHandler | None = None
        self.gaps = 0  # resubscriptions after a lost subscription (metrics, tests)

    def on_gap(self, handler: GapHandler) -> None:
        self._gap_handler = handler

    def _channel(self, topic: str) -> str:
        return self.prefix + topic

    def channel_name(self, topic: str) -> str:
        """The Redis channel of a topic (for scripts that publish on the bus themselves)."""
        return self._channel(topic)

    async def start(self, handler: Handler) -> None:
        if self._task is not None:
            raise RuntimeError("bus already started")
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="chatwire-redis-bus")
        try:
            await asyncio.wait_for(self._connected.wait(), 2)
        except TimeoutError:
            log.warning("redis bus not connected yet; retrying in the background")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_sub()
        await self._pub.aclose()

    async def _close_sub(self) -> None:
        self._connected.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._sub_client is not None:
            with contextlib.suppress(Exception):
                await self._sub_client.aclose()
            self._sub_client = None

    async def _connect(self) -> None:
        async with self._lock:
            self._sub_client = make_client(self.url)
            self._pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
            # A private channel keeps the connection in subscribed mode even with no topics yet.
            await self._pubsub.subscribe(self._channel("_alive"), *(self._channel(t) for t in self._topics))
            self._connected.set()

    async def _run(self) -> None:
        delay = BACKOFF_START
        subscribed_before = False
        while True:
            try:
                await self._connect()
                if subscribed_before:
                    log.warning("redis bus resubscribed", extra={"topics": len(self._topics)})
                    await self._gap()
                subscribed_before = True
                delay = BACKOFF_START
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning(
                    "redis bus connection lost; retrying", extra={"error": repr(exc), "retry_in": delay}
                )
            except Exception:
                log.exception("redis bus listener failed; retrying", extra={"retry_in": delay})
            await self._close_sub()
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    async def _gap(self) -> None:
        self.gaps += 1
        if self._gap_handler is not None:
            try:
                await self._gap_handler()
            except Exception:
                log.exception("bus gap handler failed")

    async def _listen(self) -> None:
        assert self._pubsub is not None and self._handler is not None
        strip = len(self.prefix)
        while True:
            message = await self._pubsub.get_message(timeout=5.0)
            if message is None:
                # No traffic: ping so that a dead connection is noticed within seconds.
                await self._pubsub.ping()
                continue
            kind = message.get("type")
            if kind not in ("message", "subscribe"):
                continue  # pong replies to our pings, unsubscribe confirmations
            channel = message["channel"]
            topic = (channel.decode() if isinstance(channel, bytes) else str(channel))[strip:]
            if kind == "subscribe":
                confirmed = self._pending.pop(topic, None)
                if confirmed is not None:
                    confirmed.set()
                continue
            try:
                await self._handler(topic, message["data"])
            except Exception:
                log.exception("bus handler failed", extra={"topic": topic})

    async def subscribe(self, *topics: str) -> None:
        """Subscribe and wait (up to 2 s) for Redis to confirm, so no message published afterwards is missed."""
        new = [t for t in topics if t not in self._topics]
        self._topics.update(new)
        if not new or not self._connected.is_set() or self._pubsub is None:
            return
        waits = [self._pending.setdefault(t, asyncio.Event()) for t in new]
        try:
            await self._pubsub.subscribe(*(self._channel(t) for t in new))
            await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), 2.0)
        except (RedisError, OSError, TimeoutError):
            log.warning("subscribe not confirmed; will resubscribe on reconnect", extra={"topics": new[:5]})

    async def unsubscribe(self, *topics: str) -> None:
        gone = [t for t in topics if t in self._topics]
        self._topics.difference_update(gone)
        if gone and self._connected.is_set() and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(*(self._channel(t) for t in gone))

    async def publish(self, topic: str, payload: bytes) -> int:
        return int(await self._pub.publish(self._channel(topic), payload))

    async def ping(self) -> bool:
        """True when Redis answers on the publishing connection."""
        try:
            return bool(await self._pub.ping())
        except (RedisError, OSError):
            return False

    @property
    def healthy(self) -> bool:
        return self._connected.is_set() and self._task is not None and not self._task.done()
