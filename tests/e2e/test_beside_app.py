"""The README's "Use chatwire beside your app" for real: the example app and chatwire as separate processes,
a login through the app, the official Node socket.io-client connected with the app's token, the streamed
answer received and persisted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, requirement_missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
APP_SECRET = "shared-between-my-app-and-chatwire-" + "s" * 16
ANSWER = "Hello from your app, streamed through chatwire. "


async def wait_http(url: str, proc: asyncio.subprocess.Process, what: str) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not start")


@contextlib.asynccontextmanager
async def process(
    *argv: str, env: dict[str, str], cwd: Path = ROOT
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def read_json_line(proc: asyncio.subprocess.Process, timeout: float = 20) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        err = await proc.stderr.read() if proc.stderr else b""
        raise AssertionError(f"node driver ended: {err.decode()[-2000:]}")
    return json.loads(line)  # type: ignore[no-any-return]


async def test_readme_app_streams_to_its_user_through_chatwire(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").exists():
        requirement_missing("node or tests/node/node_modules missing (make node)")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWIRE_")}
    cw_port, app_port = free_port(), free_port()
    chatwire_env = {
        **base_env,
        "CHATWIRE_PORT": str(cw_port),
        "CHATWIRE_DATA_DIR": str(tmp_path / "data"),
        "CHATWIRE_LOG_FORMAT": "text",
        "CHATWIRE_EXTERNAL_ALGORITHMS": "HS256",
        "CHATWIRE_EXTERNAL_SECRET": APP_SECRET,
        "CHATWIRE_EXTERNAL_ISSUER": "my-app",
        "CHATWIRE_EXTERNAL_AUDIENCE": "chatwire",
    }
    created = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chatwire", "keys", "create", "--scope", "publish", "--name", "my-app"],
        env=chatwire_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = created.stdout.strip()
    assert api_key.startswith("cwk_") and "shown once" in created.stderr
    chatwire_url = f"http://127.0.0.1:{cw_port}"
    app_url = f"http://127.0.0.1:{app_port}"
    app_env = {
        **base_env,
        "CHATWIRE_URL": chatwire_url,
        "APP_TOKEN_SECRET": APP_SECRET,
        "CHATWIRE_API_KEY": api_key,
    }
    async with (
        process(sys.executable, "-m", "chatwire", "serve", env=chatwire_env, cwd=tmp_path) as chatwire,
        process(
            sys.executable, "-m", "uvicorn", "beside_app:app", "--app-dir", str(ROOT / "examples"),
            "--port", str(app_port), "--log-level", "warning", env=app_env,
        ) as my_app,
    ):  # fmt: skip
        await wait_http(f"{chatwire_url}/health", chatwire, "chatwire")
        await wait_http(f"{app_url}/docs", my_app, "example app")
        async with httpx.AsyncClient(base_url=app_url, timeout=10) as app_http:
            wrong = await app_http.post("/login", json={"username": "ada", "password": "nope"})
            assert wrong.status_code == 401
            token = (await app_http.post("/login", json={"username": "ada", "password": "lovelace"})).json()[
                "token"
            ]

            async with process(
                node, "beside_client.mjs", chatwire_url, token, env=base_env, cwd=NODE_DIR
            ) as driver:
                ready = await read_json_line(driver)
                assert ready.get("ready") is True, ready
                asked = await app_http.post(
                    "/ask", json={"question": "hi?"}, headers={"Authorization": f"Bearer {token}"}
                )
                assert asked.status_code == 200, asked.text
                chat_id, message_id = asked.json()["chat_id"], asked.json()["message_id"]
                result = await read_json_line(driver)
            assert result == {
                "done": True,
                "content": ANSWER,
                "events": len(ANSWER.split(" ")),
                "chat_id": chat_id,
                "message_id": message_id,
            }

        async with httpx.AsyncClient(
            base_url=chatwire_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as cw:
            me = (await cw.get("/api/v1/auths/")).json()
            assert (me["id"], me["name"], me["role"]) == ("ada@my-app", "Ada", "user")
            message: dict[str, Any] = {}
            for _ in range(100):
                chat = (await cw.get(f"/api/v1/chats/{chat_id}")).json()
                message = chat["chat"]["history"]["messages"].get(message_id, {})
                if message.get("done"):
                    break
                await asyncio.sleep(0.05)
            assert message["content"] == ANSWER and message["done"] is True and message["role"] == "assistant"
            assert chat["title"] == "hi?" and chat["user_id"] == "ada@my-app"
            metrics = (await cw.get("/metrics")).text
            events = len(ANSWER.split(" "))
            assert f'chatwire_events_out_total{{event="events"}} {float(events)}' in metrics
            assert (
                f'chatwire_server_api_calls_total{{outcome="ok",scope="publish"}} {float(events)}' in metrics
            )
            assert 'chatwire_connections_total{transport="websocket"} 1.0' in metrics
            forged = await cw.get(
                "/api/v1/auths/", headers={"Authorization": "Bearer " + token[:-4] + "AAAA"}
            )
            assert forged.status_code == 401
