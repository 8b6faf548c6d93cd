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
from tests.pgproc import PostgresProcess
from tests.process import serve_process

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
