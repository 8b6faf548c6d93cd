"""Small helpers shared across layers: ids and clocks."""

from __future__ import annotations

import time
import uuid


def new_id() -> str:
    """A fresh random id (UUID4 string), the id format Open WebUI uses."""
    return str(uuid.uuid4())


def now_s() -> int:
    """Wall-clock seconds since the epoch (users, chats, notes)."""
    return int(time.time())


def now_ns() -> int:
    """Wall-clock nanoseconds since the epoch (channel messages and read markers, as Open WebUI stores them)."""
    return time.time_ns()
