"""`chatwire demo` and `chatwire tail` as a user runs them: real processes against a running server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from chatwire.config import Settings
from tests.conftest import RunningServer, run_server


@pytest.fixture
async def fast(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings.model_copy(update={"demo_tokens_per_second": 0.0})) as running:
        yield running


async def run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatwire",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_demo_command_streams_and_checks_storage(fast: RunningServer) -> None:
    proc = await run_cli("demo", "--url", fast.url, "--yes", "--prompt", "please confirm, in 40 tokens")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("You asked about: please confirm, in 40 tokens.")
    text = err.decode()
    assert "Confirmed" in text and "source: chatwire README" in text
    assert "40 tokens in" in text and "identical to the stream" in text


async def test_tail_prints_one_line_per_event(fast: RunningServer) -> None:
    user = await fast.signup("Ada")
    async with fast.http(user["token"]) as http:
        chat_id = (await http.post("/api/v1/chats/new", json={"chat": {"title": "t"}})).json()["id"]
    proc = await run_cli("tail", "--url", fast.url, "--token", user["token"], "--no-colour", "--seconds", "4")
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 20)
    assert b"connected as Ada" in line
    async with fast.http(user["token"]) as http:
        for event in (
            {"type": "status", "data": {"description": "step"}},
            {"type": "message", "data": {"content": "hello"}},
        ):
            r = await http.post(f"/api/v1/chats/{chat_id}/messages/m1/event", json=event)
            assert r.status_code == 200
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert f"chat {chat_id[:8]} msg m1 status" in lines[0] and '"description":"step"' in lines[0]
    assert lines[1].endswith('message {"content":"hello"}')
