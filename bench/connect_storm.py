"""Connect storm: N authenticated clients connecting at once, then `user-join` each; connects/s and server CPU per
connect, chatwire against stock python-socketio and Node socket.io doing the same token check in their handlers.

Every client is an official socket.io-client 4.8 connection (bench/node/storm.mjs) with its own HS256 token (its
own `jti`) spread over `--users` users; the subject verifies it at connect (chatwire: its normal connect path, with
the revocation check and the user row; python-socketio: PyJWT; Node: jsonwebtoken), puts the session in
`user:{id}`, and `user-join` verifies it again and acknowledges. chatwire's users are also members of `--channels`
group channels, so its `user-join` enters channel rooms too and each user's first session announces its presence
in them (the peers have no channels: they do less); `chatwire-no-channels` is chatwire doing only the peers' work.
`python-socketio-no-auth` is the stock server checking no token at all: the connect rate the authenticated
subjects are compared with (column "connects/s vs no-auth python-socketio", same storm phase).

Two storms per subject on one server process: `cold` right after start (nothing cached: every token and user is
new to the process, as after a deploy) and `warm` (all clients closed, then the same tokens again: a network
blip). Server CPU is the process's user+system time from /proc, read before and after each storm.

Run: python -m bench.connect_storm [--n 5000] [--users 100] [--subjects chatwire,chatwire-no-channels,python-socketio,node]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.common import LOAD_LIMITS_OFF, Proc, chatwire_argv, cpu_seconds, free_port, ratio, table
from bench.fanout import NODE_DIR, ensure_node_modules

SECRET = "bench-storm-" + uuid.uuid4().hex


def tokens_for(user_ids: list[str], n: int) -> list[str]:
    """N tokens shaped like chatwire's own (id, jti, iat, exp), client i for user i mod len(user_ids)."""
    now = int(time.time())
    return [
        jwt.encode(
            {"id": user_ids[i % len(user_ids)], "jti": uuid.uuid4().hex, "iat": now, "exp": now + 3600},
            SECRET,
            algorithm="HS256",
        )
        for i in range(n)
    ]


async def chatwire_subject(workdir: Path, users: int, channels: int) -> tuple[Proc, list[str]]:
    port = free_port()
    env = {
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(workdir / "cw-data"),
        "CHATWIRE_LOG_LEVEL": "WARNING",
        "CHATWIRE_JWT_SECRET": SECRET,
        # Every load-generator connection comes from one loopback address (without the slow-client bound off,
        # 5,000 handshakes at once would wait on 64 pending connections per address).
        **LOAD_LIMITS_OFF,
    }
    proc = await Proc(chatwire_argv(), env, port, workdir / "chatwire.log").ready()
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as http:
        admin_token = ""
        for i in range(users):
            r = await http.post(
                "/api/v1/auths/signup",
                json={
                    "name": f"u{i}",
                    "email": f"u{i}-{uuid.uuid4().hex[:6]}@bench.io",
                    "password": "benchpass",
                },
            )
            r.raise_for_status()
            ids.append(r.json()["id"])
            admin_token = admin_token or r.json()["token"]
        for c in range(channels):
            r = await http.post(
                "/api/v1/channels/create",
                headers={"Authorization": f"Bearer {admin_token}"},
                json={"name": f"storm-{c}", "type": "group", "user_ids": ids[1:]},
            )
            r.raise_for_status()
    # A fresh process: the sign-ups warmed its caches, the storm must meet a cold one (as after a deploy).
    proc.stop()
    proc = await Proc(chatwire_argv(), env, port, workdir / "chatwire.log").ready()
    return proc, ids


async def stock_subject(workdir: Path, users: int, _channels: int) -> tuple[Proc, list[str]]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.stock_sio_server", str(port)]
    proc = await Proc(argv, {"BENCH_JWT_SECRET": SECRET}, port, workdir / "stock.log").ready(
        "/ws/socket.io/?EIO=4&transport=polling"
    )
    return proc, [f"user-{i}" for i in range(users)]


async def stock_no_auth_subject(workdir: Path, users: int, _channels: int) -> tuple[Proc, list[str]]:
    """Stock python-socketio checking nothing: the connects/s that issue 18 asks chatwire's authenticated connects
    to reach."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.stock_sio_server", str(port)]
    proc = await Proc(argv, {"BENCH_NO_AUTH": "1"}, port, workdir / "stock-no-auth.log").ready(
        "/ws/socket.io/?EIO=4&transport=polling"
    )
    return proc, [f"user-{i}" for i in range(users)]


async def node_subject(workdir: Path, users: int, _channels: int) -> tuple[Proc, list[str]]:
    port = free_port()
    argv = ["node", str(NODE_DIR / "server.mjs"), str(port)]
    proc = await Proc(argv, {"BENCH_JWT_SECRET": SECRET}, port, workdir / "node.log").ready("/")
    return proc, [f"user-{i}" for i in range(users)]


async def chatwire_no_channels(workdir: Path, users: int, _channels: int) -> tuple[Proc, list[str]]:
    """chatwire doing the peers' work: its users are in no channel, so a user-join enters `user:{id}` only and a
    user's first session announces its presence to nobody."""
    return await chatwire_subject(workdir, users, 0)


SUBJECTS: dict[str, Any] = {
    "chatwire": chatwire_subject,
    "chatwire-no-channels": chatwire_no_channels,
    "python-socketio": stock_subject,
    "python-socketio-no-auth": stock_no_auth_subject,
    "node": node_subject,
}


async def storm(proc: Proc, tokens_file: Path, concurrency: int) -> dict[str, Any]:
    """One storm: every client connected and joined (or failed); the server's CPU over it."""
    cpu0 = cpu_seconds(proc.pid)
    client = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "storm.mjs"),
        json.dumps({"url": proc.url, "tokens": str(tokens_file), "concurrency": concurrency}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None and client.stdin is not None
    line = await asyncio.wait_for(client.stdout.readline(), 900)
    cpu1 = cpu_seconds(proc.pid)
    result: dict[str, Any] = json.loads(line)
    client.stdin.write(b"close\n")
    await client.stdin.drain()
    await asyncio.wait_for(client.wait(), 120)
    await asyncio.sleep(2.0)  # the server finishes its disconnects before the next storm
    result["server_cpu_s"] = cpu1 - cpu0
    result["cpu_ms_per_connect"] = (cpu1 - cpu0) * 1000 / max(1, result["connected"])
    return result


async def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    proc, user_ids = await SUBJECTS[name](workdir, args.users, args.channels)
    try:
        tokens_file = workdir / f"{name}-tokens.json"
        tokens_file.write_text(json.dumps(tokens_for(user_ids, args.n)))
        await asyncio.sleep(1.0)
        out: dict[str, Any] = {}
        for phase in ("cold", "warm"):
            out[phase] = await storm(proc, tokens_file, args.concurrency or args.n)
            r = out[phase]
            print(
                f"  {name:16} {phase}: {r['connected']} joined, {r['failed']} failed, {r['perSecond']:,.0f}/s, "
                f"{r['cpu_ms_per_connect']:.2f} ms CPU each {r['errors'] or ''}",
                file=sys.stderr,
            )
        return out
    finally:
        proc.stop()


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in ("chatwire", "python-socketio", "python-engineio", "PyJWT", "uvicorn"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "?"
    found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    for pkg in ("socket.io", "socket.io-client", "jsonwebtoken"):
        meta = NODE_DIR / "node_modules" / pkg / "package.json"
        found[f"npm {pkg}"] = json.loads(meta.read_text())["version"] if meta.exists() else "?"
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000, help="clients per storm")
    parser.add_argument("--users", type=int, default=100, help="users the clients' tokens belong to")
    parser.add_argument("--channels", type=int, default=2, help="chatwire: group channels every user is in")
    parser.add_argument("--concurrency", type=int, default=0, help="attempts in flight (0: all at once)")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_node_modules()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects.split(","):
            results[name] = await measure(name, args, Path(tmp))
    rows = []
    for name, phases in results.items():
        for phase, r in phases.items():
            floor = results.get("python-socketio-no-auth", {}).get(phase)
            vs = [ratio(r["perSecond"], floor["perSecond"]) if floor else "-"]
            for peer in ("python-socketio", "node"):
                p = results.get(peer, {}).get(phase)
                vs.append(ratio(r["cpu_ms_per_connect"], p["cpu_ms_per_connect"]) if p else "-")
            rows.append(
                [
                    name,
                    phase,
                    f"{r['connected']:,}",
                    str(r["failed"]),
                    f"{r['seconds']:.2f}",
                    f"{r['perSecond']:,.0f}",
                    vs[0],
                    f"{r['cpu_ms_per_connect']:.2f}",
                    *vs[1:],
                ]
            )
    found = versions()
    print(
        f"\nConnect storm: {args.n:,} authenticated official socket.io-client connections at once "
        f"(concurrency {args.concurrency or args.n:,}), {args.users} users, connect + `user-join` ack each\n"
    )
    print(
        table(
            [
                "subject",
                "storm",
                "joined",
                "failed",
                "seconds",
                "connects/s",
                "connects/s vs no-auth python-socketio",
                "server CPU ms per connect",
                "CPU vs python-socketio",
                "CPU vs Node",
            ],
            rows,
        )
    )
    print("\nVersions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    if args.json:
        args.json.write_text(json.dumps({**results, "versions": found}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
