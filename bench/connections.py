"""Idle connections: resident memory per connection and connect rate, for 10,000 websocket sessions.

Each subject runs as its own process; a Node process holds the official socket.io-client connections.
chatwire's sessions are authenticated (token in the handshake, so each also joins its `user:` room).

Run: python -m bench.connections [--n 10000] [--subjects chatwire,python-socketio,node]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import rss_bytes, table
from bench.fanout import NODE_DIR, SUBJECTS, ensure_node_modules


async def measure(name: str, n: int, workdir: Path) -> dict[str, Any]:
    proc, options = await SUBJECTS[name](workdir)
    try:
        await asyncio.sleep(1.0)
        before = rss_bytes(proc.pid)
        holder = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "connect.mjs"),
            json.dumps({"url": proc.url, "n": n, "concurrency": 100, "auth": options["receiverAuth"]}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stdin is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 900)
        result = json.loads(line)
        await asyncio.sleep(2.0)  # let the server settle (per-connection tasks started, buffers allocated)
        after = rss_bytes(proc.pid)
        holder.stdin.write(b"close\n")
        await holder.stdin.drain()
        await asyncio.wait_for(holder.wait(), 120)
        connected = max(1, result["connected"])
        return {
            **result,
            "rss_before": before,
            "rss_after": after,
            "per_connection": (after - before) / connected,
        }
    finally:
        proc.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--subjects", default="chatwire,python-socketio,node")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_node_modules()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects.split(","):
            results[name] = await measure(name, args.n, Path(tmp))
            r = results[name]
            print(
                f"  {name:16}: {r['connected']} connected, {r['per_connection'] / 1024:.1f} KiB each",
                file=sys.stderr,
            )
    base = results.get("python-socketio")
    rows = [
        [
            name,
            f"{r['connected']:,}",
            str(r["failed"]),
            f"{r['perSecond']:,.0f}",
            f"{r['per_connection'] / 1024:.1f}",
            f"{r['rss_after'] / 2**20:.0f}",
            f"{r['per_connection'] / base['per_connection']:.2f}x" if base else "-",
        ]
        for name, r in results.items()
    ]
    print(f"\nIdle connections: {args.n:,} websocket sessions held by one Node process\n")
    print(
        table(
            [
                "subject",
                "connected",
                "failed",
                "connects/s",
                "KiB per connection",
                "RSS MiB",
                "memory vs python-socketio",
            ],
            rows,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
