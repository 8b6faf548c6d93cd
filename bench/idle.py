"""Many idle connections in ONE server process: resident memory per connection, and the server's CPU while idle.

Clients are bench/idle_client.py processes (raw websockets on asyncio protocols, a few KiB each, so the clients'
own memory is not the limit), each bound to its own loopback source address (127.0.0.2, 127.0.0.3, ...: each has
its own ephemeral port range, so the ~28k ports of one address are not the limit). Every client does a real Engine.IO
v4 + Socket.IO v5 handshake with a token of its own (an HS256 JWT with a distinct `jti`, spread over `--users`
users) and `user-join` with the same token, waiting for the acknowledgement; then it only answers pings. The
subjects check the token in the same places (chatwire: its normal authenticated connect and `user-join`; Node
socket.io and stock python-socketio: jsonwebtoken / PyJWT in the connect handler and in `user-join`, see
bench/node/server.mjs and bench/stock_sio_server.py). `engine` (chatwire's own engine with the fan-out handler,
bench/engine_sio_server.py) has no token check: its clients connect with `{room}` and skip `user-join`.

Measured per subject, with the ping interval at its default (25 s everywhere):
- connected / failed, and how many were still open after the idle window;
- KiB per connection: (server RSS at the end of the window - RSS before the first connect) / connected;
- idle CPU: the server's user+system time over `--window` seconds (from /proc/PID/stat) as % of one core;
- pings the clients answered in the window (each connection should see window / 25 s of them).

RLIMIT_NOFILE: the bench raises the soft limit to the hard limit (and tries to raise the hard limit) before it
starts anything; servers and clients inherit it. Where the hard limit cannot be raised (no CAP_SYS_RESOURCE) a
server cannot hold more descriptors than it: the number of connections is then capped below it, and the output
says so.

Run: python -m bench.idle [--n 50000] [--subjects chatwire,node] [--window 60]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Proc, cpu_seconds, rss_bytes, table
from bench.connect_storm import SUBJECTS as STORM_SUBJECTS
from bench.connect_storm import tokens_for
from bench.fanout import NODE_DIR, engine_subject, ensure_node_modules

PER_SOURCE = 10_000  # connections per loopback source address (and per client process); the range holds ~28k
FD_RESERVE = 500  # descriptors a server needs besides its connections (listener, database, logs, event loop)
PING_INTERVAL = 25.0


def raise_nofile(wanted: int) -> tuple[int, int, str]:
    """Raise RLIMIT_NOFILE of this process (inherited by everything it starts): the hard limit to `wanted` if
    allowed, the soft one to the hard one. Returns (soft, hard, a sentence saying what was set)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError) as exc:
            note = f" (raising the hard limit to {wanted:,} was refused: {exc}; needs CAP_SYS_RESOURCE)"
    new_soft, new_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if new_soft < new_hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
        new_soft = new_hard
    return (
        new_soft,
        new_hard,
        f"RLIMIT_NOFILE {soft:,}/{hard:,} -> {new_soft:,}/{new_hard:,} (soft/hard){note}",
    )


def versions() -> str:
    """The libraries the subjects and clients run on, for the results."""
    py = {
        name: importlib.metadata.version(name)
        for name in ("python-socketio", "python-engineio", "uvicorn", "uvloop", "PyJWT")
    }
    node: dict[str, str] = {}
    for name in ("socket.io", "engine.io", "ws", "jsonwebtoken"):
        package = NODE_DIR / "node_modules" / name / "package.json"
        if package.exists():
            node[name] = json.loads(package.read_text())["version"]
    parts = [f"chatwire {importlib.metadata.version('chatwire')}", f"Python {sys.version.split()[0]}"]
    parts += [f"{k} {v}" for k, v in py.items()]
    parts += [f"Node {k} {v}" for k, v in node.items()]
    return ", ".join(parts)


async def start_subject(
    name: str, workdir: Path, n: int, users: int
) -> tuple[Proc, list[dict[str, Any]], bool]:
    """The subject process, the handshake auth of each of the n clients, and whether they send `user-join`."""
    if name == "engine":
        proc, _ = await engine_subject(workdir)
        return proc, [{"room": f"user:{i % users}"} for i in range(n)], False
    proc, ids = await STORM_SUBJECTS[name](workdir, users, 0)
    return proc, [{"token": t} for t in tokens_for(ids, n)], True


async def measure(name: str, n: int, users: int, window: float, workdir: Path) -> dict[str, Any]:
    proc, auths, join = await start_subject(name, workdir, n, users)
    holders: list[asyncio.subprocess.Process] = []
    try:
        await asyncio.sleep(1.0)
        before = rss_bytes(proc.pid)
        started = time.monotonic()
        for k in range(math.ceil(n / PER_SOURCE)):
            options = {
                "host": "127.0.0.1",
                "port": proc.port,
                "path": "/ws/socket.io/",
                "sources": [f"127.0.0.{2 + k}"],
                "per_source": PER_SOURCE,
                "auths": auths[k * PER_SOURCE : (k + 1) * PER_SOURCE],
                "join": join,
                "concurrency": 50,
                "timeout": 120,
            }
            path = workdir / f"idle-{name}-{k}.json"
            path.write_text(json.dumps(options))
            holders.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.idle_client",
                    str(path),
                    cwd=REPO,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )

        async def line(h: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
            assert h.stdout is not None
            raw = await asyncio.wait_for(h.stdout.readline(), timeout)
            if not raw:
                raise RuntimeError(f"client process exited ({await h.wait()})")
            return json.loads(raw)  # type: ignore[no-any-return]

        async def ask(command: bytes) -> list[dict[str, Any]]:
            for h in holders:
                assert h.stdin is not None
                h.stdin.write(command + b"\n")
                await h.stdin.drain()
            return [await line(h, 60) for h in holders]

        ready = [await line(h, 1800) for h in holders]
        connect_seconds = time.monotonic() - started
        connected = sum(r["connected"] for r in ready)
        errors: dict[str, int] = {}
        for r in ready:
            for why, count in r["errors"].items():
                errors[why] = errors.get(why, 0) + count
        await asyncio.sleep(5.0)  # let the last handshakes' work finish before the idle window
        pings0 = sum(s["pings"] for s in await ask(b"status"))
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(window)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        after = rss_bytes(proc.pid)
        status = await ask(b"status")
        closed = await ask(b"close")
        for h in holders:
            await asyncio.wait_for(h.wait(), 60)
        return {
            "attempted": n,
            "connected": connected,
            "failed": sum(r["failed"] for r in ready),
            "errors": errors,
            "held": sum(s["open"] for s in status),
            "closed_by_server": sum(s["closed_by_server"] for s in closed),
            "connect_seconds": connect_seconds,
            "rss_before": before,
            "rss_after": after,
            "per_connection": (after - before) / max(1, connected),
            "idle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "window": t1 - t0,
            "pings": sum(s["pings"] for s in status) - pings0,
        }
    finally:
        for h in holders:
            if h.returncode is None:
                h.kill()
                await h.wait()
        proc.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", default="50000", help="connections per subject; comma separated for several runs"
    )
    parser.add_argument("--users", type=int, default=50, help="users the clients' tokens are spread over")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of idle CPU measured")
    parser.add_argument("--subjects", default="chatwire,node")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_node_modules()
    wanted = [int(x) for x in args.n.split(",")]
    soft, _hard, limit_note = raise_nofile(max(wanted) + FD_RESERVE)
    sizes = [min(n, soft - FD_RESERVE) for n in wanted]
    print(f"  {limit_note}", file=sys.stderr)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for name in args.subjects.split(","):
                r = await measure(name, n, args.users, args.window, Path(tmp))
                results.setdefault(name, {})[str(n)] = r
                print(
                    f"  {name:16} n={n}: {r['connected']} connected, {r['per_connection'] / 1024:.1f} KiB each, "
                    f"idle CPU {r['idle_cpu_percent']:.2f}% of a core",
                    file=sys.stderr,
                )
    rows = []
    for n in sizes:
        base = results.get("node", {}).get(str(n))
        for name in results:
            r = results[name][str(n)]
            expected = r["held"] * r["window"] / PING_INTERVAL
            rows.append(
                [
                    name,
                    f"{n:,}",
                    f"{r['connected']:,}",
                    str(r["failed"]),
                    f"{r['held']:,}",
                    f"{r['connect_seconds']:.0f}",
                    f"{r['per_connection'] / 1024:.1f}" if r["connected"] else "-",
                    f"{r['rss_after'] / 2**20:.0f}",
                    f"{r['idle_cpu_percent']:.2f}",
                    f"{r['pings']:,} / {expected:,.0f}",
                    f"{r['per_connection'] / base['per_connection']:.2f}x"
                    if base and r["connected"] and base["connected"]
                    else "-",
                    f"{r['idle_cpu_percent'] / base['idle_cpu_percent']:.2f}x"
                    if base and base["idle_cpu_percent"] > 0
                    else "-",
                ]
            )
    capped = [f"{w:,} -> {s:,}" for w, s in zip(wanted, sizes, strict=True) if w != s]
    print(f"\nIdle connections held by one server process, {args.window:g} s idle window, default pings\n")
    print(f"- {limit_note}")
    if capped:
        print(f"- connections capped by the server's descriptor limit: {', '.join(capped)}")
    print(
        f"- clients: bench/idle_client.py, {PER_SOURCE:,} per process and per source address "
        f"(127.0.0.2 ...); tokens spread over {args.users} users; EIO4 + SIO5 handshake, then `user-join` with"
        " its ack (not for `engine`)"
    )
    print(f"- versions: {versions()}\n")
    print(
        table(
            [
                "subject",
                "attempted",
                "connected",
                "failed",
                "held after window",
                "connect s",
                "KiB per connection",
                "RSS MiB",
                "idle CPU % of a core",
                "pings answered / expected",
                "memory vs Node",
                "idle CPU vs Node",
            ],
            rows,
        )
    )
    for name, by_n in results.items():
        for size, r in by_n.items():
            if r["errors"]:
                print(f"\n{name} n={size} failures: {json.dumps(r['errors'])}")
    if args.json:
        args.json.write_text(json.dumps({"limit": limit_note, "results": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
