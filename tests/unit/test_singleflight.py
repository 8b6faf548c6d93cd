"""BatchLoader: concurrent misses for one key are read once, in one batch; read errors reach every waiter."""

import asyncio

from chatwire.services.singleflight import BatchLoader


async def test_concurrent_loads_read_each_key_once_in_one_batch() -> None:
    batches: list[list[str]] = []

    async def read_many(keys: list[str]) -> dict[str, str]:
        batches.append(keys)
        await asyncio.sleep(0)
        return {k: k.upper() for k in keys if k != "missing"}

    loader: BatchLoader[str] = BatchLoader(read_many)
    got = await asyncio.gather(*(loader.load(k) for k in ["a", "b", "a", "missing", "a"]))
    assert got == ["A", "B", "A", None, "A"]
    assert batches == [["a", "b", "missing"]]


async def test_a_failed_read_fails_every_waiter_and_the_next_load_reads_again() -> None:
    calls = 0

    async def read_many(keys: list[str]) -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database down")
        return {k: k for k in keys}

    loader: BatchLoader[str] = BatchLoader(read_many)
    results = await asyncio.gather(loader.load("x"), loader.load("x"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert await loader.load("x") == "x"
    assert calls == 2


async def test_a_forgotten_key_is_read_again_instead_of_joining_the_read_in_flight() -> None:
    value = "old"
    started = asyncio.Event()
    release = asyncio.Event()

    async def read_many(keys: list[str]) -> dict[str, str]:
        seen = value
        started.set()
        await release.wait()
        return {k: seen for k in keys}

    loader: BatchLoader[str] = BatchLoader(read_many)
    first = asyncio.ensure_future(loader.load("k"))
    await started.wait()
    value = "new"
    loader.forget("k")  # changed while the first read is in flight
    started.clear()
    second = asyncio.ensure_future(loader.load("k"))
    await started.wait()
    release.set()
    assert await first == "old"
    assert await second == "new"
    assert loader.reads == 2
