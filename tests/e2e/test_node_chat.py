"""The official socket.io-client, used as Open WebUI's tab does, follows a demo generation and answers its
confirmation call through the ack callback; what it rebuilt equals what the server stored."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, requirement_missing, run_server

pytestmark = pytest.mark.e2e
NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture
async def fast(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"demo_tokens_per_second": 0.0})) as running:
        yield running


async def read_json(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), 30)
    assert line, "node client ended without output"
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize("answer", [True, False])
async def test_official_client_follows_generation_and_answers_confirmation(
    fast: RunningServer, answer: bool
) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").exists():
        requirement_missing("node or socket.io-client missing (make test installs it)")
    user = await fast.signup("Ada")
    async with fast.http(user["token"]) as http:
        chat_id = (await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})).json()["id"]
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "chat_client.mjs"),
        fast.url,
        user["token"],
        "a1",
        "true" if answer else "false",
        stdout=asyncio.subprocess.PIPE,
        cwd=NODE_DIR,
    )
    assert proc.stdout is not None
    try:
        ready = await read_json(proc.stdout)
        assert ready.get("ready"), ready
        async with fast.http(user["token"]) as http:
            r = await http.post(
                "/api/chat/completions",
                json={
                    "model": "demo",
                    "messages": [{"role": "user", "content": "confirm first, then 50 tokens"}],
                    "chat_id": chat_id,
                    "id": "a1",
                    "session_id": ready["sid"],
                    "stream": True,
                },
            )
            assert r.status_code == 200, r.text
        result = await read_json(proc.stdout)
        assert result.get("done"), result
        assert result["asked"] == ["Look up a source?"]
        await fast.services.writer.flush()
        async with fast.http(user["token"]) as http:
            stored = (await http.get(f"/api/v1/chats/{chat_id}")).json()["chat"]["history"]["messages"]["a1"]
        assert result["content"] == stored["content"]
        assert result["statuses"] == [s["description"] for s in stored["statusHistory"]]
        assert result["sources"] == stored.get("sources", [])
        assert bool(result["sources"]) is answer
        assert len(stored["content"].split()) == (50 if answer else 10)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
