"""One way to make Redis clients: retries with back-off on connection errors, so a Redis restart costs a retry
instead of a failed request."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def make_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        health_check_interval=10,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
