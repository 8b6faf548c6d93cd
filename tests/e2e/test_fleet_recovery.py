"""Recovery across a fleet: the official Node client loses its line to process 0 and comes back through process 1,
which finds the parked session and the missed events in the shared Redis log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.e2e.test_recovery_node import NodeClient
from tests.integration.test_fleet import Fleet, fleet_of, require_redis
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.e2e


async def publish(fleet: Fleet, key: str, room: str, start: int, stop: int, over: float = 0.0) -> None:
    """`events {n}` to `room` for n in [start, stop), alternately through each process's server API."""
    pause = over / max(1, stop - start)
    clients = [
        httpx.AsyncClient(base_url=s.url, headers={"X-API-Key": key}, timeout=10) for s in fleet.servers
    ]
    try:
        for n in range(start, stop):
            r = await clients[n % len(clients)].post(
                "/api/v1/events/publish", json={"room": room, "event": "events", "data": {"n": n}}
            )
            assert r.status_code == 200, r.text
            if pause:
                await asyncio.sleep(pause)
    finally:
        for c in clients:
            await c.aclose()


async def test_official_client_recovers_on_another_process(tmp_path: Path) -> None:
    await require_redis()
    async with fleet_of(2, tmp_path, REDIS_URL) as fleet:
        key = fleet.api_key("publish")
        user = await fleet.signup("Ada")
        room = f"user:{user['id']}"
        proxy = await CuttableProxy(fleet.servers[0].port).start()
        client = await NodeClient.start(proxy.url, user["token"])
        try:
            await client.wait(lambda c: len(c.of("joined")) == 1)
            await publish(fleet, key, room, 0, 100)
            await client.wait(lambda c: len(c.of("event")) == 100)

            await proxy.cut()
            await publish(fleet, key, room, 100, 400, over=5.0)
            proxy.target = fleet.servers[1].port  # the load balancer sends it elsewhere this time
            await proxy.restore()
            await client.wait(lambda c: len(c.of("connect")) == 2)
            await publish(fleet, key, room, 400, 450)
            await client.wait(lambda c: len(c.of("event")) >= 450)
            await asyncio.sleep(0.3)  # nothing extra may follow

            assert [c["recovered"] for c in client.of("connect")] == [False, True]
            assert [e["n"] for e in client.of("event")] == list(range(450))
            seqs = [int(e["rest"][-1].rsplit("-", 1)[1]) for e in client.of("event")]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        finally:
            await client.close()
            await proxy.close()
