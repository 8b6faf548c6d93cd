"""Soak: many browser tabs with mixed traffic against one real chatwire process, then every byte checked.

The orchestrator starts `chatwire serve`, creates users (several tabs each), group channels, one chat and one note
per user, and runs tests/node/soak.mjs (official socket.io-client tabs: typing, channel posts over REST, demo
generations streamed to user rooms, Yjs edits of the notes). It samples the server's RSS when every tab is
connected and when the traffic is over, counts error lines in the server's log, and compares:
- every generation: what the demo model emitted (deterministic for its prompt) == the stored message (done) ==
  what each tab of its user rebuilt;
- every channel: the posts the server acknowledged == the stored messages == what each member tab received;
- every note: the inserts of its tabs == the server's document state == each tab's document.

With `--trace-memory SECONDS` the server runs under Python's allocation tracer (bench/traced_serve.py) and writes a
heap snapshot every SECONDS; the report then lists the allocation sites (file:line) and object types that grew most
between the snapshot after warm-up (`--warmup` minutes after every tab connected) and the last one. Tracing costs
memory and CPU of its own, so a traced run's RSS is higher than an untraced one's.

Usage: python bench/soak.py --clients 2000 --minutes 10 [--postgres] [--trace-memory 60]   (`make soak`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    Proc,
    chatwire_argv,
    free_port,
    fresh_postgres,
    rss_bytes,
    server_env,
    trace_env,
)
from chatwire.services.models import demo_answer

NODE_DIR = REPO / "tests" / "node"

# Mean seconds between two actions of one tab: a person types now and then, posts every few minutes, asks the
# model every few minutes and edits a shared note; with 5 tabs a user, a user asks about once every 36 s.
DEFAULT_RATES = {"typing": 30.0, "post": 120.0, "generate": 180.0, "edit": 20.0}


@dataclass
class SoakResult:
    """What a soak run measured; `mismatches` and `errors` must be 0."""

    clients: int
    users: int
    channels: int
    minutes: float
    database: str
    connected: int = 0
    events_received: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    generations_checked: int = 0
    channel_messages_checked: int = 0
    note_inserts_checked: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_samples_mb: list[tuple[int, float]] = field(
        default_factory=list
    )  # (seconds since start, MB), every 30 s
    server_cpu_seconds: float = 0.0
    mismatches: int = 0
    errors: int = 0
    server_log_errors: int = 0
    details: list[str] = field(default_factory=list)
    heap: dict[str, Any] = field(default_factory=dict)  # with trace_memory: see heap_growth()

    def summary(self) -> str:
        return (
            f"soak: clients={self.clients} (connected {self.connected}) users={self.users} "
            f"channels={self.channels} minutes={self.minutes:g} db={self.database} "
            f"events={self.events_received} actions={sum(self.actions.values())} "
            f"(typing {self.actions.get('typing', 0)}, posts {self.actions.get('posts', 0)}, "
            f"generations {self.actions.get('generations', 0)}, edits {self.actions.get('edits', 0)}) "
            f"rss_start={self.rss_start_mb:.0f}MB rss_end={self.rss_end_mb:.0f}MB rss_max={self.rss_max_mb:.0f}MB "
            f"server_cpu={self.server_cpu_seconds:.0f}s checked=(generations {self.generations_checked}, "
            f"channel messages {self.channel_messages_checked}, note inserts {self.note_inserts_checked}) "
            f"mismatches={self.mismatches} "
            f"errors={self.errors} server_log_errors={self.server_log_errors}"
        )


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TRACE_EXCLUDE = (
    tracemalloc.__file__,
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
)


def _short(filename: str) -> str:
    """A traced file's name relative to the repository or to site-packages."""
    for marker in ("/site-packages/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _trace_growth(
    base_path: Path, end_path: Path, top: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The allocation sites (file:line) and stacks whose traced bytes grew most from one snapshot to the other."""
    filters = [tracemalloc.Filter(False, pattern) for pattern in TRACE_EXCLUDE]
    base = tracemalloc.Snapshot.load(str(base_path)).filter_traces(filters)
    end = tracemalloc.Snapshot.load(str(end_path)).filter_traces(filters)
    sites = [
        {
            "site": f"{_short(d.traceback[0].filename)}:{d.traceback[0].lineno}",
            "grew_kib": round(d.size_diff / 1024, 1),
            "blocks_grew": d.count_diff,
            "kib_at_end": round(d.size / 1024, 1),
        }
        for d in end.compare_to(base, "lineno")[:top]
    ]
    stacks = [
        {
            "grew_kib": round(d.size_diff / 1024, 1),
            "blocks_grew": d.count_diff,
            "stack": [f"{_short(f.filename)}:{f.lineno}" for f in d.traceback],
        }
        for d in end.compare_to(base, "traceback")[:5]
    ]
    return sites, stacks


def heap_growth(trace_dir: Path, warm_unix_ms: float, top: int = 15) -> dict[str, Any]:
    """What grew in the traced server's heap between the first snapshot at or after `warm_unix_ms` and the last
    one: the top allocation sites (file:line, by bytes), the top stacks, and the object types whose count grew."""
    snaps = sorted(trace_dir.glob("snap-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if len(snaps) < 2:
        return {"error": f"{len(snaps)} heap snapshot(s) in {trace_dir}: need two"}
    stamps = [int(p.stem.split("-")[1]) for p in snaps]
    base_i = next((i for i, t in enumerate(stamps) if t >= warm_unix_ms), 0)
    base_i = min(base_i, len(snaps) - 2)
    sites: list[dict[str, Any]] = []
    stacks: list[dict[str, Any]] = []
    traces = [snaps[base_i].with_suffix(".tracemalloc"), snaps[-1].with_suffix(".tracemalloc")]
    if all(p.exists() for p in traces):  # the tracer was on (not the object census alone)
        sites, stacks = _trace_growth(traces[0], traces[1], top)
    census = [json.loads(p.read_text()) for p in (snaps[base_i], snaps[-1])]
    before = dict(census[0]["types"])
    types = sorted(
        ((name, count - before.get(name, 0), count) for name, count in census[1]["types"]),
        key=lambda t: -t[1],
    )
    traced = []
    native = []
    for p in snaps:
        info = json.loads(p.read_text())
        seconds = round((info["unix_ms"] - warm_unix_ms) / 1000)
        traced.append((seconds, round(info["traced_bytes"] / 2**20, 1)))
        if "native" in info:
            row = {k: round(v / 2**20, 1) for k, v in info["native"].items()}
            row["traced"] = round(info["traced_bytes"] / 2**20, 1)
            if "rss_after_trim" in info:
                row["rss_after_trim"] = round(info["rss_after_trim"] / 2**20, 1)
            native.append((seconds, row))
    return {
        "base_seconds_after_warmup": round((stamps[base_i] - warm_unix_ms) / 1000),
        "span_seconds": round((stamps[-1] - stamps[base_i]) / 1000),
        "traced_mb": traced,  # (seconds after warm-up, MB the tracer saw allocated)
        "native_mb": native,  # (seconds after warm-up, {where: MB}): bench/traced_serve.py native_memory()
        "sites": sites,
        "stacks": stacks,
        "types": [{"type": n, "grew": g, "at_end": c} for n, g, c in types[:12] if g > 0],
        # pending asyncio tasks (count, and the wait points of the last snapshot) and the collector's runs
        "tasks": [census[0].get("tasks"), census[1].get("tasks")],
        "task_wait_points": census[1].get("task_wait_points", [])[:12],
        "gc": [census[0].get("gc"), census[1].get("gc")],
    }


def heap_report(heap: dict[str, Any]) -> list[str]:
    """The heap profile as text lines for the console."""
    if "error" in heap:
        return [f"heap profile: {heap['error']}"]
    lines = [
        f"heap profile: {heap['span_seconds']} s from the snapshot {heap['base_seconds_after_warmup']} s after "
        "warm-up to the last one",
        "  traced MB over time (s after warm-up, MB): " + " ".join(f"{t}:{m}" for t, m in heap["traced_mb"]),
    ]
    lines += native_report(heap.get("native_mb", []))
    if not heap["sites"]:
        lines.append("  (the tracer was off: the object census only)")
    lines.append("  allocation sites that grew most (KiB grown, blocks grown, KiB at end):")
    lines += [
        f"    {s['grew_kib']:>9} {s['blocks_grew']:>8} {s['kib_at_end']:>9}  {s['site']}"
        for s in heap["sites"]
    ]
    lines.append("  stacks that grew most:")
    for s in heap["stacks"]:
        lines.append(
            f"    {s['grew_kib']} KiB, {s['blocks_grew']} blocks: " + " <- ".join(reversed(s["stack"]))
        )
    lines.append("  object types whose count grew (grew, at end):")
    lines += [f"    {t['grew']:>8} {t['at_end']:>8}  {t['type']}" for t in heap["types"]]
    lines.append(
        f"  pending tasks (base, last): {heap['tasks'][0]}, {heap['tasks'][1]}; where they wait (last):"
    )
    lines += [f"    {count:>8}  {where}" for where, count in heap["task_wait_points"]]
    if heap["gc"][1]:
        runs = [[g["collections"] for g in snap] if snap else None for snap in heap["gc"]]
        lines.append(f"  gc collections per generation (base, last): {runs[0]}, {runs[1]}")
    return lines


NATIVE_COLUMNS = (
    ("rss", "rss"),
    ("rss_anon", "anon"),
    ("traced", "traced"),
    ("pymalloc_arena_bytes", "pym_arenas"),
    ("pymalloc_allocated_bytes", "pym_used"),
    ("malloc_in_use", "malloc_used"),
    ("malloc_free", "malloc_free"),
    ("malloc_mmapped", "mmapped"),
    ("malloc_threads_system", "thread_arenas"),
    ("malloc_threads_free", "thread_free"),
    ("sqlite_used", "sqlite"),
    ("tracer_overhead", "tracer"),
    ("rss_after_trim", "rss_trimmed"),
)


def native_report(native: list[tuple[int, dict[str, float]]]) -> list[str]:
    """Where RSS sits at each snapshot (MB): pymalloc's arenas, glibc malloc in use and free-but-kept, SQLite."""
    if not native:
        return []
    columns = [(key, label) for key, label in NATIVE_COLUMNS if any(key in row for _, row in native)]
    lines = ["  memory by owner (MB; s after warm-up): " + " ".join(label for _, label in columns)]
    lines += [
        f"    {t:>6} " + " ".join(f"{row.get(key, 0):>{len(label)}}" for key, label in columns)
        for t, row in native
    ]
    return lines


async def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return response.json()


async def _setup(url: str, users: int, tabs_per_user: int, users_per_channel: int) -> dict[str, Any]:
    """Users (signed up 4 at a time), one chat and one note each, group channels of `users_per_channel`."""
    run = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def user(i: int) -> dict[str, Any]:
            async with gate:
                u = await _ok(
                    await http.post(
                        "/api/v1/auths/signup",
                        json={"name": f"U{i}", "email": f"u{i}-{run}@example.com", "password": "pw-soak-123"},
                    )
                )
                auth = {"Authorization": f"Bearer {u['token']}"}
                chat = await _ok(
                    await http.post("/api/v1/chats/new", json={"chat": {"title": "soak"}}, headers=auth)
                )
                note = await _ok(
                    await http.post("/api/v1/notes/create", json={"title": "soak"}, headers=auth)
                )
                return {"id": u["id"], "token": u["token"], "chat_id": chat["id"], "note_id": note["id"]}

        people = await asyncio.gather(*(user(i) for i in range(users)))
        channels: dict[str, list[int]] = {}
        for start in range(0, users, users_per_channel):
            group = list(range(start, min(users, start + users_per_channel)))
            owner = people[group[0]]
            channel = await _ok(
                await http.post(
                    "/api/v1/channels/create",
                    json={
                        "name": f"soak-{start}",
                        "type": "group",
                        "user_ids": [people[j]["id"] for j in group],
                    },
                    headers={"Authorization": f"Bearer {owner['token']}"},
                )
            )
            channels[channel["id"]] = group
    channels_of: dict[int, list[str]] = defaultdict(list)
    for cid, group in channels.items():
        for j in group:
            channels_of[j].append(cid)
    tabs = [
        {
            "user": people[i]["id"],
            "token": people[i]["token"],
            "chatId": people[i]["chat_id"],
            "noteId": people[i]["note_id"],
            "channelIds": channels_of[i],
        }
        for i in range(users)
        for _ in range(tabs_per_user)
    ]
    return {"people": people, "channels": channels, "tabs": tabs}


async def _channel_messages(http: httpx.AsyncClient, cid: str, token: str) -> list[str]:
    contents: list[str] = []
    skip = 0
    while True:
        page = await _ok(
            await http.get(
                f"/api/v1/channels/{cid}/messages",
                params={"skip": skip, "limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        contents.extend(m["content"] for m in page)
        if len(page) < 1000:
            return contents
        skip += len(page)


async def _compare(url: str, setup: dict[str, Any], result: dict[str, Any], res: SoakResult) -> None:
    def mismatch(what: str) -> None:
        res.mismatches += 1
        if len(res.details) < 30:
            res.details.append(what)

    tabs = result["tabs"]
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tab in tabs:
        by_user[tab["user"]].append(tab)
    people = {p["id"]: p for p in setup["people"]}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        # Chats: emitted == stored == rebuilt by every tab of the user.
        for uid, user_tabs in by_user.items():
            generations = [g for tab in user_tabs for g in tab["generations"]]
            if not generations:
                continue
            person = people[uid]
            chat = await _ok(
                await http.get(
                    f"/api/v1/chats/{person['chat_id']}",
                    headers={"Authorization": f"Bearer {person['token']}"},
                )
            )
            stored = chat["chat"]["history"]["messages"]
            for g in generations:
                expected = "".join(demo_answer(g["prompt"]))
                row = stored.get(g["messageId"])
                res.generations_checked += 1
                if row is None or row.get("content") != expected or not row.get("done"):
                    mismatch(f"stored message {g['messageId']} differs from what was emitted")
                key = f"{g['chatId']}/{g['messageId']}"
                for tab in user_tabs:
                    seen = tab["messages"].get(key)
                    if tab["connected"] and (seen is None or seen["content"] != expected or not seen["done"]):
                        mismatch(f"a tab of {uid} rebuilt {g['messageId']} differently")
        # Channels: acknowledged posts == stored == received by every member tab.
        posted: dict[str, list[str]] = defaultdict(list)
        for tab in tabs:
            for p in tab["posts"]:
                posted[p["channelId"]].append(p["content"])
        for cid, group in setup["channels"].items():
            want = sorted(posted.get(cid, []))
            token = setup["people"][group[0]]["token"]
            stored_posts = sorted(await _channel_messages(http, cid, token))
            res.channel_messages_checked += len(want)
            if stored_posts != want:
                diff = Counter(stored_posts) - Counter(want) + (Counter(want) - Counter(stored_posts))
                for _ in range(max(1, sum(diff.values()))):
                    mismatch(f"channel {cid}: stored messages differ from the posts")
            members = {setup["people"][j]["id"] for j in group}
            for tab in tabs:
                if tab["user"] in members and tab["connected"]:
                    if sorted(tab["channelMessages"].get(cid, [])) != want:
                        mismatch(f"a tab of {tab['user']} missed messages of channel {cid}")
    # Notes: every insert is in the server's document, and every tab holds the same document.
    inserts: dict[str, list[str]] = defaultdict(list)
    for tab in tabs:
        inserts[tab["noteId"]].extend(tab["inserts"])
    for note_id, tokens in inserts.items():
        server_doc = result["noteStates"].get(note_id)
        res.note_inserts_checked += len(tokens)
        if server_doc is None or sorted(server_doc) != sorted(tokens):
            mismatch(f"note {note_id}: server document differs from the inserts")
        for tab in tabs:
            if tab["noteId"] == note_id and tab["connected"] and tab["doc"] != server_doc:
                mismatch(f"note {note_id}: a tab's document differs from the server's")


async def run_soak(
    clients: int,
    minutes: float,
    workdir: Path,
    *,
    database_url: str = "",
    tabs_per_user: int = 5,
    users_per_channel: int = 10,
    rates: dict[str, float] | None = None,
    progress: bool = False,
    trace_memory: float = 0.0,
    trace_frames: int = 6,
    warmup_minutes: float = 2.0,
) -> SoakResult:
    """Run one soak against a fresh server process; returns what it measured (asserts nothing). With
    `trace_memory` > 0 the server is traced (a heap snapshot every that many seconds) and `heap` is filled."""
    users = max(1, clients // tabs_per_user)
    clients = users * tabs_per_user
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    log_path = workdir / "server.log"
    env = {
        **server_env(port, workdir),
        "CHATWIRE_LOG_FORMAT": "json",
        "CHATWIRE_DATABASE_URL": database_url,
        # Every tab connects from 127.0.0.1, where real users come from many addresses: the per-IP limits (50
        # connects/s, 1,000 events/s by default) would refuse most of the connect wave, so they are off here.
        "CHATWIRE_RATE_LIMIT_IP_CONNECTS": "0",
        "CHATWIRE_HTTP_MAX_PENDING_PER_IP": "0",
        "CHATWIRE_RATE_LIMIT_IP_EVENTS": "0",
    }
    argv = chatwire_argv()
    trace_dir = workdir / "heap"
    if trace_memory > 0:
        argv = [sys.executable, "-m", "bench.traced_serve"]
        env.update(trace_env(trace_dir, trace_memory, trace_frames))
    server = Proc(argv, env, port, log_path)
    res = SoakResult(
        clients=clients,
        users=users,
        channels=0,
        minutes=minutes,
        database="postgresql" if database_url.startswith("postgresql") else "sqlite",
    )
    try:
        await server.ready("/health", timeout=60)
        setup = await _setup(server.url, users, tabs_per_user, users_per_channel)
        res.channels = len(setup["channels"])
        config_path, result_path = workdir / "soak-config.json", workdir / "soak-result.json"
        config_path.write_text(
            json.dumps(
                {
                    "url": server.url,
                    "seconds": minutes * 60,
                    "seed": 7,
                    "rates": rates or DEFAULT_RATES,
                    "tabs": setup["tabs"],
                }
            )
        )
        node = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "soak.mjs"),
            str(config_path),
            str(result_path),
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=(workdir / "node.log").open("wb"),
        )
        assert node.stdout is not None
        cpu_start = 0.0
        connected_unix_ms = time.time() * 1000
        sampler: asyncio.Task[None] | None = None

        async def sample() -> None:
            started = time.monotonic()
            last = -30.0
            while True:
                now = rss_mb(server.pid)
                res.rss_max_mb = max(res.rss_max_mb, now)
                elapsed = time.monotonic() - started
                if elapsed - last >= 30:
                    res.rss_samples_mb.append((round(elapsed), round(now)))
                    last = elapsed
                await asyncio.sleep(2)

        while line := await node.stdout.readline():
            event = json.loads(line)
            if progress:
                print(f"[{time.strftime('%H:%M:%S')}] {json.dumps(event)[:300]}", flush=True)
            if event["event"] == "connected":
                res.connected = event["ok"]
                connected_unix_ms = time.time() * 1000
                if trace_memory > 0:
                    os.kill(server.pid, signal.SIGUSR1)  # bench/traced_serve.py: start tracing now
                res.rss_start_mb = rss_mb(server.pid)
                cpu_start = cpu_seconds(server.pid)
                sampler = asyncio.create_task(sample())
            elif event["event"] == "finished":
                res.rss_end_mb = rss_mb(server.pid)
                res.server_cpu_seconds = cpu_seconds(server.pid) - cpu_start
        if sampler is not None:
            sampler.cancel()
        if await node.wait() != 0 or not result_path.exists():
            raise RuntimeError(f"soak.mjs failed: {(workdir / 'node.log').read_text()[-3000:]}")
        result = json.loads(result_path.read_text())
        counts = result["counts"]
        res.events_received = counts["eventsReceived"]
        res.actions = {k: counts[k] for k in ("typing", "posts", "generations", "edits")}
        res.errors = counts.get("errorsTotal", 0) + (clients - res.connected)
        res.details.extend(f"client error: {e}" for e in result["errors"][:20])
        await _compare(server.url, setup, result, res)
    finally:
        server.stop()
    if trace_memory > 0:
        res.heap = heap_growth(trace_dir, connected_unix_ms + warmup_minutes * 60_000)
    for log_line in log_path.read_text(errors="replace").splitlines():
        if '"level": "error"' in log_line or '"level": "critical"' in log_line or "Traceback" in log_line:
            res.server_log_errors += 1
            if len(res.details) < 40:
                res.details.append(f"server log: {log_line[:300]}")
    return res


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--postgres", action="store_true", help="a fresh database on the shared PostgreSQL")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--trace-memory",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="trace the server's allocations, a heap snapshot every SECONDS; report what grew (0 = off)",
    )
    parser.add_argument(
        "--trace-frames",
        type=int,
        default=6,
        help="with --trace-memory: stack frames per traced allocation; 0 = no tracer, object-type census only",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="minutes after every tab connected before the base snapshot"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="chatwire-soak-"))
    print(f"soak: {args.clients} clients for {args.minutes:g} min; logs in {workdir}", flush=True)
    options: dict[str, Any] = {
        "progress": True,
        "trace_memory": args.trace_memory,
        "trace_frames": args.trace_frames,
        "warmup_minutes": args.warmup,
    }
    if args.postgres:
        async with fresh_postgres() as url:
            res = await run_soak(args.clients, args.minutes, workdir, database_url=url, **options)
    else:
        res = await run_soak(args.clients, args.minutes, workdir, **options)
    for line in res.details:
        print("  " + line)
    print(
        "rss samples (s after every tab connected, MB): "
        + " ".join(f"{t}:{m}" for t, m in res.rss_samples_mb)
    )
    if res.heap:
        print("\n".join(heap_report(res.heap)))
    print(res.summary(), flush=True)
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2))
    sys.exit(0 if res.mismatches == 0 and res.errors == 0 and res.server_log_errors == 0 else 1)


if __name__ == "__main__":
    asyncio.run(main())
