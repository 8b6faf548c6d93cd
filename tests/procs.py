"""Real processes for integration tests: chatwire servers and a private Redis, on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.health import wait_healthy

REPO = Path(__file__).resolve().parent.parent


class ServerProcess:
    """`python -m chatwire serve` in a subprocess; its log goes to a file for post-mortems."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "server") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.name = name
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.env = {
            **os.environ,
            "CHATWIRE_PORT": str(self.port),
            "CHATWIRE_DATA_DIR": str(workdir / "data"),
            "CHATWIRE_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatwire", "serve"],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        await wait_healthy(self.url, self.proc.poll, timeout=timeout, log=self.log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)


class RedisProcess:
    """A private redis-server on a free port, so a test can stop and restart it without touching anyone else's."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start_again(self) -> RedisProcess:
        """The same server (port), started anew and empty, as Redis without persistence comes back."""
        return self.start()

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if out.stdout.strip() == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def shutdown(self) -> None:
        """`redis-cli shutdown`, as an operator restarting Redis would."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, check=False
        )
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


async def json_of(response: httpx.Response) -> Any:
    assert response.status_code < 400, response.text
    return response.json()
