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
