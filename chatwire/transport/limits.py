"""Per-client-IP rate limits for socket connects and events, held in a bounded table that forgets idle IPs.

The IP is the ASGI scope's `client` address. Behind a reverse proxy that is the proxy's address unless uvicorn
rewrites it from `X-Forwarded-For` (uvicorn's `--proxy-headers`, on by default, trusts the header only from the
addresses in `--forwarded-allow-ips` / `FORWARDED_ALLOW_IPS`, default 127.0.0.1).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


class Bucket:
    """A token bucket refilled at `rate` a second up to `burst`."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now


class IpLimiter:
    """One token bucket per client IP; at most `max_entries` IPs are remembered.

    A bucket that has refilled completely holds no information (a fresh one would be the same), so idle IPs
    are dropped when the table is swept; when it is full of busy IPs, the least recently seen one goes.
    """

    def __init__(self, rate: float, burst: int, max_entries: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._next_sweep = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, ip: str | None, now: float | None = None) -> bool:
        """Spend one token of `ip`'s bucket; False when it is empty (the caller refuses)."""
        if not self.enabled or ip is None:
            return True
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(ip)
        if bucket is None:
            self._sweep(now)
            bucket = Bucket(self.burst, now)
            self._buckets[ip] = bucket
        else:
            self._buckets.move_to_end(ip)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _sweep(self, now: float) -> None:
        """Forget IPs whose bucket is full again; then, if still full, the least recently seen ones."""
        refill = self.burst / self.rate
        if now >= self._next_sweep or len(self._buckets) >= self.max_entries:
            self._next_sweep = now + min(refill, 60.0)
            # Least recently seen first: stop at the first IP that is still refilling.
            while self._buckets:
                ip, bucket = next(iter(self._buckets.items()))
                if now - bucket.stamp < refill:
                    break
                del self._buckets[ip]
        while len(self._buckets) >= self.max_entries:
            self._buckets.popitem(last=False)


def client_ip(environ: dict[str, Any]) -> str | None:
    """The client address of a Socket.IO connection (the ASGI scope's `client`, after uvicorn's proxy headers)."""
    scope = environ.get("asgi.scope") or {}
    client = scope.get("client")
    if client:
        return str(client[0])
    remote = environ.get("REMOTE_ADDR")
    return str(remote) if remote else None
