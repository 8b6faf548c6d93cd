"""The persistence benchmark runs and measures what it claims (tiny size; no timing asserted)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.streaming",
            "--users",
            "3",
            "--tokens",
            "30",
            "--rate",
            "100",
            "--subjects",
            "chatwire",
            "--json",
            str(out),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-3000:]
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
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.small_rooms",
            *("--users", "12", "--rounds", "3", "--batch", "5", "--json", str(out)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-3000:]
        results = json.loads(out.read_text())
    for name in ("chatwire", "node"):
        r = results[name]
        assert (r["tabs"], r["rooms"], r["events"]) == (24, 12, 36), name
        assert r["deliveries"] == 72 and r["missing"] == 0 and r["failed"] == 0, name
