"""The bus side of the fleet Broker (fleet_broker.py, whose module doc has the routing design): the bus message
encoding with references for large operations, fleet-wide requests and one-way notices."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from chatwire.backends.blobs import BlobStore
from chatwire.backends.bus import Bus
from chatwire.errors import ChatwireError, ErrorCode

log = logging.getLogger("chatwire.fleet")

# How long a large operation's bytes stay in the BlobStore: far longer than any receiver needs to fetch them.
BLOB_TTL_SECONDS = 60.0

# What a session that may have missed events is told (as a slow reader is): refetch your chats.
RELOAD_EVENT: dict[str, Any] = {
    "chat_id": None,
    "message_id": None,
    "data": {"type": "chat:reload", "data": {}},
}


def is_room_name(room: str) -> bool:
    """Naming rule: a name containing ':' is a room (`user:`, `channel:`, `note:`, `doc_note:`), else a sid."""
    return ":" in room


def is_rostered(room: object) -> bool:
    """Rooms whose members are listed fleet-wide: collaborative documents (`ydoc:document:state.sessions`)."""
    return isinstance(room, str) and room.startswith("doc_")


class FleetWire:
    """Mixin: the bus side of a fleet router. `init_wire` sets its state; the router calls `handle_common` for
    the message kinds handled here and `resolve` for blob references."""

    bus: Bus
    host_id: str

    def init_wire(self, bus: Bus, host_id: str, max_payload_bytes: int, call_timeout: float) -> None:
        self.bus = bus
        self.host_id = host_id
        self.max_payload_bytes = max_payload_bytes
        self.call_timeout = call_timeout
        self._call_ids = itertools.count()
        self._tasks: set[asyncio.Future[Any]] = set()
        self.received = 0  # messages decoded from the bus (for benchmarks and metrics)
        # Fleet-wide requests (e.g. stop a generation wherever it runs): kind -> local handler, and our waiters.
        self.request_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[bool]]] = {}
        self._requests: dict[str, tuple[asyncio.Future[bool], list[int]]] = {}
        # Fleet-wide membership of document rooms (set by the fleet set-up; see backends/roster_redis.py).
        self.roster: Any = None
        # Where operations over the fleet limit travel (set by the fleet set-up; None: they are refused).
        self.blobs: BlobStore | None = None
        self.large_sent = 0  # operations sent by reference (metrics, tests)
        self.large_received = 0
        # One-way fleet notices (e.g. a token revoked): kind -> local handler; and what to run after a bus gap.
        self.notice_handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.gap_hooks: list[Callable[[], None]] = []

    @staticmethod
    def _dumps(message: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise ChatwireError(
                ErrorCode.INVALID_PAYLOAD, f"event data cannot cross processes: {exc}"
            ) from exc

    async def _pack(self, message: dict[str, Any]) -> bytes:
        """The bus message for an operation: itself, or, over the fleet limit, a reference to its bytes."""
        raw = self._dumps(message)
        if len(raw) <= self.max_payload_bytes or self.blobs is None:
            return self._encode(message) if len(raw) > self.max_payload_bytes else raw
        key = await self.blobs.put(raw, BLOB_TTL_SECONDS)
        self.large_sent += 1
        return self._dumps({"t": "blob", "h": self.host_id, "k": key, "n": len(raw)})

    def _encode(self, message: dict[str, Any]) -> bytes:
        raw = self._dumps(message)
        if len(raw) > self.max_payload_bytes:
            raise ChatwireError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"event of {len(raw)} bytes is over the fleet limit of {self.max_payload_bytes} bytes",
            )
        return raw

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        """A background step (a room left, a call answered) that failed is logged here, once, rather than as an
        unretrieved task exception when the loop closes; the session it served is gone either way."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("fleet background step failed", extra={"error": repr(exc)})

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def resolve(self, topic: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A `blob` reference read back from the BlobStore (None when it expired); any other message as is."""
        if msg.get("t") != "blob":
            return msg
        raw = await self.blobs.get(msg["k"]) if self.blobs is not None else None
        if raw is None:
            log.warning(
                "large fleet message expired before delivery", extra={"topic": topic, "bytes": msg.get("n")}
            )
            return None
        self.large_received += 1
        resolved: dict[str, Any] = orjson.loads(raw)
        return resolved

    def handle_common(self, msg: dict[str, Any]) -> bool:
        """Requests, their answers and notices; False for a kind the router handles itself."""
        kind = msg.get("t")
        if kind == "req":
            self._spawn(self._answer_request(msg))
        elif kind == "res":
            self._on_response(msg)
        elif kind == "note":
            notice = self.notice_handlers.get(msg.get("k", ""))
            if notice is not None:
                try:
                    notice(msg.get("p") or {})
                except Exception:
                    log.exception("fleet notice failed", extra={"kind": msg.get("k")})
        else:
            return False
        return True

    async def notify_others(self, kind: str, payload: dict[str, Any]) -> None:
        """Tell every other process `kind`; returns once the notice is on the bus (their handlers run on receipt)."""
        await self.bus.publish("all", self._encode({"t": "note", "k": kind, "p": payload, "h": self.host_id}))

    async def ask_others(self, kind: str, payload: dict[str, Any], timeout: float = 5.0) -> bool:
        """Ask every other process to handle `kind`; True as soon as one says it did, False when none did."""
        rid = f"{self.host_id}:{next(self._call_ids)}"
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pending = [0]
        self._requests[rid] = (future, pending)
        try:
            raw = self._encode(
                {"t": "req", "k": kind, "id": rid, "reply": self.host_id, "p": payload, "h": self.host_id}
            )
            receivers = await self.bus.publish("all", raw)
            pending[0] = receivers - 1  # every process listens on "all", this one included
            if pending[0] <= 0:
                return False
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._requests.pop(rid, None)

    async def _answer_request(self, msg: dict[str, Any]) -> None:
        handler = self.request_handlers.get(msg.get("k", ""))
        ok = False
        if handler is not None:
            try:
                ok = bool(await handler(msg.get("p") or {}))
            except Exception:
                log.exception("fleet request failed", extra={"kind": msg.get("k")})
        with contextlib.suppress(Exception):
            await self.bus.publish(
                f"host:{msg['reply']}", self._encode({"t": "res", "id": msg["id"], "ok": ok})
            )

    def _on_response(self, msg: dict[str, Any]) -> None:
        waiting = self._requests.get(msg.get("id", ""))
        if waiting is None:
            return
        future, pending = waiting
        pending[0] -= 1
        if future.done():
            return
        if msg.get("ok"):
            future.set_result(True)
        elif pending[0] <= 0:
            future.set_result(False)
