"""A fleet behind Redis Sentinel, through a real failover: one primary, one replica, three sentinels (private
child processes on free loopback ports), two chatwire processes, socket clients on both, channel traffic flowing
while the primary is killed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatwire.client.recovery import RecoveringClient
from tests.conftest import postgres_database
from tests.procs import ServerProcess, json_of
from tests.redistopo import SERVICE, SentinelSet, cli
from tests.sio import RecordingClient

pytestmark = pytest.mark.e2e


class Tab:
    """chatwire's recovering client, recording the contents of channel messages and each connect's `recovered`."""

    def __init__(self) -> None:
        self.sio = RecoveringClient(reconnection=False)
        self.contents: list[str] = []
        self.connects: list[bool] = []

        @self.sio.on("events:channel")
        async def channel(data: Any) -> None:
            if data["data"]["type"] == "message":
                self.contents.append(data["data"]["data"]["content"])

        @self.sio.event
        async def connect() -> None:
            self.connects.append(self.sio.recovered)

    async def connect(self, url: str, token: str, takeover: Tab | None = None) -> Tab:
        """Connect; with `takeover`, present that tab's pid and offset (as a client coming back would)."""
        if takeover is not None:
            self.sio._cw_pid, self.sio._cw_offset = takeover.sio._cw_pid, takeover.sio.stream_offset
        await self.sio.connect(
            url,
            auth={"token": token},
            socketio_path="ws/socket.io",
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call("user-join", {"auth": {"token": token}}, timeout=10)
        assert "error" not in ack, ack
        return self


async def until(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def contents(client: RecordingClient, cid: str) -> set[str]:
    return {
        p["data"]["data"]["content"]
        for p in client.received["events:channel"]
        if p["channel_id"] == cid and p["data"]["type"] == "message"
    }


async def test_failover_mid_channel_traffic(tmp_path: Path) -> None:
    """Kill the primary while two users post to a channel through two processes, each user's tab on the other
    process. What holds (each asserted below):
    - the sentinels promote the replica; both processes find it through them (no address of Redis is configured);
    - `/health/ready` answers 503 while the bus is down and 200 once it is subscribed on the new primary;
    - every post acknowledged with 200 (before, during, after the failover) reaches both tabs: a post made while
      Redis is unreachable is refused with 503 and not counted as acknowledged; what a process published while
      the other was still reconnecting is caught up from the event log after its resubscription;
    - a tab coming back with an offset from before the failover is NOT recovered (a new epoch: the promoted replica
      may lack acknowledged writes, so a replay could have a hole), while the same recovery before the failover is.
    """
    topo = SentinelSet().start()
    servers: list[ServerProcess] = []
    tabs: list[Any] = []
    try:
        async with postgres_database() as db_url:
            env = {
                "CHATWIRE_REDIS_URL": "redis://ignored-with-sentinel/0",
                "CHATWIRE_REDIS_SENTINEL_HOSTS": topo.hosts,
                "CHATWIRE_REDIS_SENTINEL_SERVICE": SERVICE,
                "CHATWIRE_REDIS_PREFIX": "cwsentinel:",
                "CHATWIRE_DATABASE_URL": db_url,
                "CHATWIRE_JWT_SECRET": "sentinel-fleet-secret",
                "CHATWIRE_PRESENCE_TTL_SECONDS": "10",
            }
            servers = [ServerProcess(tmp_path / f"p{i}", env, name=f"p{i}") for i in range(2)]
            await servers[0].start()
            await servers[1].start()

            async def signup(name: str, via: int) -> dict[str, Any]:
                async with servers[via].http() as http:
                    body = {"name": name, "email": f"{name.lower()}@example.com", "password": "pw-xxxxxxxx"}
                    return await json_of(await http.post("/api/v1/auths/signup", json=body))

            ada, bob = await signup("Ada", 0), await signup("Bob", 1)
            async with servers[1].http(bob["token"]) as http:
                cid = (
                    await json_of(
                        await http.post(
                            "/api/v1/channels/create",
                            json={"name": "ops", "type": "group", "user_ids": [ada["id"]]},
                        )
                    )
                )["id"]
            a = await RecordingClient(servers[0].url).connect(ada["token"])  # Ada on process 0
            b = await RecordingClient(servers[1].url).connect(bob["token"])  # Bob on process 1
            tabs += [a, b]
            first = await Tab().connect(servers[1].url, ada["token"])  # Ada's recovering tab on process 1
            tabs.append(first)

            acked: list[str] = []
            refused: list[int] = []
            stop = asyncio.Event()

            async def poster() -> None:
                clients = [
                    httpx.AsyncClient(base_url=s.url, headers={"Authorization": f"Bearer {t}"}, timeout=15)
                    for s, t in ((servers[0], ada["token"]), (servers[1], bob["token"]))
                ]
                try:
                    i = 0
                    while not stop.is_set():
                        content = f"m{i}"
                        try:
                            r = await clients[i % 2].post(
                                f"/api/v1/channels/{cid}/messages/post", json={"content": content}
                            )
                            if r.status_code == 200:
                                acked.append(content)
                            else:
                                refused.append(r.status_code)
                        except httpx.HTTPError:
                            refused.append(0)
                        i += 1
                        await asyncio.sleep(0.05)  # pacing: about 15 posts a second
                finally:
                    for c in clients:
                        await c.aclose()

            posting = asyncio.create_task(poster())
            await until("traffic before the failover", lambda: len(acked) >= 10, 30)
            await until("the first tab to receive", lambda: len(first.contents) >= 5, 15)

            # Control: before the failover, a tab coming back with the first tab's pid and offset is recovered.
            second = await Tab().connect(servers[1].url, ada["token"], takeover=first)
            tabs.append(second)
            assert second.connects == [True]
            await until("the second tab to receive", lambda: len(second.contents) >= 3, 15)
            offset_before = second.sio.stream_offset
            assert offset_before is not None
            epoch_before = offset_before.rsplit("-", 1)[0]

            # The failover, in the middle of the traffic.
            old_primary = topo.primary
            acked_before = len(acked)
            topo.kill(old_primary)
            statuses: list[int] = []

            async def ready(via: int) -> int:
                try:
                    async with servers[via].http() as http:
                        return (await http.get("/health/ready", timeout=3)).status_code
                except httpx.HTTPError:
                    return 0

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                statuses.append(await ready(0))
                if 503 in statuses and statuses[-1] == 200:
                    break
                await asyncio.sleep(0.1)
            assert 503 in statuses, statuses[:20]
            assert statuses[-1] == 200, statuses[-20:]
            deadline = time.monotonic() + 30
            while await ready(1) != 200:
                assert time.monotonic() < deadline, "process 1 never ready again"
                await asyncio.sleep(0.1)
            assert topo.current_primary() == topo.replica  # the sentinels promoted the replica
            async with servers[0].http() as http:
                metrics = (await http.get("/metrics")).text
            assert "chatwire_redis_up 1.0" in metrics  # the metric follows the primary too

            # Traffic goes on after the failover.
            await until("traffic after the failover", lambda: len(acked) >= acked_before + 20, 60)
            stop.set()
            await posting
            assert refused, "no post was refused while Redis was down: the failover was not in the traffic"
            assert set(refused) <= {503, 0}, refused

            # No acknowledged message lost, for either tab (each on the process the post did not go through
            # half of the time).
            want = set(acked)
            await until(
                "every acknowledged post on both tabs",
                lambda: want <= contents(a, cid) and want <= contents(b, cid),
                30,
            )

            # Recovery after the failover: a new epoch, not a replay with a possible hole.
            third = await Tab().connect(servers[1].url, ada["token"], takeover=second)
            tabs.append(third)
            assert third.connects == [False]
            async with servers[0].http(ada["token"]) as http:
                await json_of(
                    await http.post(f"/api/v1/channels/{cid}/messages/post", json={"content": "after"})
                )
            await until("the third tab to receive", lambda: "after" in third.contents, 15)
            assert third.sio.stream_offset is not None
            assert not third.sio.stream_offset.startswith(epoch_before + "-")
            # The epoch stored on the promoted replica is a new one, begun once for the fleet.
            assert cli(topo.replica, "get", "cwsentinel:log:epoch") not in ("", epoch_before)
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                await (tab.close() if isinstance(tab, RecordingClient) else tab.sio.disconnect())
        for s in servers:
            s.stop()
        topo.stop()
