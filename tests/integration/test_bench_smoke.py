"""The persistence benchmark runs and measures what it claims (tiny size; no timing asserted)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def run_module(*args: str, timeout: float = 240) -> str:
    """`python -m ARGS` from the repository root; its stdout (fails the test on a non-zero exit)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


async def test_persistence_bench_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "persistence.py"),
        "--tokens",
        "60",
        "--history",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("One answer of 60 tokens")
    naive = next(line for line in lines if line.startswith("| naive"))
    assert naive.split("|")[2].strip() == "61"  # one write per event: 60 deltas and done


async def test_streaming_bench_counts_every_token_and_the_writes() -> None:
    """Tiny streaming run: every token reaches both tabs of every user, and the writes come from /metrics."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "streaming.json"
        await run_module(
            "bench.streaming", "--users", "3", "--tokens", "30", "--rate", "100", "--subjects", "chatwire",
            "--json", str(out),
        )  # fmt: skip
        result = json.loads(out.read_text())["chatwire"]
    assert result["tabs"] == 6 and result["completed"] == 6
    assert result["generated"] == 90 and result["tokens"] == 180 and result["missing"] == 0
    assert result["writes"] >= 3  # at least one write per message
    assert result["cpu_seconds"] > 0 and result["p99"] is not None


async def test_small_rooms_bench_delivers_every_event_to_every_tab_on_both_servers() -> None:
    """Tiny many-small-rooms run: each user's two tabs get every event, on chatwire and on the Node peer."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rooms.json"
        await run_module(
            "bench.small_rooms", *("--users", "12", "--rounds", "3", "--batch", "5", "--json", str(out))
        )
        results = json.loads(out.read_text())
    for name in ("chatwire", "node"):
        r = results[name]
        assert (r["tabs"], r["rooms"], r["events"]) == (24, 12, 36), name
        assert r["deliveries"] == 72 and r["missing"] == 0 and r["failed"] == 0, name


async def test_idle_bench_holds_every_connection() -> None:
    """Tiny idle run: every raw client completes the authenticated handshake and `user-join`, and is still open
    after the window; memory and CPU are reported (their size is not asserted)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "idle.json"
        stdout = await run_module(
            "bench.idle", "--n", "40", "--users", "2", "--window", "2", "--subjects", "chatwire",
            "--json", str(out),
        )  # fmt: skip
        data = json.loads(out.read_text())
    result = data["results"]["chatwire"]["40"]
    assert result["connected"] == 40 and result["failed"] == 0, result["errors"]
    assert result["held"] == 40 and result["closed_by_server"] == 0
    assert result["rss_after"] > 0 and result["idle_cpu_percent"] >= 0
    assert "RLIMIT_NOFILE" in data["limit"] and "| chatwire" in stdout
