"""Connection churn: do closed sessions give their memory back? N clients connect, join and leave, round after round.

Each round runs bench/node/storm.mjs against one real `chatwire serve` process: `--clients` official socket.io-client
connections, each with a user's token, each emitting `user-join` and waiting for its ack; then all of them close,
and the round ends once the server's `chatwire_sessions` gauge is back to 0. The server's RSS is read after every
round. What a closed session leaves behind is the growth from the end of the warm-up rounds (caches, pools and
allocator arenas fill during those) to the end of the last round, divided by the sessions closed in between.

The server runs under bench/traced_serve.py: the allocation tracer starts after warm-up and heap snapshots are taken
then and after the last round, so the report also gives the traced bytes grown per closed session, the allocation
sites that grew most and the object types whose count grew (live or awaiting the collector). The tracer has memory
of its own (a record per live block), so a traced run's RSS is a little higher; `--trace-frames 0` keeps the tracer
off (RSS and the object census only).

Run: python -m bench.churn --clients 500 --rounds 12 [--warmup 2] [--users 20] [--trace-frames 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import LOAD_LIMITS_OFF, Proc, free_port, server_env, trace_env
from bench.connect_storm import storm
from bench.fanout import ensure_node_modules
from bench.soak import heap_growth, heap_report, rss_mb

SESSIONS = re.compile(r"^chatwire_sessions\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class ChurnResult:
    """RSS after each round, and what the growth after warm-up comes to per closed session."""

    clients: int
    rounds: int
    warmup: int
    rss_mb: list[float] = field(default_factory=list)  # after each round, every session closed
    closed: list[int] = field(default_factory=list)  # sessions that connected and closed, per round
    failed: int = 0
    heap: dict[str, Any] = field(default_factory=dict)
    traced_grown_bytes: int | None = None  # from the snapshot after warm-up to the last one (tracer on)

    def closed_after_warmup(self) -> int:
        return sum(self.closed[self.warmup :])

    def rss_kib_per_session(self) -> float:
        grown = self.rss_mb[-1] - self.rss_mb[self.warmup - 1]
        return grown * 1024 / max(1, self.closed_after_warmup())

    def traced_kib_per_session(self) -> float | None:
        if self.traced_grown_bytes is None:
            return None
        return self.traced_grown_bytes / 1024 / max(1, self.closed_after_warmup())


def traced_bytes(path: Path) -> int:
    """All the bytes a tracemalloc snapshot file holds traces of."""
    return sum(stat.size for stat in tracemalloc.Snapshot.load(str(path)).statistics("filename"))


async def live_sessions(http: httpx.AsyncClient) -> float:
    """The server's live Socket.IO sessions, every transport, from its metrics."""
    text = (await http.get("/metrics")).text
    return sum(float(v) for v in SESSIONS.findall(text))


async def sign_up(http: httpx.AsyncClient, users: int) -> list[str]:
    """`users` fresh accounts; their tokens."""
    tokens = []
    run = uuid.uuid4().hex[:6]
    for i in range(users):
        r = await http.post(
            "/api/v1/auths/signup",
            json={"name": f"c{i}", "email": f"c{i}-{run}@bench.io", "password": "benchpass"},
        )
        r.raise_for_status()
        tokens.append(r.json()["token"])
    return tokens


async def one_round(
    proc: Proc, http: httpx.AsyncClient, tokens_file: Path, concurrency: int
) -> dict[str, Any]:
    """Connect and join every client, close them all, wait until the server holds no session."""
    result = await storm(proc, tokens_file, concurrency)
    deadline = time.monotonic() + 60
    while await live_sessions(http) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("sessions still open 60 s after every client closed")
        await asyncio.sleep(0.2)
    return result


def snapshots(trace_dir: Path) -> int:
    return len(list(trace_dir.glob("snap-*.json")))


async def snapshot(proc: Proc, trace_dir: Path) -> None:
    """Have the traced server write a heap snapshot now (SIGUSR2) and wait for it."""
    before = snapshots(trace_dir)
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 300
    while snapshots(trace_dir) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("no heap snapshot within 300 s")
        await asyncio.sleep(0.2)


async def run_churn(
    clients: int, rounds: int, warmup: int, users: int, concurrency: int, frames: int, workdir: Path
) -> ChurnResult:
    """Run the rounds against a fresh traced server; returns what it measured (asserts nothing)."""
    port = free_port()
    trace_dir = workdir / "heap"
    env = {
        **server_env(port, workdir),
        **LOAD_LIMITS_OFF,
        **trace_env(trace_dir, 365 * 86400, frames),  # snapshots only when asked for
    }
    argv = [sys.executable, "-m", "bench.traced_serve"]
    proc = await Proc(argv, env, port, workdir / "chatwire.log").ready()
    res = ChurnResult(clients=clients, rounds=rounds, warmup=warmup)
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as http:
            tokens = await sign_up(http, users)
            tokens_file = workdir / "tokens.json"
            tokens_file.write_text(json.dumps([tokens[i % len(tokens)] for i in range(clients)]))
            warm_unix_ms = 0.0
            for n in range(rounds):
                result = await one_round(proc, http, tokens_file, concurrency)
                res.closed.append(result["connected"])
                res.failed += result["failed"]
                res.rss_mb.append(round(rss_mb(proc.pid), 1))
                print(
                    f"round {n + 1}/{rounds}: {result['connected']} connected and closed, "
                    f"{result['failed']} failed, rss {res.rss_mb[-1]} MB",
                    flush=True,
                )
                if n + 1 == warmup:
                    warm_unix_ms = time.time() * 1000
                    os.kill(proc.pid, signal.SIGUSR1)  # bench/traced_serve.py: start tracing
                    await snapshot(proc, trace_dir)
            await snapshot(proc, trace_dir)
    finally:
        proc.stop()
    res.heap = heap_growth(trace_dir, warm_unix_ms)
    traces = sorted(trace_dir.glob("snap-*.tracemalloc"), key=lambda p: int(p.stem.split("-")[1]))
    if len(traces) >= 2:
        res.traced_grown_bytes = traced_bytes(traces[-1]) - traced_bytes(traces[0])
    return res


def report(res: ChurnResult, frames: int) -> list[str]:
    lines = [
        f"churn: {res.clients} clients x {res.rounds} rounds ({res.warmup} warm-up), "
        f"{sum(res.closed)} sessions closed, {res.failed} failed",
        "  RSS after each round (MB): " + " ".join(f"{m:g}" for m in res.rss_mb),
        f"  RSS grown after warm-up: {res.rss_mb[-1] - res.rss_mb[res.warmup - 1]:.1f} MB over "
        f"{res.closed_after_warmup()} closed sessions = {res.rss_kib_per_session():.2f} KiB per closed session",
    ]
    traced = res.traced_kib_per_session()
    if traced is not None:
        lines.append(
            f"  traced heap grown after warm-up: {traced:.2f} KiB per closed session ({frames} frame(s))"
        )
    return lines + heap_report(res.heap)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=500, help="clients per round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="rounds before the baseline is taken")
    parser.add_argument("--users", type=int, default=20, help="accounts the clients' tokens are spread over")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight at once")
    parser.add_argument(
        "--trace-frames", type=int, default=1, help="stack frames per traced allocation (0: tracer off)"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    if not 1 <= args.warmup < args.rounds:
        parser.error("--warmup must be at least 1 and fewer than --rounds")
    ensure_node_modules()
    with tempfile.TemporaryDirectory(prefix="chatwire-churn-") as tmp:
        res = await run_churn(
            args.clients, args.rounds, args.warmup, args.users, args.concurrency, args.trace_frames, Path(tmp)
        )
    print("\n".join(report(res, args.trace_frames)))
    if args.json:
        args.json.write_text(json.dumps(res.__dict__, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
