"""Streaming benchmark: 200 users with 2 tabs each, one demo generation per user at 150 tokens/s, all at once.

Each subject is a real `chatwire serve` process (SQLite, the embedded default); one Node process holds the tabs
(official socket.io-client 4.8, bench/node/tabs.mjs), starts the generations over REST (`POST
/api/chat/completions`, the demo model) and records when each token reaches each tab. Subjects, same run:
chatwire from this checkout and, when `CHATWIRE_BENCH_BASELINE_SRC` names another version's source tree (`make
bench BENCH_ARGS="--baseline DIR"`), `chatwire-baseline` run from it: the ratio column compares the two.
`chatwire-per-token` is this checkout with delta coalescing off (`CHATWIRE_COMPLETION_COALESCE_MS=0`: one event per
token), the peer of the ratio column when there is no baseline. A token is one word of the demo answer, counted in
the delta events' text (a merged event carries several). Reported: server CPU per token (from /proc/PID/stat, over
the generation only), delta events and frames/s delivered to the tabs,
p50/p99 token latency (see tabs.mjs for how it is measured without a timestamp in the events), the spread of one
token's arrival between a user's two tabs, and persistence writes (from /metrics).

`--curve 200,1000,2000`: instead, chatwire alone at each number of concurrent generations (2 tabs each), all at
the same offered load (`--curve-rate` tokens/s in all, split over the generations), so that what grows is the
concurrency, not the throughput asked of two cores: CPU per token and p99 token latency at each point, and the
growth of CPU per token against the first point next to what linear growth would be.

Run: python -m bench.streaming [--users 200] [--tabs 2] [--rate 150] [--tokens 600]
     python -m bench.streaming --curve 200,1000,2000 [--curve-rate 30000] [--tokens 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.common import LOAD_LIMITS_OFF, REPO, Proc, chatwire_argv, cpu_seconds, free_port, ratio, table
from bench.fanout import NODE_DIR, ensure_node_modules


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def run_subject(name: str, src: Path | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    port = free_port()
    full_env = {
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(workdir / f"{name}-data"),
        "CHATWIRE_LOG_LEVEL": "WARNING",
        "CHATWIRE_DEMO_TOKENS_PER_SECOND": str(args.rate),
        # The bench's users are minted as external identities: no password hashing in the set-up.
        "CHATWIRE_EXTERNAL_ALGORITHMS": "HS256",
        "CHATWIRE_EXTERNAL_SECRET": secret,
        **LOAD_LIMITS_OFF,
        **({"PYTHONPATH": str(src)} if src is not None else {}),
        **SUBJECT_ENV.get(name, {}),
    }
    proc = await Proc(chatwire_argv(), full_env, port, workdir / f"{name}.log", cwd=src or REPO).ready()
    try:
        exp = int(time.time()) + 3600
        users: list[dict[str, str]] = []
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as http:
            sem = asyncio.Semaphore(8)

            async def make_user(i: int) -> dict[str, str]:
                token = jwt.encode(
                    {"sub": f"u{i}", "name": f"User {i}", "exp": exp}, secret, algorithm="HS256"
                )
                async with sem:
                    r = await http.post(
                        "/api/v1/chats/new",
                        headers={"Authorization": f"Bearer {token}"},
                        json={"chat": {"title": f"bench {i}"}},
                    )
                r.raise_for_status()
                return {"token": token, "chatId": r.json()["id"], "messageId": uuid.uuid4().hex}

            users = list(await asyncio.gather(*(make_user(i) for i in range(args.users))))
            options = {
                "url": proc.url,
                "tabs": args.tabs,
                "users": users,
                "prompt": f"Please write {args.tokens} tokens about streaming",
                "rate": args.rate,
                "expectTokens": args.tokens,
                "timeoutMs": int((args.tokens / args.rate + 60) * 1000),
            }
            options_file = workdir / f"{name}-tabs.json"
            options_file.write_text(json.dumps(options))
            node = await asyncio.create_subprocess_exec(
                "node",
                str(NODE_DIR / "tabs.mjs"),
                str(options_file),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert node.stdin is not None and node.stdout is not None
            ready = await asyncio.wait_for(node.stdout.readline(), 600)
            if not ready:
                raise RuntimeError(f"tabs.mjs failed: {(await node.stderr.read()).decode()[-2000:]}")  # type: ignore[union-attr]
            await asyncio.sleep(1.0)  # let the connect burst settle
            before_metrics = (await http.get("/metrics")).text
            cpu_before = cpu_seconds(proc.pid)
            node.stdin.write(b"go\n")
            await node.stdin.drain()
            spy = None
            if args.profile:  # py-spy (pip install py-spy) samples the server during the generation
                spy = await asyncio.create_subprocess_exec(
                    "py-spy",
                    "record",
                    "-p",
                    str(proc.pid),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                    "--nonblocking",
                    "-d",
                    str(
                        int(args.tokens / args.rate) * 4 + 10
                    ),  # the whole generation, also when it runs late
                    "-o",
                    str(args.profile / f"{name}.txt"),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            line = await asyncio.wait_for(node.stdout.readline(), options["timeoutMs"] / 1000 + 120)
            cpu_after = cpu_seconds(proc.pid)
            await node.wait()
            if spy is not None:
                await spy.wait()
            if not line:
                raise RuntimeError("tabs.mjs printed no result")
            result: dict[str, Any] = json.loads(line)
            # Wait until the writer has stored everything (queue empty, no new write for a second).
            after_metrics = (await http.get("/metrics")).text
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                now = (await http.get("/metrics")).text
                settled = metric(now, "chatwire_persistence_queue_depth") == 0 and metric(
                    now, "chatwire_persistence_flush_seconds_count"
                ) == metric(after_metrics, "chatwire_persistence_flush_seconds_count")
                after_metrics = now
                if settled:
                    break
    finally:
        proc.stop()
    generated = args.users * args.tokens
    writes = metric(after_metrics, "chatwire_persistence_flush_seconds_count") - metric(
        before_metrics, "chatwire_persistence_flush_seconds_count"
    )
    flush_sum = metric(after_metrics, "chatwire_persistence_flush_seconds_sum") - metric(
        before_metrics, "chatwire_persistence_flush_seconds_sum"
    )
    return {
        **result,
        "generated": generated,
        "cpu_seconds": cpu_after - cpu_before,
        "cpu_us_per_token": (cpu_after - cpu_before) / generated * 1e6,
        "writes": writes,
        "write_seconds": flush_sum,
    }


# name -> the source tree it runs from (None: this checkout). `chatwire-per-token` is this checkout with delta
# coalescing off (one event per token), the peer that shows what coalescing saves.
SUBJECTS: dict[str, Path | None] = {"chatwire": None, "chatwire-per-token": None}
SUBJECT_ENV: dict[str, dict[str, str]] = {"chatwire-per-token": {"CHATWIRE_COMPLETION_COALESCE_MS": "0"}}
if os.environ.get("CHATWIRE_BENCH_BASELINE_SRC"):
    SUBJECTS["chatwire-baseline"] = Path(os.environ["CHATWIRE_BENCH_BASELINE_SRC"])


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


async def curve(args: argparse.Namespace) -> None:
    """chatwire at each number of concurrent generations, at one offered load; one table."""
    points = [int(n) for n in args.curve.split(",")]
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in points:
            point = argparse.Namespace(**{**vars(args), "users": n, "rate": args.curve_rate / n})
            workdir = Path(tmp) / str(n)
            workdir.mkdir()
            results[n] = r = await run_subject("chatwire", None, point, workdir)
            r["rate"] = point.rate
            print(
                f"  {n:5} generations: {r['cpu_us_per_token']:.1f} us CPU/token, p99 {fmt(r['p99'])} ms",
                file=sys.stderr,
            )
    first_n = points[0]
    first = results[first_n]["cpu_us_per_token"]
    rows = []
    for n, r in results.items():
        rows.append(
            [
                f"{n:,}",
                f"{r['tabs']:,}",
                f"{r['rate']:g}",
                f"{r['generated']:,}",
                str(r["missing"]),
                f"{r['cpu_us_per_token']:.1f}",
                f"{r['cpu_us_per_token'] / first:.2f}x",
                f"{n / first_n:.1f}x",
                fmt(r["p50"]),
                fmt(r["p99"]),
            ]
        )
    print(
        f"\nStreaming curve: concurrent demo generations x {args.tabs} tabs, {args.tokens} tokens each, "
        f"{args.curve_rate:,.0f} tokens/s offered in all at every point\n"
    )
    print(
        table(
            [
                "generations",
                "tabs",
                "tokens/s each",
                "tokens",
                "missing",
                "CPU us/token",
                f"CPU/token vs {first_n:,}",
                "linear would be",
                "p50 ms",
                "p99 ms",
            ],
            rows,
        )
    )
    last_n = points[-1]
    growth = results[last_n]["cpu_us_per_token"] / first
    verdict = (
        "constant or better"
        if growth <= 1.1
        else ("sub-linear" if growth < last_n / first_n else "linear or worse")
    )
    print(
        f"\nCPU per token from {first_n:,} to {last_n:,} generations: {growth:.2f}x "
        f"(linear would be {last_n / first_n:.1f}x): {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--tabs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150.0, help="tokens/s of each generation")
    parser.add_argument("--tokens", type=int, default=600, help="tokens per generation")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, help="write py-spy raw profiles of each subject here")
    parser.add_argument(
        "--curve", help="numbers of concurrent generations, e.g. 200,1000,2000 (chatwire only)"
    )
    parser.add_argument(
        "--curve-rate", type=float, default=30_000.0, help="tokens/s offered in all at each curve point"
    )
    args = parser.parse_args()
    ensure_node_modules()
    if args.curve:
        await curve(args)
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.subjects.split(","):
            results[name] = r = await run_subject(name, SUBJECTS[name], args, Path(tmp))
            print(
                f"  {name:20}: {r['tokens']:,} tokens to {r['tabs']} tabs, p99 {fmt(r['p99'])} ms, "
                f"{r['cpu_us_per_token']:.0f} us CPU/token",
                file=sys.stderr,
            )
    ref = "chatwire-baseline" if "chatwire-baseline" in results else "chatwire-per-token"
    base = results.get(ref)
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['generated']:,}",
                f"{r['tokens']:,}",
                str(r["missing"]),
                f"{r['cpu_us_per_token']:.0f}",
                ratio(r["cpu_us_per_token"], base["cpu_us_per_token"]) if base else "-",
                f"{r['deltaEvents'] / max(r['tokens'], 1):.2f}",
                f"{r['framesPerSecond']:,.0f}",
                fmt(r["p50"]),
                fmt(r["p99"]),
                fmt(r["skewP99"]),
                f"{r['writes']:,.0f}",
                f"{r['writes'] / r['generated'] * 1000:.1f}",
            ]
        )
    print(
        f"\nStreaming: {args.users} users x {args.tabs} tabs, one demo generation each of {args.tokens} tokens "
        f"at {args.rate:g} tokens/s, all at once ({args.users * args.rate:,.0f} tokens/s offered)\n"
    )
    print(
        table(
            [
                "subject",
                "tokens generated",
                "tokens delivered",
                "missing",
                "CPU us/token",
                f"CPU vs {ref}",
                "delta events/token",
                "frames/s",
                "p50 ms",
                "p99 ms",
                "tab spread p99 ms",
                "DB writes",
                "writes per 1k tokens",
            ],
            rows,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
