"""Optional backend capabilities are explicit Protocols, checked with isinstance, never probed by attribute name.

Each implementation either offers a capability in full or not at all; the code that uses one (fleet broker,
collaboration, readiness, metrics) asks the Protocol, so renaming a method breaks these tests instead of silently
turning a fast or fleet path off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import chatwire
from chatwire.backends.bus import Pings
from chatwire.backends.bus_memory import MemoryBus
from chatwire.backends.bus_redis import RedisBus
from chatwire.backends.docstore import QueuesAppends
from chatwire.backends.docstore_memory import MemoryDocStore
from chatwire.backends.docstore_redis import RedisDocStore
from chatwire.backends.docstore_sql import SqlDocStore
from chatwire.backends.eventlog import AppendsNow, CountsEntries, SharedEventLog
from chatwire.backends.eventlog_memory import MemoryEventLog
from chatwire.backends.eventlog_redis import RedisEventLog

PACKAGE = Path(chatwire.__file__).parent


@pytest.mark.parametrize(
    ("cls", "capability", "offered"),
    [
        (MemoryEventLog, AppendsNow, True),
        (MemoryEventLog, CountsEntries, True),
        (MemoryEventLog, SharedEventLog, False),
        (RedisEventLog, SharedEventLog, True),
        (RedisEventLog, AppendsNow, False),
        (SqlDocStore, QueuesAppends, True),
        (MemoryDocStore, QueuesAppends, False),
        (RedisDocStore, QueuesAppends, False),
        (RedisBus, Pings, True),
        (MemoryBus, Pings, False),
    ],
)
def test_each_backend_offers_exactly_its_capabilities(cls: type, capability: type, offered: bool) -> None:
    assert issubclass(cls, capability) is offered


def test_no_capability_is_probed_by_attribute_name() -> None:
    """`hasattr(x, "method")` / `getattr(x, "method", None)` as a capability check is what the Protocols replace:
    no hasattr anywhere, and no getattr with a default where the backends, services and transport live (the CLI
    reads click's exception fields that way, which is no capability of ours)."""
    has = re.compile(r"\bhasattr\(")
    get_or_none = re.compile(r"getattr\([^,()]+,\s*[\"'][a-z_]+[\"'],\s*None\)")
    layers = {"backends", "services", "transport", "engine", "api", "db"}
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if has.search(line) or (path.relative_to(PACKAGE).parts[0] in layers and get_or_none.search(line))
    ]
    assert offenders == []
