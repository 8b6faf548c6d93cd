"""A real server process killed with SIGKILL mid-generation: what is stored is a prefix of what was emitted."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest

from chatwire.client import ChatwireClient, ChatwireHTTP
from chatwire.services.models import demo_answer
from tests.conftest import free_port
from tests.health import wait_healthy

pytestmark = pytest.mark.e2e


async def test_sigkill_mid_generation_leaves_a_prefix(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(data_dir),
        "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
        "CHATWIRE_DEMO_TOKENS_PER_SECOND": "500",
        "CHATWIRE_PERSIST_FLUSH_INTERVAL": "0.05",
        "CHATWIRE_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatwire",
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client: ChatwireClient | None = None
    try:
        await wait_healthy(url, lambda: proc.returncode)
        async with ChatwireHTTP(url) as http:
            user = await http.signup("Ada", "ada@example.com", "pw-secret-1")
            chat_id = (await http.new_chat("killed"))["id"]
            client = await ChatwireClient(url, user["token"], reconnection=False).connect()
            chat = client.track(chat_id)
            prompt = "write 20000 tokens please"
            await http.complete(
                "demo", [{"role": "user", "content": prompt}], chat_id=chat_id, message_id="a1"
            )
        # Kill once the answer is well under way (and several flushes have happened).
        await client.wait_for(lambda: len(chat.messages.get("a1", {}).get("content", "").split()) > 400, 30)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        received = chat.messages["a1"]["content"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
        if client is not None:
            await client.close()
    full = "".join(demo_answer(prompt))
    with sqlite3.connect(data_dir / "chatwire.db") as conn:
        row = conn.execute("SELECT content, done FROM chat_messages WHERE id = 'a1'").fetchone()
    assert row is not None, "nothing stored before the kill"
    stored, done = row
    assert stored, "no delta was stored before the kill"
    assert not done
    # Both the tab and the database hold a prefix of the one emitted stream, which was cut short.
    assert full.startswith(received) and len(received) < len(full)
    assert full.startswith(stored) and len(stored) < len(full)
