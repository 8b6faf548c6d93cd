"""Real chatwire server processes for end-to-end tests: `python -m chatwire serve` on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.health import wait_healthy


@dataclass
class ServerProcess:
    """A running `chatwire serve`; its log (stderr, JSON lines) goes to `log_path`."""

    url: str
    port: int
    data_dir: Path
    log_path: Path
    proc: asyncio.subprocess.Process

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def signup(self, name: str, password: str = "pw-" + "x" * 8) -> dict[str, Any]:
        async with self.http() as client:
            r = await client.post(
                "/api/v1/auths/signup",
                json={"name": name, "email": f"{name.lower()}@example.com", "password": password},
            )
            r.raise_for_status()
            return r.json()  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def serve_process(
    tmp_path: Path, env: dict[str, str] | None = None, *, startup_timeout: float = 30
) -> AsyncIterator[ServerProcess]:
    """Start `python -m chatwire serve`, wait until /health answers, stop it (SIGTERM) at the end."""
    port = free_port()
    data_dir = tmp_path / f"server-{port}"
    data_dir.mkdir(parents=True)
    log_path = data_dir / "server.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHATWIRE_")},
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_HOST": "127.0.0.1",
        "CHATWIRE_DATA_DIR": str(data_dir),
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatwire",
            "serve",
            env=full_env,
            stdout=log_file,
            stderr=log_file,
            cwd=data_dir,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, data_dir, log_path, proc)
    try:
        await wait_healthy(server.url, lambda: proc.returncode, timeout=startup_timeout, log=server.log)
        yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
