"""Prometheus metrics of one chatwire process, in a registry of its own (one per app, so tests don't share).

Series carry no per-process label: Prometheus adds `instance` per scraped process, so `sum without (instance)`
over a fleet adds up cleanly; `chatwire_process_info{host}` names the process. Gauges that are cheap to read from
live state (sessions, rooms) are computed at scrape time by providers that the transport registers.
Hooks for other subsystems: `set_persistence_queue_depth`, `observe_persistence_flush`, `set_event_log_size`,
`set_redis_up` (the chat event pipeline and the recovery event log call them when they are wired in).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger("chatwire.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The `event` label takes its values from this fixed set only: clients choose event names, so anything else (an
# unknown event, a name published through the server API) is counted as "other" and cannot grow the series.
CLIENT_EVENTS = frozenset(
    {
        "user-join",
        "join-channels",
        "join-note",
        "heartbeat",
        "usage",
        "events:channel",
        "events:chat",
        "ydoc:document:join",
        "ydoc:document:state",
        "ydoc:document:update",
        "ydoc:document:leave",
        "ydoc:awareness:update",
    }
)
SERVER_EVENTS = frozenset(
    {
        "events",
        "events:channel",
        "events:note",
        "ydoc:document:state",
        "ydoc:document:update",
        "ydoc:awareness:update",
        "ydoc:user:joined",
        "ydoc:user:left",
    }
)
EVENT_LABELS = CLIENT_EVENTS | SERVER_EVENTS
OTHER = "other"

SessionsProvider = Callable[[], dict[str, int]]
RoomsProvider = Callable[[], dict[str, int]]
Probe = Callable[[], Awaitable[None]]


def default_host_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _LiveCollector(Collector):
    """Gauges read from live state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sessions = GaugeMetricFamily(
            "chatwire_sessions", "Live Socket.IO sessions of this process, by transport", labels=["transport"]
        )
        for transport, count in sorted(self.metrics.read_sessions().items()):
            sessions.add_metric([transport], count)
        yield sessions
        rooms = GaugeMetricFamily(
            "chatwire_rooms",
            "Rooms with members on this process, by kind (user, channel, note, doc)",
            labels=["kind"],
        )
        for kind, count in sorted(self.metrics.read_rooms().items()):
            rooms.add_metric([kind], count)
        yield rooms


class _EmitTally:
    """Emits by event label and their latency histogram, as plain numbers: an emit costs two increments and a
    bisection, not a lock and a sample object per emit (prometheus_client's Counter and Histogram)."""

    __slots__ = ("buckets", "counts", "created", "seconds")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0
        self.created = time.time()


class _EmitCollector(Collector):
    """`chatwire_events_out_total{event}` and the `chatwire_emit_seconds` histogram, from the tally."""

    def __init__(self, tally: _EmitTally) -> None:
        self.tally = tally

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        tally = self.tally
        out = CounterMetricFamily(
            "chatwire_events_out", "Events emitted to rooms or sessions, by name", labels=["event"]
        )
        for label, count in sorted(tally.counts.items()):
            out.add_metric([label], count, created=tally.created)
        yield out
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), tally.buckets, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(
            "chatwire_emit_seconds",
            "Emit to hand-off latency: from an emit call until its packets are queued to every local "
            "recipient's transport (or published to the fleet)",
            buckets=buckets,
            sum_value=tally.seconds,
        )


class Metrics:
    """Every collector of one process. Cheap to call from hot paths: one dict look-up and an increment."""

    def __init__(self, host_id: str | None = None) -> None:
        self.host_id = host_id or default_host_id()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        info = Gauge("chatwire_process_info", "This chatwire process", ["host"], registry=r)
        info.labels(self.host_id).set(1)
        self.connections = Counter(
            "chatwire_connections", "Socket.IO connections accepted, by transport", ["transport"], registry=r
        )
        self.connections_refused = Counter(
            "chatwire_connections_refused", "Socket.IO connections refused at the handshake", registry=r
        )
        self.disconnections = Counter("chatwire_disconnections", "Socket.IO sessions ended", registry=r)
        self.events_in = Counter(
            "chatwire_events_in", "Socket events received from clients, by name", ["event"], registry=r
        )
        self.events_rejected = Counter(
            "chatwire_events_rejected",
            "Socket events refused with an error ack, by name and error code",
            ["event", "code"],
            registry=r,
        )
        # Counted per emit (per token while answers stream): plain ints here, turned into samples at scrape time.
        self.emits = _EmitTally()
        r.register(_EmitCollector(self.emits))
        self.api_calls = Counter(
            "chatwire_server_api_calls",
            "Server API calls, by scope and outcome (ok or an error code)",
            ["scope", "outcome"],
            registry=r,
        )
        self.persistence_queue_depth = Gauge(
            "chatwire_persistence_queue_depth", "Chat events waiting to be written", registry=r
        )
        self.persistence_flush_seconds = Histogram(
            "chatwire_persistence_flush_seconds",
            "Duration of one persistence flush",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_log_size = Gauge(
            "chatwire_event_log_entries", "Events held for reconnect recovery on this process", registry=r
        )
        self.webhook_attempts = Counter(
            "chatwire_webhook_attempts",
            "Outgoing webhook attempts of this process, by outcome (delivered, failed, timeout)",
            ["outcome"],
            registry=r,
        )
        self.webhook_attempt_seconds = Histogram(
            "chatwire_webhook_attempt_seconds",
            "Duration of one outgoing webhook attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.webhook_pending = Gauge(
            "chatwire_webhook_outbox_pending",
            "Webhook deliveries waiting in the outbox (fleet-wide)",
            registry=r,
        )
        self.webhook_dead = Gauge(
            "chatwire_webhook_outbox_dead",
            "Webhook deliveries given up after the last attempt (fleet-wide)",
            registry=r,
        )
        self.redis_up: Gauge | None = None  # registered on the first probe: absent without Redis
        # Labelled children by event name: `labels()` costs more than the increment itself on the hot path.
        self._in_children: dict[str, Any] = {}
        self._sessions_provider: SessionsProvider = dict
        self._rooms_provider: RoomsProvider = dict
        self._probes: list[Probe] = []
        r.register(_LiveCollector(self))

    # label hygiene

    @staticmethod
    def _event(name: str) -> str:
        return name if name in EVENT_LABELS else OTHER

    # hot-path hooks

    def event_in(self, event: str) -> None:
        label = self._event(event)
        child = self._in_children.get(label)
        if child is None:
            child = self._in_children[label] = self.events_in.labels(label)
        child.inc()

    def event_rejected(self, event: str, code: str) -> None:
        self.events_rejected.labels(self._event(event), code).inc()

    def event_out(self, event: str, seconds: float) -> None:
        tally = self.emits
        label = event if event in EVENT_LABELS else OTHER
        tally.counts[label] = tally.counts.get(label, 0) + 1
        tally.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        tally.seconds += seconds

    def connected(self, transport: str) -> None:
        self.connections.labels(transport).inc()

    def refused(self) -> None:
        self.connections_refused.inc()

    def disconnected(self) -> None:
        self.disconnections.inc()

    def api_call(self, scope: str, outcome: str) -> None:
        self.api_calls.labels(scope, outcome).inc()

    # hooks for the persistence pipeline, the recovery log and the fleet (wired when those branches merge)

    def set_persistence_queue_depth(self, depth: int) -> None:
        self.persistence_queue_depth.set(depth)

    def observe_persistence_flush(self, seconds: float) -> None:
        self.persistence_flush_seconds.observe(seconds)

    def set_event_log_size(self, entries: int) -> None:
        self.event_log_size.set(entries)

    def set_redis_up(self, up: bool) -> None:
        if self.redis_up is None:
            self.redis_up = Gauge(
                "chatwire_redis_up",
                "1 when Redis answered the last probe, 0 when not",
                registry=self.registry,
            )
        self.redis_up.set(1 if up else 0)

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        self.webhook_attempts.labels(outcome).inc()
        self.webhook_attempt_seconds.observe(seconds)

    def set_webhook_outbox(self, pending: int, dead: int) -> None:
        self.webhook_pending.set(pending)
        self.webhook_dead.set(dead)

    # scrape-time sources

    def set_sessions_provider(self, provider: SessionsProvider) -> None:
        self._sessions_provider = provider

    def set_rooms_provider(self, provider: RoomsProvider) -> None:
        self._rooms_provider = provider

    def add_probe(self, probe: Probe) -> None:
        """An async check run before each scrape (e.g. a Redis ping that sets `chatwire_redis_up`)."""
        self._probes.append(probe)

    def read_sessions(self) -> dict[str, int]:
        try:
            return self._sessions_provider()
        except Exception:
            log.exception("sessions provider failed")
            return {}

    def read_rooms(self) -> dict[str, int]:
        try:
            return self._rooms_provider()
        except Exception:
            log.exception("rooms provider failed")
            return {}

    async def render(self) -> bytes:
        """The Prometheus text exposition, after running the probes."""
        for probe in self._probes:
            try:
                await probe()
            except Exception:
                log.exception("metrics probe failed")
        return generate_latest(self.registry)
