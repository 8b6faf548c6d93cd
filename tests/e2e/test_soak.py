"""The short soak inside `make test`: 300 tabs for one minute of mixed traffic, every byte checked (bench/soak.py).

RSS bound: the tabs' sessions are connected before the first sample, so growth comes from what the traffic leaves
behind. What may legitimately stay is small: the recovery history of one minute (about 10,000 emitted events of
well under 1 KB), 60 notes of a few hundred short inserts, the channel rows cached nowhere. 40 MB is several times
that, yet a leak of half a kilobyte per delivered event (about 78,000 in this run) would cross it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.e2e

RSS_GROWTH_BOUND_MB = 40


async def test_soak_300_clients_one_minute(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    res = await run_soak(300, 1.0, tmp_path / "soak")
    print(res.summary())
    assert res.connected == res.clients == 300
    assert res.errors == 0 and res.server_log_errors == 0, res.details
    assert res.mismatches == 0, res.details
    # The comparisons ran on real traffic, not on nothing.
    assert (
        res.generations_checked > 20 and res.channel_messages_checked > 20 and res.note_inserts_checked > 100
    )
    assert res.rss_end_mb - res.rss_start_mb < RSS_GROWTH_BOUND_MB, res.summary()
