"""Small helpers shared across layers: ids and clocks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable


def new_id() -> str:
    """A fresh random id (UUID4 string), the id format Open WebUI uses."""
    return str(uuid.uuid4())


def now_s() -> int:
    """Wall-clock seconds since the epoch (users, chats, notes)."""
    return int(time.time())


def now_ns() -> int:
    """Wall-clock nanoseconds since the epoch (channel messages and read markers, as Open WebUI stores them)."""
    return time.time_ns()


_CONTAINERS = frozenset({dict, list, tuple})


def nested_deeper_than(value: object, limit: int) -> bool:
    """Whether lists and dicts in `value` nest more than `limit` levels (iterative, so safe on any depth).

    A list or dict holding no container (a Yjs update as an array of ints) is skipped at C speed."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        if _CONTAINERS.isdisjoint(map(type, children)):
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False
