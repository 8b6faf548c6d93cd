"""Cache misses read in batches: every key asked for while a read is pending joins the next batch, and each key is
read once however many callers wait for it (a connect storm of 5,000 clients of 100 users reads 100 rows, in a
few queries, instead of 5,000 queries that exhaust the database pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class BatchLoader(Generic[V]):
    """`load(key)` -> the value `read_many(keys)` returns for it (None when absent). Keys asked for in one loop turn
    are read together, at most `max_batch` per read; the read runs in its own task, so a cancelled caller does not
    cancel it for the others."""

    def __init__(
        self, read_many: Callable[[list[str]], Awaitable[dict[str, V]]], max_batch: int = 500
    ) -> None:
        self._read_many = read_many
        self.max_batch = max_batch
        self._pending: dict[str, asyncio.Future[V | None]] = {}
        self._queued: dict[str, None] = {}  # keys waiting for the next read to start (in order)
        self.reads = 0  # how many batch reads ran (tests, metrics)

    async def load(self, key: str) -> V | None:
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if not self._queued:
                asyncio.get_running_loop().call_soon(self._dispatch)
            self._queued[key] = None
        return await asyncio.shield(future)

    def forget(self, key: str) -> None:
        """The value of `key` changed: a load from now on reads it again instead of joining a read in flight
        (whose waiters still get what it reads). A read not started yet reads the new value anyway."""
        if key not in self._queued:
            self._pending.pop(key, None)

    def _dispatch(self) -> None:
        queued, self._queued = self._queued, {}
        waiting = {key: self._pending[key] for key in queued}
        keys = list(waiting)
        for start in range(0, len(keys), self.max_batch):
            batch = keys[start : start + self.max_batch]
            asyncio.ensure_future(self._read({key: waiting[key] for key in batch}))

    async def _read(self, waiting: dict[str, asyncio.Future[V | None]]) -> None:
        self.reads += 1
        try:
            found = await self._read_many(list(waiting))
        except BaseException as exc:
            for key, future in waiting.items():
                self._done(key, future)
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError("read cancelled")
                    )
                    future.exception()  # retrieved: the waiters re-raise it
            if not isinstance(exc, Exception):
                raise
            return
        for key, future in waiting.items():
            self._done(key, future)
            if not future.done():
                future.set_result(found.get(key))

    def _done(self, key: str, future: asyncio.Future[V | None]) -> None:
        if self._pending.get(key) is future:  # not forgotten and asked for again meanwhile
            del self._pending[key]
