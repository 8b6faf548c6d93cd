"""The connect path's caches on their own: one table read for a burst, failures surface and are retried, an
untrusted set asks the table, expired entries go, a row read before a change is never stored."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatwire.db.models import User
from chatwire.services.auth_cache import RevocationSet, TokenCache, UserCache


class Table:
    """A revoked-token table in memory, counting its reads."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.loads = 0
        self.checks = 0
        self.fail = False

    async def load(self) -> list[tuple[str, int]]:
        self.loads += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise OSError("database away")
        return list(self.rows.items())

    async def check(self, jti: str) -> bool:
        self.checks += 1
        return jti in self.rows


async def test_a_burst_of_checks_reads_the_table_once() -> None:
    table = Table()
    table.rows["gone"] = int(time.time()) + 60
    revoked = RevocationSet(table.load, table.check)
    answers = await asyncio.gather(*(revoked.is_revoked(j) for j in ["gone", "ok"] * 50))
    assert answers == [True, False] * 50
    assert table.loads == 1 and table.checks == 0
    assert await revoked.is_revoked("ok") is False and table.loads == 1


async def test_a_failed_load_is_raised_and_retried() -> None:
    table = Table()
    table.fail = True
    revoked = RevocationSet(table.load, table.check)
    results = await asyncio.gather(*(revoked.is_revoked("x") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    table.fail = False
    table.rows["x"] = int(time.time()) + 60
    assert await revoked.is_revoked("x") is True


async def test_untrusted_set_asks_the_table_and_invalidate_rereads() -> None:
    table = Table()
    revoked = RevocationSet(table.load, table.check)
    assert await revoked.is_revoked("a") is False
    table.rows["a"] = int(time.time()) + 60  # revoked elsewhere, notice lost
    assert await revoked.is_revoked("a") is False  # the set cannot know
    revoked.trusted = lambda: False
    assert await revoked.is_revoked("a") is True and table.checks == 1
    revoked.trusted = lambda: True
    revoked.invalidate()
    assert await revoked.is_revoked("a") is True and table.loads == 2


async def test_reload_keeps_revocations_added_meanwhile_and_drops_expired() -> None:
    table = Table()
    now = int(time.time())
    table.rows["old"] = now - 10
    revoked = RevocationSet(table.load, table.check)
    assert await revoked.is_revoked("x") is False
    revoked.add("fresh", now + 60)  # not in the table's snapshot yet
    revoked.invalidate()
    assert await revoked.is_revoked("old") is False
    assert await revoked.is_revoked("fresh") is True
    assert len(revoked) == 1


def test_token_cache_bounds_and_expiry() -> None:
    cache = TokenCache(max_entries=2)
    later = int(time.time()) + 60
    for name in ("a", "b", "c"):
        cache.put(name, {"id": name, "exp": later})
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.put("d", {"id": "d", "exp": int(time.time()) - 1})
    assert cache.get("d") is None


def _user(role: str) -> User:
    return User(id="u1", name="U", email="u@example.com", role=role, password_hash=None)


def test_user_cache_never_stores_a_row_read_before_a_change() -> None:
    cache = UserCache(ttl=30)
    generation = cache.generation("u1")
    cache.forget("u1")  # a change lands while the read is in flight
    cache.put("u1", _user("user"), generation)
    assert cache.get("u1") is None
    cache.put("u1", _user("pending"), cache.generation("u1"))
    cached = cache.get("u1")
    assert cached is not None and cached.role == "pending"


def test_user_cache_ttl() -> None:
    cache = UserCache(ttl=0.05)
    cache.put("u1", _user("user"), cache.generation("u1"))
    assert cache.get("u1") is not None
    time.sleep(0.06)
    assert cache.get("u1") is None


@pytest.mark.parametrize("ttl", [0.0])
def test_user_cache_off(ttl: float) -> None:
    cache = UserCache(ttl=ttl)
    cache.put("u1", _user("user"), 0)
    assert cache.get("u1") is None


async def test_a_read_overtaken_by_a_gap_does_not_answer() -> None:
    """The bus lost messages while the table was being read: that read may predate them, so it is read again."""
    table = Table()
    revoked = RevocationSet(table.load, table.check)
    first = asyncio.ensure_future(revoked.is_revoked("late"))
    await asyncio.sleep(0.001)  # the first read is in flight
    table.rows["late"] = int(time.time()) + 60  # committed during the read, its notice lost in the gap
    revoked.invalidate()
    assert await first is True
    assert table.loads == 2
