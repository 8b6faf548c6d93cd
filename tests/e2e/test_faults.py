"""Faults injected into real processes mid-generation: PostgreSQL stopped and restarted, Redis restarted.

Each test streams a demo generation to a connected client and breaks a dependency in the middle. What must hold:
the browser keeps receiving events, and what is stored is what was emitted (persistence catches up), never a
silent mismatch.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chatwire.client import ChatwireClient, ChatwireHTTP
from chatwire.services.models import demo_answer
from tests.conftest import postgres_database
from tests.pgproc import PostgresProcess
from tests.process import serve_process
from tests.procs import RedisProcess, ServerProcess

pytestmark = pytest.mark.e2e


async def stored_message(db_url: str, message_id: str) -> tuple[str, bool] | None:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT content, done FROM chat_messages WHERE id = :id"), {"id": message_id}
                )
            ).first()
            return None if row is None else (row[0], bool(row[1]))
    finally:
        await engine.dispose()


async def ready_status(http: httpx.AsyncClient) -> int:
    try:
        return (await http.get("/health/ready", timeout=5)).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def private_postgres() -> PostgresProcess:
    try:
        pg = PostgresProcess().init().start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no private PostgreSQL: {exc}")
    try:
        yield pg  # type: ignore[misc]
    finally:
        pg.destroy()


async def test_postgres_restart_mid_generation_persistence_catches_up(
    tmp_path: Path, private_postgres: PostgresProcess
) -> None:
    pg = private_postgres
    env = {
        "CHATWIRE_DATABASE_URL": pg.url,
        "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
        "CHATWIRE_DEMO_TOKENS_PER_SECOND": "250",
        "CHATWIRE_PERSIST_FLUSH_INTERVAL": "0.05",
        "CHATWIRE_LOG_FORMAT": "json",
    }
    prompt = "write 2000 tokens about an outage"
    full = "".join(demo_answer(prompt))
    async with serve_process(tmp_path, env) as server:
        async with ChatwireHTTP(server.url) as rest, server.http() as probe:
            user = await rest.signup("Ada", "ada@example.com", "pw-secret-1")
            chat_id = (await rest.new_chat("outage"))["id"]
            async with ChatwireClient(server.url, user["token"], reconnection=False) as client:
                chat = client.track(chat_id)

                def received() -> str:
                    return str(chat.messages.get("a1", {}).get("content", ""))

                await rest.complete(
                    "demo", [{"role": "user", "content": prompt}], chat_id=chat_id, message_id="a1"
                )
                await client.wait_for(lambda: len(received().split()) > 150, 30)
                pg.stop()
                at_stop = len(received())
                # The database is down: readiness says so, and tokens keep flowing to the browser.
                assert await ready_status(probe) == 503
                await client.wait_for(lambda: len(received()) > at_stop + 500, 30)
                await asyncio.sleep(1.5)  # several failed flushes and retries
                assert not chat.messages["a1"].get("done"), "the outage should fall mid-generation"
                await asyncio.to_thread(pg.start)
                message = await client.wait_done(chat_id, "a1", 60)
                assert message["content"] == full, "the browser missed tokens during the outage"
                for _ in range(100):
                    if await ready_status(probe) == 200:
                        break
                    await asyncio.sleep(0.1)
                assert await ready_status(probe) == 200
        # Persistence catches up: the stored message is exactly what was emitted, and done.
        stored = None
        for _ in range(150):
            stored = await stored_message(pg.url, "a1")
            if stored is not None and stored[1]:
                break
            await asyncio.sleep(0.1)
        assert stored == (full, True)
        log = server.log()
    assert "message write failed; retrying" in log, "the outage should have been seen and logged"


async def test_redis_restart_mid_generation_in_fleet(tmp_path: Path) -> None:
    """Two processes share Redis; the generation runs on p1, the browser is on p0. Redis restarts mid-stream."""
    redis = RedisProcess().start()
    prompt = "write 2500 tokens about a restart"
    full = "".join(demo_answer(prompt))
    try:
        async with postgres_database() as db_url:
            env = {
                "CHATWIRE_REDIS_URL": redis.url,
                "CHATWIRE_REDIS_PREFIX": f"cwfault:{uuid.uuid4().hex[:8]}:",
                "CHATWIRE_DATABASE_URL": db_url,
                "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
                "CHATWIRE_DEMO_TOKENS_PER_SECOND": "250",
                "CHATWIRE_PRESENCE_TTL_SECONDS": "2",
            }
            servers = [ServerProcess(tmp_path / f"p{i}", env, name=f"p{i}") for i in range(2)]
            try:
                await servers[0].start()  # migrates the shared database
                await servers[1].start()
                # Quiet for longer than the listener's idle ping (5 s): the idle fleet must stay subscribed.
                await asyncio.sleep(6)
                for s in servers:
                    assert "redis bus resubscribed" not in s.log(), "an idle process lost its subscription"
                async with ChatwireHTTP(servers[1].url) as rest, servers[0].http() as probe:
                    user = await rest.signup("Ada", "ada@example.com", "pw-secret-1")
                    chat_id = (await rest.new_chat("restart"))["id"]
                    async with ChatwireClient(servers[0].url, user["token"]) as client:
                        chat = client.track(chat_id)
                        reloads: list[int] = []
                        client.on_event(lambda e: reloads.append(1) if e.type == "chat:reload" else None)

                        def received() -> str:
                            return str(chat.messages.get("a1", {}).get("content", ""))

                        await rest.complete(
                            "demo", [{"role": "user", "content": prompt}], chat_id=chat_id, message_id="a1"
                        )
                        await client.wait_for(lambda: len(received().split()) > 150, 30)
                        assert not reloads, "an idle fleet lost its subscription"
                        redis.shutdown()
                        for _ in range(100):
                            if await ready_status(probe) == 503:
                                break
                            await asyncio.sleep(0.1)
                        assert await ready_status(probe) == 503
                        redis.start_again()
                        # After resubscription the session is told it may have missed events...
                        await client.wait_for(lambda: bool(reloads), 30)
                        at_reload = len(received())
                        # ...and the stream keeps flowing to it until the end.
                        message = await client.wait_done(chat_id, "a1", 60)
                        assert len(message["content"]) > at_reload
                        assert full.endswith(message["content"][at_reload:])
                        # Reloading, as told, gives exactly what was emitted.
                        stored = (await rest.get_chat(chat_id))["chat"]["history"]["messages"]["a1"]
                        assert stored["content"] == full
                        for _ in range(100):
                            if await ready_status(probe) == 200:
                                break
                            await asyncio.sleep(0.1)
                        assert await ready_status(probe) == 200
                assert "bus gap: local user rooms told to reload" in servers[0].log()
            finally:
                for s in servers:
                    s.stop()
    finally:
        redis.stop()


async def test_postgres_down_at_shutdown_the_loss_is_logged_and_the_row_is_a_prefix(
    tmp_path: Path, private_postgres: PostgresProcess
) -> None:
    """An outage that outlasts the process: what could not be written is reported, what is stored is a prefix."""
    pg = private_postgres
    env = {
        "CHATWIRE_DATABASE_URL": pg.url,
        "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
        "CHATWIRE_DEMO_TOKENS_PER_SECOND": "400",
        "CHATWIRE_PERSIST_FLUSH_INTERVAL": "0.05",
    }
    prompt = "write 1500 tokens about a long outage"
    full = "".join(demo_answer(prompt))
    server = ServerProcess(tmp_path / "srv", env)
    await server.start()
    try:
        async with ChatwireHTTP(server.url) as rest:
            user = await rest.signup("Ada", "ada@example.com", "pw-secret-1")
            chat_id = (await rest.new_chat("long outage"))["id"]
            async with ChatwireClient(server.url, user["token"], reconnection=False) as client:
                client.track(chat_id)
                await rest.complete(
                    "demo", [{"role": "user", "content": prompt}], chat_id=chat_id, message_id="a1"
                )
                for _ in range(300):  # some of the answer is stored before the outage
                    row = await stored_message(pg.url, "a1")
                    if row is not None and row[0]:
                        break
                    await asyncio.sleep(0.02)
                pg.stop()
                message = await client.wait_done(chat_id, "a1", 60)
                assert message["content"] == full  # the browser got everything
        server.stop()  # SIGTERM while the database is still down
    finally:
        server.kill()
    log = server.log_path.read_text(errors="replace")
    assert "shutdown flush timed out" in log, log[-3000:]
    await asyncio.to_thread(pg.start)
    stored = await stored_message(pg.url, "a1")
    assert stored is not None
    content, done = stored
    assert content and full.startswith(content) and len(content) < len(full) and not done
