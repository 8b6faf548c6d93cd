"""Fan-out benchmark: `events:channel` typing relayed to rooms of 10, 100 and 1,000 members.

Subjects, each a real process on this machine, driven by the same Node load generator (official socket.io-client):
chatwire; stock python-socketio with the same handler shape; Node socket.io 4.8 with the same handler; and (not
in the default set) `engine`: the same handler on chatwire's own engine, chatwire/engine.
Reported: deliveries/s when saturated (at most `window` unacknowledged sends), p50/p99 latency when paced.

Run: python -m bench.fanout [--sizes 10,100,1000] [--subjects chatwire,python-socketio,node]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, Proc, chatwire_argv, free_port, table

NODE_DIR = REPO / "bench" / "node"
EVENTS = {10: 10000, 100: 3000, 1000: 400}


def ensure_node_modules() -> None:
    needed = ("socket.io", "socket.io-client", "jsonwebtoken")  # keep in step with bench/node/package.json
    if not all((NODE_DIR / "node_modules" / name).exists() for name in needed):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)


async def loadgen(options: dict[str, Any]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "loadgen.mjs"),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def chatwire_subject(workdir: Path, src: Path | None = None) -> tuple[Proc, dict[str, Any]]:
    """chatwire from this checkout, or from `src` (another version's source tree, for before/after runs)."""
    port = free_port()
    env = {
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(workdir / "cw-data"),
        "CHATWIRE_LOG_LEVEL": "WARNING",
        "CHATWIRE_RATE_LIMIT_EVENTS": "1000000",
        "CHATWIRE_RATE_LIMIT_BURST": "1000000",
        # Every load-generator connection comes from one loopback address, as one user.
        "CHATWIRE_RATE_LIMIT_IP_CONNECTS": "0",
        "CHATWIRE_HTTP_MAX_PENDING_PER_IP": "0",
        "CHATWIRE_RATE_LIMIT_IP_EVENTS": "0",
        "CHATWIRE_MAX_CONNECTIONS_PER_USER": "0",
    }
    if src is not None:
        env["PYTHONPATH"] = str(src)
    proc = await Proc(chatwire_argv(), env, port, workdir / "chatwire.log", cwd=src or REPO).ready()
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:

        async def signup(name: str) -> dict[str, Any]:
            r = await http.post(
                "/api/v1/auths/signup",
                json={
                    "name": name,
                    "email": f"{name}-{uuid.uuid4().hex[:6]}@bench.io",
                    "password": "benchpass",
                },
            )
            r.raise_for_status()
            return r.json()  # type: ignore[no-any-return]

        sender, member = await signup("sender"), await signup("member")
        r = await http.post(
            "/api/v1/channels/create",
            headers={"Authorization": f"Bearer {sender['token']}"},
            json={"name": "bench", "type": "group", "user_ids": [member["id"]]},
        )
        r.raise_for_status()
    options = {
        "channelId": r.json()["id"],
        "senderAuth": {"token": sender["token"]},
        "senderJoinToken": sender["token"],
        "receiverAuth": {"token": member["token"]},
        "receiverJoinToken": member["token"],
    }
    return proc, options


async def stock_subject(workdir: Path) -> tuple[Proc, dict[str, Any]]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.stock_sio_server", str(port)]
    proc = await Proc(argv, {}, port, workdir / "stock.log").ready("/ws/socket.io/?EIO=4&transport=polling")
    auth = {"room": "channel:bench"}
    return proc, {"channelId": "bench", "senderAuth": auth, "receiverAuth": auth}


async def engine_subject(workdir: Path) -> tuple[Proc, dict[str, Any]]:
    """The same handler on chatwire's own engine (chatwire/engine), without the app around it."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.engine_sio_server", str(port)]
    proc = await Proc(argv, {}, port, workdir / "engine.log").ready("/ws/socket.io/?EIO=4&transport=polling")
    auth = {"room": "channel:bench"}
    return proc, {"channelId": "bench", "senderAuth": auth, "receiverAuth": auth}


async def node_subject(workdir: Path) -> tuple[Proc, dict[str, Any]]:
    port = free_port()
    proc = await Proc(
        ["node", str(NODE_DIR / "server.mjs"), str(port)], {}, port, workdir / "node.log"
    ).ready("/")
    auth = {"room": "channel:bench"}
    return proc, {"channelId": "bench", "senderAuth": auth, "receiverAuth": auth}


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


SUBJECTS: dict[str, Any] = {
    "chatwire": chatwire_subject,
    "python-socketio": stock_subject,
    "engine": engine_subject,
    "node": node_subject,
}
if os.environ.get("CHATWIRE_BENCH_BASELINE_SRC"):
    # `git archive main | tar -x -C DIR`, then CHATWIRE_BENCH_BASELINE_SRC=DIR: subject "chatwire-baseline".
    SUBJECTS["chatwire-baseline"] = functools.partial(
        chatwire_subject, src=Path(os.environ["CHATWIRE_BENCH_BASELINE_SRC"])
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--subjects", default="chatwire,python-socketio,node")
    parser.add_argument(
        "--deliveries-rate",
        type=float,
        default=10_000.0,
        help="deliveries/s while measuring latency (events/s = this / room size, at most 200)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per subject and size, in alternating order; median shown"
    )
    args = parser.parse_args()
    ensure_node_modules()
    sizes = [int(s) for s in args.sizes.split(",")]
    subjects = args.subjects.split(",")
    results: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in subjects}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {size: [] for size in sizes} for s in subjects}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for round_ in range(args.rounds):
                order = subjects if round_ % 2 == 0 else subjects[::-1]
                for name in order:
                    proc, options = await SUBJECTS[name](Path(tmp))
                    try:
                        options.update(
                            url=proc.url,
                            receivers=size,
                            events=EVENTS.get(size, 1000),
                            rate=min(200.0, args.deliveries_rate / size),
                        )
                        run = await loadgen(options)
                    finally:
                        proc.stop()
                    runs[name][size].append(run)
                    print(
                        f"  {name:16} room {size:5}: {run['saturated']['deliveriesPerSecond']:,.0f} deliveries/s",
                        file=sys.stderr,
                    )
            for name in subjects:
                ordered = sorted(runs[name][size], key=lambda r: r["saturated"]["deliveriesPerSecond"])
                results[name][size] = {
                    **ordered[len(ordered) // 2],
                    "rounds": [r["saturated"]["deliveriesPerSecond"] for r in runs[name][size]],
                }
    rows = []
    for size in sizes:
        base = (
            results.get("python-socketio", {}).get(size, {}).get("saturated", {}).get("deliveriesPerSecond")
        )
        node = results.get("node", {}).get(size, {}).get("saturated", {}).get("deliveriesPerSecond")
        for name in subjects:
            r = results[name][size]
            dps = r["saturated"]["deliveriesPerSecond"]
            rows.append(
                [
                    str(size),
                    name,
                    f"{dps:,.0f}",
                    " / ".join(f"{x / 1000:.0f}k" for x in r["rounds"]),
                    f"{dps / base:.2f}x" if base else "-",
                    f"{dps / node:.2f}x" if node else "-",
                    fmt_ms(r["paced"]["p50"]),
                    fmt_ms(r["paced"]["p99"]),
                    str(r["saturated"]["missing"] + r["paced"]["missing"]),
                ]
            )
    print(
        f"\nFan-out (cores: {os.cpu_count()}): deliveries/s with at most 200 unacknowledged sends, median of "
        f"{args.rounds} rounds (subjects alternate; the ratios use the medians); latency paced at "
        f"{args.deliveries_rate:,.0f} deliveries/s (from the median run)\n"
    )
    print(
        table(
            [
                "room",
                "subject",
                "deliveries/s (median)",
                "each round",
                "vs python-socketio",
                "vs node",
                "p50 ms",
                "p99 ms",
                "missing",
            ],
            rows,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
