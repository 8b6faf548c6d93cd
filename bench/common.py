"""Helpers shared by the benchmarks: processes, CPU accounting, percentiles, tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "CHATWIRE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CHATWIRE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """A process's resident memory now (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def ratio(value: float, peer: float) -> str:
    """`value / peer` as "1.23x", or "-" when the peer measured nothing (a tiny run's CPU can be below one clock
    tick of /proc's accounting, 10 ms)."""
    return f"{value / peer:.2f}x" if peer > 0 else "-"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Proc:
    """A subject process on a free port, waited for until it answers HTTP."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path, cwd: Path = REPO) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, path: str = "/health", timeout: float = 30) -> Proc:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"subject exited: {self.log.read_text()[-3000:]}")
                try:
                    r = await client.get(self.url + path, timeout=1)
                    if r.status_code < 500:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"subject did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# Every tab and every REST call of the load generator comes from one loopback address: the per-IP and per-user
# guards (slow-client table, connect and event rates) would refuse most of it.
LOAD_LIMITS_OFF = {
    "CHATWIRE_RATE_LIMIT_IP_CONNECTS": "0",
    "CHATWIRE_RATE_LIMIT_IP_EVENTS": "0",
    "CHATWIRE_HTTP_MAX_PENDING_PER_IP": "0",
    "CHATWIRE_MAX_CONNECTIONS_PER_USER": "0",
}


def server_env(port: int, workdir: Path) -> dict[str, str]:
    """The settings every long-running bench server starts from: its own port, data directory and secret, a quiet
    log, and event rates far above the bench's own traffic, so a burst of joins at connect time is never refused."""
    return {
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(workdir / "data"),
        "CHATWIRE_JWT_SECRET": uuid.uuid4().hex,
        "CHATWIRE_LOG_LEVEL": "WARNING",
        "CHATWIRE_RATE_LIMIT_EVENTS": "200",
        "CHATWIRE_RATE_LIMIT_BURST": "1000",
    }


def trace_env(trace_dir: Path, interval: float, frames: int) -> dict[str, str]:
    """What bench/traced_serve.py reads: where its heap snapshots go, how often, and how many stack frames."""
    return {
        "CHATWIRE_BENCH_TRACE_DIR": str(trace_dir),
        "CHATWIRE_BENCH_TRACE_INTERVAL": str(interval),
        "CHATWIRE_BENCH_TRACE_FRAMES": str(frames),
    }


def chatwire_argv() -> list[str]:
    return [sys.executable, "-m", "chatwire", "serve"]


@contextlib.asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"chatwire_b_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
