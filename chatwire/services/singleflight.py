"""Cache misses read in batches: every key asked for while a read is pending joins the next batch, and each key is
read once however many callers wait for it (a connect storm of 5,000 clients of 100 users reads 100 rows, in a
few queries, instead of 5,000 queries that exhaust the database pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

A = TypeVar("A")
V = TypeVar("V")


class KeyedBatcher(Generic[A, V]):
    """`submit(key, arg)` -> the value `run_many({key: arg, ...})` returns for `key` (None when absent). Keys
    submitted in one loop turn are handled together, at most `max_batch` per call; a key already submitted joins
    that call (the first `arg` wins); the call runs in its own task, so a cancelled caller does not cancel it for
    the others."""

    def __init__(
        self, run_many: Callable[[dict[str, A]], Awaitable[dict[str, V]]], max_batch: int = 500
    ) -> None:
        self._run_many = run_many
        self.max_batch = max_batch
        self._pending: dict[str, asyncio.Future[V | None]] = {}
        self._queued: dict[str, A] = {}  # keys waiting for the next call to start (in order), with their args
        self.reads = 0  # how many batch calls ran (tests, metrics)

    async def submit(self, key: str, arg: A) -> V | None:
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if not self._queued:
                asyncio.get_running_loop().call_soon(self._dispatch)
            self._queued[key] = arg
        return await asyncio.shield(future)

    def forget(self, key: str) -> None:
        """The value of `key` changed: a submit from now on calls again instead of joining a call in flight
        (whose waiters still get what it returns). A call not started yet sees the new value anyway."""
        if key not in self._queued:
            self._pending.pop(key, None)

    def _dispatch(self) -> None:
        queued, self._queued = self._queued, {}
        keys = list(queued)
        for start in range(0, len(keys), self.max_batch):
            batch = keys[start : start + self.max_batch]
            asyncio.ensure_future(
                self._call({key: queued[key] for key in batch}, {k: self._pending[k] for k in batch})
            )

    async def _call(self, args: dict[str, A], waiting: dict[str, asyncio.Future[V | None]]) -> None:
        self.reads += 1
        try:
            found = await self._run_many(args)
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


class BatchLoader(KeyedBatcher[None, V]):
    """`load(key)` -> the value `read_many(keys)` returns for it (None when absent). Keys asked for in one loop turn
    are read together, at most `max_batch` per read, each once however many callers wait for it."""

    def __init__(
        self, read_many: Callable[[list[str]], Awaitable[dict[str, V]]], max_batch: int = 500
    ) -> None:
        async def run_many(args: dict[str, None]) -> dict[str, V]:
            return await read_many(list(args))

        super().__init__(run_many, max_batch)

    async def load(self, key: str) -> V | None:
        return await self.submit(key, None)
