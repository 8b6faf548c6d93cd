"""Bus over Redis pub/sub: one channel per topic; one subscriber connection per process (per shard in a cluster).

Each subscriber reconnects with capped exponential back-off and resubscribes its topics; `healthy` is False from
the moment a connection fails until its subscription is back, so readiness checks can report a deaf process.
Pub/sub does not replay what was published while a subscriber was away, so after a resubscription the gap handler
runs: the process tells its sessions that they may have missed events.

Topologies (see redis_client.py):
- one Redis, or a primary found through Sentinel: PUBLISH/SUBSCRIBE on one connection. After a failover the
  reconnect asks the sentinels again, so the subscription moves to the promoted replica.
- Redis Cluster: sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7), so a message goes to one shard, not to every
  node. A topic's channel carries a hash tag: recoverable rooms (`room:user:*`, `room:channel:*`) share the event
  log's tag `{log}`, because the log's append script publishes them (a script touches one slot); every other topic
  is tagged with itself and spreads over the shards. The process keeps one subscriber connection per shard that
  owns one of its channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chatwire.backends.bus import GapHandler, Handler
from chatwire.backends.eventlog import is_recoverable
from chatwire.backends.redis_client import AnyRedis, RedisTarget

log = logging.getLogger("chatwire.bus")

# A subscriber connection must not reconnect by itself: redis-py would resubscribe silently, and what was
# published meanwhile would be lost without the gap handler ever running. Errors reach the loop below instead.
NO_RETRY: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "retry_on_error": []}

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
LOG_TAG = "{log}"


def bus_channel(prefix: str, topic: str, cluster: bool) -> str:
    """The Redis channel of a bus topic (`prefix` includes the bus part, e.g. `chatwire:bus:`)."""
    if not cluster:
        return prefix + topic
    if topic.startswith("room:") and is_recoverable(topic[5:]):
        return f"{prefix}{LOG_TAG}:{topic}"
    return f"{prefix}{{{topic}}}"


class _Subscriber:
    """One subscriber connection (to one Redis, or one cluster shard) with its reconnect loop."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], AnyRedis],
        keepalive: str,
        sharded: bool,
        deliver: Callable[[str, Any], Any],
        on_gap: Callable[[], Any],
    ) -> None:
        self.name = name
        self._make = connect
        self._keepalive = keepalive  # a private channel that keeps the connection in subscribed mode
        self._sharded = sharded
        self._deliver = deliver
        self._on_gap = on_gap
        self.channels: set[str] = set()
        self._client: AnyRedis | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Event] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"chatwire-redis-bus-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    @property
    def healthy(self) -> bool:
        return self.connected.is_set() and self._task is not None and not self._task.done()

    async def _close(self) -> None:
        self.connected.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def _sub(self, *channels: str) -> None:
        if self._sharded:
            for channel in channels:  # one slot per SSUBSCRIBE
                await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(*channels)

    async def _connect(self) -> None:
        async with self._lock:
            self._client = self._make()
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            await self._sub(self._keepalive, *self.channels)
            self.connected.set()

    async def _run(self) -> None:
        delay = BACKOFF_START
        subscribed_before = False
        while True:
            try:
                await self._connect()
                if subscribed_before:
                    log.warning(
                        "redis bus resubscribed", extra={"topics": len(self.channels), "node": self.name}
                    )
                    await self._on_gap()
                subscribed_before = True
                delay = BACKOFF_START
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning(
                    "redis bus connection lost; retrying",
                    extra={"error": repr(exc), "retry_in": delay, "node": self.name},
                )
            except Exception:
                log.exception("redis bus listener failed; retrying", extra={"retry_in": delay})
            await self._close()
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    async def _listen(self) -> None:
        me = asyncio.current_task()
        while True:
            message = await self._pubsub.get_message(timeout=5.0)
            if me is not None and me.cancelling():
                # A cancel that lands while redis-py's read times out can come back as a plain timeout (None):
                # honour it here, or stop() would wait on a listener that goes on forever.
                raise asyncio.CancelledError
            if message is None:
                # No traffic: ping so that a dead connection is noticed within seconds.
                await self._pubsub.ping()
                continue
            kind = message.get("type")
            raw = message["channel"]
            channel = raw.decode() if isinstance(raw, bytes) else str(raw)
            if kind in ("subscribe", "ssubscribe"):
                confirmed = self._pending.pop(channel, None)
                if confirmed is not None:
                    confirmed.set()
            elif kind in ("message", "smessage"):
                await self._deliver(channel, message["data"])
            elif kind == "sunsubscribe" and channel in self.channels:
                # The shard gave the slot away (resharding, failover): resubscribe where it lives now.
                raise RedisError(f"shard dropped the subscription of {channel}")

    async def subscribe(self, channels: list[str]) -> None:
        """Subscribe and wait (up to 2 s) for Redis to confirm, so no message published afterwards is missed."""
        self.channels.update(channels)
        if not self.connected.is_set() and self._task is not None and not self._task.done():
            # A subscriber just made for a new shard: wait for its connection (subscribing twice is harmless).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), 2.0)
        if not self.connected.is_set() or self._pubsub is None:
            return
        if asyncio.current_task() is self._task:
            # Called while this connection's listener handles a message (a room entered over the bus): only the
            # listener reads the confirmation, so waiting for it here would always stall 2 s and then give up.
            # Redis applies the SUBSCRIBE before any later command on the connection, so nothing is missed.
            try:
                await self._sub(*channels)
            except (RedisError, OSError):
                log.warning("subscribe failed; will resubscribe on reconnect", extra={"topics": channels[:5]})
            return
        waits = [self._pending.setdefault(c, asyncio.Event()) for c in channels]
        try:
            await self._sub(*channels)
            await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), 2.0)
        except (RedisError, OSError, TimeoutError):
            log.warning(
                "subscribe not confirmed; will resubscribe on reconnect", extra={"topics": channels[:5]}
            )

    async def unsubscribe(self, channels: list[str]) -> None:
        self.channels.difference_update(channels)
        if self.connected.is_set() and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                if self._sharded:
                    for channel in channels:
                        await self._pubsub.sunsubscribe(channel)
                else:
                    await self._pubsub.unsubscribe(*channels)


class RedisBus:
    def __init__(self, target: RedisTarget | str, prefix: str) -> None:
        self.target = RedisTarget(target) if isinstance(target, str) else target
        self.prefix = prefix
        self.cluster = self.target.cluster
        self._pub: Any = self.target.client()
        self._subs: dict[str, _Subscriber] = {}
        self._topic_of: dict[str, str] = {}  # channel -> topic, for every subscribed topic
        self._handler: Handler | None = None
        self._gap_handler: GapHandler | None = None
        self._started = False
        self.gaps = 0  # resubscriptions after a lost subscription (metrics, tests)

    def on_gap(self, handler: GapHandler) -> None:
        self._gap_handler = handler

    def channel_name(self, topic: str) -> str:
        """The Redis channel of a topic (for scripts that publish on the bus themselves)."""
        return bus_channel(self.prefix, topic, self.cluster)

    def _subscriber_for(self, channel: str) -> _Subscriber:
        """The subscriber whose connection reaches `channel` (the shard owning its slot in a cluster)."""
        if not self.cluster:
            name = "main"
            keepalive = self.prefix + "_alive"
        else:
            node = self._pub.get_node_from_key(channel)
            name = node.name
            if name in self._subs:
                return self._subs[name]
            keepalive = next(
                c
                for i in range(100_000)
                if self._pub.get_node_from_key(c := f"{self.prefix}{{_alive:{i}}}").name == name
            )
        sub = self._subs.get(name)
        if sub is None:
            sub = self._subs[name] = _Subscriber(
                name, self._connector(name), keepalive, self.cluster, self._deliver, self._gap
            )
            if self._started:
                sub.start()
        return sub

    def _connector(self, node_name: str) -> Callable[[], AnyRedis]:
        if not self.cluster:
            return lambda: self.target.client(**NO_RETRY)

        def connect() -> AnyRedis:
            node = self._pub.get_node(node_name=node_name)
            if node is None:
                raise RedisError(f"cluster node {node_name} is gone")
            return _node_client(node)

        return connect

    async def _deliver(self, channel: str, data: Any) -> None:
        topic = self._topic_of.get(channel)
        if topic is None or self._handler is None:
            return
        try:
            await self._handler(topic, data)
        except Exception:
            log.exception("bus handler failed", extra={"topic": topic})

    async def _gap(self) -> None:
        self.gaps += 1
        if self._gap_handler is not None:
            try:
                await self._gap_handler()
            except Exception:
                log.exception("bus gap handler failed")

    async def start(self, handler: Handler) -> None:
        if self._started:
            raise RuntimeError("bus already started")
        self._handler = handler
        self._started = True
        if self.cluster:
            try:
                await self._pub.initialize()  # the slot map: which shard each channel lives on
            except (RedisError, OSError) as exc:
                raise RuntimeError(f"Redis Cluster unreachable at start: {exc}") from exc
        main = self._subscriber_for(self.channel_name("_alive"))
        try:
            await asyncio.wait_for(main.connected.wait(), 2)
        except TimeoutError:
            log.warning("redis bus not connected yet; retrying in the background")

    async def stop(self) -> None:
        for sub in list(self._subs.values()):
            await sub.stop()
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self._pub.aclose()

    async def subscribe(self, *topics: str) -> None:
        by_sub: dict[str, list[str]] = {}
        for topic in topics:
            channel = self.channel_name(topic)
            if channel in self._topic_of:
                continue
            self._topic_of[channel] = topic
            try:
                sub = self._subscriber_for(channel)
            except (RedisError, OSError) as exc:
                log.warning("cluster slot map unknown; topic not subscribed", extra={"error": repr(exc)})
                continue
            by_sub.setdefault(sub.name, []).append(channel)
        for name, channels in by_sub.items():
            await self._subs[name].subscribe(channels)

    async def unsubscribe(self, *topics: str) -> None:
        by_sub: dict[str, list[str]] = {}
        for topic in topics:
            channel = self.channel_name(topic)
            if self._topic_of.pop(channel, None) is None:
                continue
            for sub in self._subs.values():
                if channel in sub.channels:
                    by_sub.setdefault(sub.name, []).append(channel)
        for name, channels in by_sub.items():
            await self._subs[name].unsubscribe(channels)

    async def publish(self, topic: str, payload: bytes) -> int:
        channel = self.channel_name(topic)
        if self.cluster:
            return int(await self._pub.spublish(channel, payload))
        return int(await self._pub.publish(channel, payload))

    async def ping(self) -> bool:
        """True when Redis answers on the publishing connection (every primary, in a cluster)."""
        try:
            if self.cluster:
                return bool(await self._pub.ping(target_nodes=RedisCluster.PRIMARIES))
            return bool(await self._pub.ping())
        except (RedisError, OSError):
            return False

    @property
    def healthy(self) -> bool:
        return bool(self._subs) and all(sub.healthy for sub in self._subs.values())


def _node_client(node: Any) -> AnyRedis:
    """A plain client to one cluster node, with the cluster's credentials (a subscriber's own connection)."""
    import redis.asyncio as aioredis

    kwargs = dict(node.connection_kwargs)
    for key in ("host", "port"):
        kwargs.pop(key, None)
    allowed = {"username", "password", "db", "socket_connect_timeout", "ssl", "client_name"}
    return aioredis.Redis(
        host=node.host,
        port=node.port,
        health_check_interval=10,
        **NO_RETRY,
        **{k: v for k, v in kwargs.items() if k in allowed},
    )
