"""The webhook outbox on SQLite and PostgreSQL: a row is claimed by one dispatcher at a time, a lease that runs
out makes it claimable again, only the lease holder records an outcome; and two dispatchers on two database
connections (two processes of a fleet) deliver each row once to a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

import pytest

from chatwire.db.engine import Database
from chatwire.db.repos.webhooks import DELIVERED, PENDING, WebhookRepo
from chatwire.services.webhooks import DispatchSettings, WebhookDispatcher, now_ms
from tests.conftest import postgres_database
from tests.webhook_receiver import run_receiver


async def endpoint(repo: WebhookRepo, url: str = "http://127.0.0.1:9/x") -> str:
    row = await repo.create_endpoint(
        url=url, secret="whsec_" + "A" * 44, events=["*"], description="", key_id=None, now_ms=now_ms()
    )
    return row.id


async def test_one_claim_at_a_time_and_an_expired_lease_is_claimable(db: Database) -> None:
    repo = WebhookRepo(db)
    ep = await endpoint(repo)
    await repo.enqueue([("d1", ep, "user.online", "{}")], now_ms())
    now = now_ms()
    [(row_id, row_endpoint)] = await repo.due(now, 10, ())
    assert (row_id, row_endpoint) == ("d1", ep)
    first = await repo.claim("d1", "a", now, 1000)
    assert first is not None and first.lease_owner == "a"
    assert await repo.claim("d1", "b", now, 1000) is None
    assert await repo.due(now, 10, ()) == []
    later = now + 1001  # a's lease ran out (a died)
    second = await repo.claim("d1", "b", later, 1000)
    assert second is not None and second.lease_owner == "b"
    # a's late outcome is not recorded: the lease is b's now
    assert not await repo.finish(
        first, "a", status=DELIVERED, http_status=200, error=None, next_attempt_at=later, now_ms=later
    )
    assert await repo.finish(
        second,
        "b",
        status=PENDING,
        http_status=500,
        error="HTTP 500",
        next_attempt_at=later + 50,
        now_ms=later,
    )
    row = await repo.get_delivery("d1")
    assert row is not None and row.attempts == 1 and row.status == PENDING and row.lease_owner is None
    assert await repo.due(later, 10, ()) == []  # backing off
    assert [r for r, _ in await repo.due(later + 50, 10, ())] == ["d1"]
    assert await repo.due(later + 50, 10, [ep]) == []  # a saturated endpoint is skipped
    stored = await repo.get_endpoint(ep)
    assert stored is not None and stored.consecutive_failures == 1 and stored.last_status == 500
    # retention: only finished rows older than the bound go
    await repo.enqueue([("d2", ep, "user.online", "{}")], now_ms())
    third = await repo.claim("d2", "b", now_ms(), 1000)
    assert third is not None
    assert await repo.finish(
        third, "b", status=DELIVERED, http_status=200, error=None, next_attempt_at=now_ms(), now_ms=now_ms()
    )
    assert await repo.prune(now_ms() + 10_000) == 1
    assert await repo.get_delivery("d2") is None and await repo.get_delivery("d1") is not None


async def test_rows_of_an_inactive_endpoint_wait(db: Database) -> None:
    repo = WebhookRepo(db)
    ep = await endpoint(repo)
    await repo.enqueue([("d1", ep, "user.online", "{}")], now_ms())
    await repo.update_endpoint(ep, {"active": False}, now_ms())
    assert await repo.due(now_ms() + 1, 10, ()) == []
    await repo.update_endpoint(ep, {"active": True}, now_ms())
    assert len(await repo.due(now_ms() + 1, 10, ())) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_two_dispatchers_share_the_outbox_and_deliver_each_row_once(
    database: str, tmp_path: Path
) -> None:
    async def run(url: str) -> None:
        first, second = Database(url), Database(url)
        await first.migrate()
        repo_a, repo_b = WebhookRepo(first), WebhookRepo(second)
        async with run_receiver() as receiver:
            ep = await endpoint(repo_a, receiver.endpoint())
            ids = [f"d{i}" for i in range(60)]
            await repo_a.enqueue([(i, ep, "user.online", '{"n": 1}') for i in ids], now_ms())
            settings = DispatchSettings(timeout=5, concurrency=4, poll_interval=0.05, batch=10)
            a = WebhookDispatcher(repo_a, "host-a", settings)
            b = WebhookDispatcher(repo_b, "host-b", settings)
            await a.start()
            await b.start()
            try:
                await receiver.wait(lambda r: len(r.delivered()) >= len(ids), timeout=30)
                await asyncio.sleep(0.3)  # anything sent twice would show up now
            finally:
                await a.stop()
                await b.stop()
            got = [c.headers["webhook-id"] for c in receiver.delivered()]
            assert sorted(got) == sorted(ids)
            assert {c.headers.get("user-agent") for c in receiver.calls} == {"chatwire-webhooks/1"}
            rows = await repo_a.deliveries(ep, DELIVERED, 100)
            assert len(rows) == len(ids)
            stored = await repo_a.get_endpoint(ep)
            assert stored is not None and stored.delivered_count == len(ids)
        await first.close()
        await second.close()

    if database == "sqlite":
        await run(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    else:
        async with postgres_database() as url:
            await run(url)


async def test_the_next_claimable_moment_is_a_backoff_or_a_lease_end(db: Database) -> None:
    repo = WebhookRepo(db)
    assert await repo.next_claimable_at() is None  # nothing pending
    ep = await endpoint(repo)
    now = now_ms()
    await repo.enqueue([("d1", ep, "user.online", "{}")], now)
    assert await repo.next_claimable_at() == now
    row = await repo.claim("d1", "a", now, 5000)  # leased by another dispatcher
    assert row is not None
    assert await repo.next_claimable_at() == now + 5001
    assert await repo.finish(
        row, "a", status=PENDING, http_status=500, error="HTTP 500", next_attempt_at=now + 9000, now_ms=now
    )
    assert await repo.next_claimable_at() == now + 9000  # backing off
    await repo.update_endpoint(ep, {"active": False}, now)
    assert await repo.next_claimable_at() is None  # an inactive endpoint's rows wait for it


class CountingRepo(WebhookRepo):
    """The real repository, counting the dispatcher's outbox reads."""

    polls = 0

    async def due(self, now_ms: int, limit: int, skip_endpoints: Collection[str]) -> list[tuple[str, str]]:
        self.polls += 1
        return await super().due(now_ms, limit, skip_endpoints)


async def test_an_idle_dispatcher_sleeps_until_the_next_due_row(db: Database) -> None:
    """With nothing due it does not read the outbox every poll interval, yet a retry is sent when it is due, and a
    new row (its wake-up) at once."""
    repo = CountingRepo(db)
    async with run_receiver() as receiver:
        ep = await endpoint(repo, receiver.endpoint())
        settings = DispatchSettings(timeout=5, poll_interval=0.02, idle_poll_interval=30, batch=10)
        dispatcher = WebhookDispatcher(repo, "host-a", settings)
        await dispatcher.start()
        try:
            await asyncio.sleep(0.5)
            assert repo.polls <= 2  # 25 at the poll interval
            await repo.enqueue([("d1", ep, "user.online", "{}")], now_ms() + 300)  # due in 0.3 s, no wake
            dispatcher.wake()  # as WebhookService does after enqueueing
            await receiver.wait(lambda r: len(r.delivered()) >= 1, timeout=5)
            await repo.enqueue([("d2", ep, "user.online", "{}")], now_ms())
            dispatcher.wake()
            await receiver.wait(lambda r: len(r.delivered()) >= 2, timeout=1)
        finally:
            await dispatcher.stop()
    assert [c.headers["webhook-id"] for c in receiver.delivered()] == ["d1", "d2"]
