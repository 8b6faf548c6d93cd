"""The Bus: topic-based publish/subscribe between chatwire processes (fleet mode).

Invariants: messages published on one topic by one process arrive in publication order; a process receives only
the topics it subscribed to (so it never decodes traffic for rooms it has no member in); delivery is at-most-once,
which is why recoverable streams also go to the EventLog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

Handler = Callable[[str, bytes], Awaitable[None]]
GapHandler = Callable[[], Awaitable[None]]


class Bus(Protocol):
    async def start(self, handler: Handler) -> None:
        """Begin receiving; `handler(topic, payload)` is called for each message, in order."""
        ...

    async def stop(self) -> None: ...

    def on_gap(self, handler: GapHandler) -> None:
        """Call `handler()` after the bus resubscribed following a lost subscription: messages may be missing."""
        ...

    async def subscribe(self, *topics: str) -> None:
        """Receive these topics from now on; returns once the subscription is active."""
        ...

    async def unsubscribe(self, *topics: str) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> int:
        """Send to every subscriber of `topic`; returns how many processes received it (best effort)."""
        ...

    def channel_name(self, topic: str) -> str:
        """The name the transport underneath uses for `topic` (for scripts that publish on the bus themselves)."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the process cannot receive (connection lost, resubscribing)."""
        ...


@runtime_checkable
class Pings(Protocol):
    """A bus backed by a server that can be asked whether it answers (readiness: `GET /ready` reports it as
    `redis`); a bus without one is as ready as it is healthy."""

    async def ping(self) -> bool: ...
