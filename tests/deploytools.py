"""Helpers for the packaging and deployment tests: run a command as a server until /health answers, build a
fresh virtualenv from the lock file, find Debian's nginx."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CHATWIRE_* variable of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATWIRE_") and k != "VIRTUAL_ENV"}
    env.update(extra)
    return env


@contextlib.contextmanager
def running(
    argv: list[str], *, env: dict[str, str], cwd: Path, log: Path, health_url: str | None, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (stdout and stderr into `log`); wait until `health_url` answers 200; SIGTERM it at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        if health_url is not None:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} did not become healthy:\n{log.read_text()[-4000:]}")
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def runtime_venv(path: Path, *packages: str) -> Path:
    """A fresh virtualenv at `path` with the locked runtime dependencies (hash-checked) and `packages`
    (no dependencies of their own resolved); returns its bin directory."""
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(path)], check=True)
    python = str(path / "bin" / "python")
    lock = str(REPO / "requirements.lock")
    subprocess.run(
        [str(UV), "pip", "install", "-q", "--python", python, "--require-hashes", "-r", lock], check=True
    )
    if packages:
        subprocess.run(
            [str(UV), "pip", "install", "-q", "--python", python, "--no-deps", *packages], check=True
        )
    return path / "bin"


def nginx_binary() -> str | None:
    """Debian's nginx (installed by .ci/run); None when it is not installed."""
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and Path(candidate).exists():
            return candidate
    return None
