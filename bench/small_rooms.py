"""Many small rooms: 10,000 users x 2 tabs, an event to each user's `user:{id}` room, chatwire vs Node socket.io.

The common case of a chat app: each user's own room holds one to three tabs, and a notice goes to many users one
room at a time. One Node process (official socket.io-client 4.8, bench/node/rooms.mjs) holds every tab and sends
`rounds` events to every user's room through `POST /api/v1/events/publish/batch` (batches of `--batch` rooms):
chatwire's server API route with a `publish` key, and the same route on the Node socket.io 4.8 peer
(bench/node/server.mjs), where it calls `io.to(room).emit` per event. chatwire's tabs are external-JWT users that
enter `user:{id}` on user-join; the Node peer's tabs join the room named in their handshake.

Reported, same run: deliveries/s (arrivals at the tabs over the time from the first batch to the last arrival)
and server CPU per delivery (from /proc/PID/stat, over the publishing only, connects excluded), with the ratio to
Node's; the library versions.

Run: python -m bench.small_rooms [--users 10000] [--tabs 2] [--rounds 5] [--batch 500] [--subjects chatwire,node]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jwt

from bench.common import LOAD_LIMITS_OFF, Proc, chatwire_argv, cpu_seconds, free_port, ratio, table
from bench.fanout import NODE_DIR, ensure_node_modules
from bench.idle import FD_RESERVE, raise_nofile


async def chatwire_subject(workdir: Path, users: int) -> tuple[Proc, dict[str, Any]]:
    secret = secrets.token_urlsafe(32)
    port = free_port()
    env = {
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(workdir / "cw-data"),
        "CHATWIRE_LOG_LEVEL": "WARNING",
        # The users are external identities, provisioned on their first user-join: no sign-up in the set-up.
        "CHATWIRE_EXTERNAL_ALGORITHMS": "HS256",
        "CHATWIRE_EXTERNAL_SECRET": secret,
        **LOAD_LIMITS_OFF,
    }
    created = subprocess.run(
        [*chatwire_argv()[:-1], "keys", "create", "--scope", "publish", "--name", "bench"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    api_key = created.stdout.strip().splitlines()[-1]
    proc = await Proc(chatwire_argv(), env, port, workdir / "chatwire.log").ready()
    exp = int(time.time()) + 3600
    tokens = [
        jwt.encode({"sub": f"u{i}", "name": f"User {i}", "exp": exp}, secret, algorithm="HS256")
        for i in range(users)
    ]
    return proc, {"apiKey": api_key, "users": [{"auth": {"token": t}, "joinToken": t} for t in tokens]}


async def node_subject(workdir: Path, users: int) -> tuple[Proc, dict[str, Any]]:
    port = free_port()
    api_key = secrets.token_urlsafe(24)
    proc = await Proc(
        ["node", str(NODE_DIR / "server.mjs"), str(port)],
        {"BENCH_API_KEY": api_key},
        port,
        workdir / "node.log",
    ).ready("/")
    return proc, {"apiKey": api_key, "users": [{"auth": {"room": f"user:u{i}"}} for i in range(users)]}


SUBJECTS = {"chatwire": chatwire_subject, "node": node_subject}


async def run_subject(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    proc, options = await SUBJECTS[name](workdir, args.users)
    try:
        options.update(
            url=proc.url,
            tabs=args.tabs,
            rounds=args.rounds,
            batch=args.batch,
            window=args.window,
            timeoutMs=120_000,
        )
        # Ten thousand tokens do not fit in one command-line argument: the options go in a file.
        options_file = workdir / f"{name}-rooms.json"
        options_file.write_text(json.dumps(options))
        node = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "rooms.mjs"),
            str(options_file),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert node.stdin is not None and node.stdout is not None and node.stderr is not None
        connect_started = time.monotonic()
        ready = await asyncio.wait_for(node.stdout.readline(), 1800)
        if not ready:
            raise RuntimeError(f"rooms.mjs failed: {(await node.stderr.read()).decode()[-2000:]}")
        connect_seconds = time.monotonic() - connect_started
        await asyncio.sleep(1.0)  # let the connect burst settle
        cpu_before = cpu_seconds(proc.pid)
        node.stdin.write(b"go\n")
        await node.stdin.drain()
        line = await asyncio.wait_for(node.stdout.readline(), 600)
        cpu_after = cpu_seconds(proc.pid)
        await node.wait()
        if not line:
            raise RuntimeError(f"rooms.mjs printed no result: {(await node.stderr.read()).decode()[-2000:]}")
    finally:
        proc.stop()
    result: dict[str, Any] = json.loads(line)
    cpu = cpu_after - cpu_before
    return {
        **result,
        "connect_seconds": connect_seconds,
        "cpu_seconds": cpu,
        "cpu_us_per_delivery": cpu / max(1, result["deliveries"]) * 1e6,
    }


def versions() -> str:
    """The versions of what is compared (recorded with the numbers)."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sio = json.loads((NODE_DIR / "node_modules" / "socket.io" / "package.json").read_text())["version"]
    client = json.loads((NODE_DIR / "node_modules" / "socket.io-client" / "package.json").read_text())[
        "version"
    ]
    return (
        f"chatwire {version('chatwire')}, python-socketio {version('python-socketio')}, "
        f"Python {sys.version.split()[0]}; Node {node}, socket.io {sio}; load: socket.io-client {client}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tabs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="events to every user's room")
    parser.add_argument("--batch", type=int, default=500, help="rooms per publish/batch call (at most 1000)")
    parser.add_argument("--window", type=int, default=2, help="publish calls in flight")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_node_modules()
    # The server holds every tab in one process (and the Node client too): past the descriptor limit the run
    # would die mid-connect, so the users are capped to what fits, and the table says so.
    soft, _hard, limit_note = raise_nofile(args.users * args.tabs + FD_RESERVE)
    fits = max(1, (soft - FD_RESERVE) // args.tabs)
    asked = args.users
    if fits < asked:
        args.users = fits
    print(f"{limit_note}", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects.split(","):
            workdir = Path(tmp) / name
            workdir.mkdir()
            results[name] = r = await run_subject(name, args, workdir)
            print(
                f"  {name:10}: {r['deliveries']:,} deliveries, {r['deliveriesPerSecond']:,.0f}/s, "
                f"{r['cpu_us_per_delivery']:.1f} us CPU each",
                file=sys.stderr,
            )
    node = results.get("node")
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['tabs']:,}",
                f"{r['events']:,}",
                f"{r['deliveries']:,}",
                str(r["missing"]),
                f"{r['deliveriesPerSecond']:,.0f}",
                ratio(r["deliveriesPerSecond"], node["deliveriesPerSecond"]) if node else "-",
                f"{r['cpu_us_per_delivery']:.1f}",
                ratio(r["cpu_us_per_delivery"], node["cpu_us_per_delivery"]) if node else "-",
                f"{r['connect_seconds']:.0f}",
            ]
        )
    print(
        f"\nMany small rooms: {args.users:,} users x {args.tabs} tabs, {args.rounds} events to every user's room "
        f"(`user:{{id}}`), published {args.batch} rooms per call, {args.window} calls in flight\n"
    )
    if args.users < asked:
        print(
            f"**{asked:,} users were asked for; {args.users:,} fit this machine's descriptor limit** "
            f"({limit_note}; {FD_RESERVE} kept for the server's own files).\n"
        )
    print(
        table(
            [
                "subject",
                "tabs",
                "events",
                "deliveries",
                "missing",
                "deliveries/s",
                "vs node",
                "CPU us/delivery",
                "CPU vs node",
                "connect s",
            ],
            rows,
        )
    )
    print(f"\nversions: {versions()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
