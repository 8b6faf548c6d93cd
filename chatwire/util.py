"""Small helpers shared across layers: ids, clocks, text checks, futures."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson


def new_id() -> str:
    """A fresh random id (UUID4 string), the id format Open WebUI uses."""
    return str(uuid.uuid4())


def new_ordered_id() -> str:
    """A fresh UUID that sorts by creation time (version 7: 48 bits of Unix milliseconds, then random bits), in
    the same UUID string format as `new_id`. Users get these, so that ties of their second-resolution
    `created_at` break in sign-up order."""
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = value & ~(0xF << 76) | (0x7 << 76)  # version 7
    value = value & ~(0x3 << 62) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


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


# A NUL escape in orjson's output that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
LONE_SURROGATE = "text must be valid UTF-8 (no lone surrogates)"
NUL_TEXT = "NUL characters are not allowed"


def _opaque(_value: Any) -> None:
    """orjson's fallback for what is not JSON (bytes, models): not text, nothing to check."""
    return None


def text_problem(value: Any) -> str | None:
    """Why `value` holds text chatwire cannot store, or None: a lone surrogate (not encodable as UTF-8, so no
    database, JSON encoder or socket can carry it) or a NUL character (PostgreSQL text cannot), in any string
    or key at any depth. One orjson pass: it refuses surrogates and writes NUL as an escape."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return LONE_SURROGATE
        return NUL_TEXT if "\x00" in value else None
    if not isinstance(value, dict | list | tuple):
        return None
    try:
        encoded = orjson.dumps(value, default=_opaque, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        return LONE_SURROGATE if "surrogates" in str(exc) else None
    return NUL_TEXT if b"\\u0000" in encoded and has_nul_escape(encoded) else None


def has_nul_escape(encoded: bytes) -> bool:
    """Whether orjson's output `encoded` holds a NUL (its `\\u0000` escape, not an escaped backslash before
    the text "u0000")."""
    return _NUL_ESCAPE.search(encoded) is not None


# A JSON escape that may stand for unstorable text: any surrogate half, or NUL.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


def json_text_problem(body: bytes) -> str | None:
    """`text_problem` of a JSON request body, cheap for the common case: only a body with a surrogate or NUL
    escape (`\\ud83d`, `\\u0000`) is parsed again to tell a valid pair or an escaped backslash from a lone
    surrogate. A body that is not JSON is left to the parser that would refuse it."""
    if b"\\u" not in body or _SUSPECT_ESCAPE.search(body) is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return text_problem(value)


T = TypeVar("T")


def settle(future: asyncio.Future[T], result: T, exc: BaseException | None = None) -> None:
    """Give a group commit's waiter its result (or `exc`), unless it stopped waiting (cancelled) already."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
