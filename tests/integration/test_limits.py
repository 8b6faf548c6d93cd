"""Per-IP connect and event limits and the per-user connection limit, through real sockets; the per-user limit
also across two fleet members sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from chatwire.config import Settings
from chatwire.transport.limits import IpLimiter
from tests.conftest import REDIS_URL, run_server, service_unavailable
from tests.sio import RecordingClient


async def refused(url: str, token: str | None = None) -> Any:
    """Connect and expect a refusal; returns the connect_error data."""
    client = RecordingClient(url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(token)
    await client.close()
    assert client.connect_error is not None
    return client.connect_error


async def test_connects_per_ip_are_rate_limited(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_limit_ip_connects": 0.5, "rate_limit_ip_connect_burst": 3})
    async with run_server(tight) as server:
        ada = await server.signup("Ada")
        clients = [await RecordingClient(server.url).connect(ada["token"]) for _ in range(3)]
        try:
            error = await refused(server.url, ada["token"])
            assert error["data"]["code"] == "rate_limited"
            error = await refused(server.url)  # anonymous connects count too
            assert error["data"]["code"] == "rate_limited"
            # The sessions already open keep working.
            assert all([await c.call("heartbeat", {}) is None for c in clients])
        finally:
            for c in clients:
                await c.close()


async def test_events_per_ip_are_shared_by_its_sessions(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_limit_ip_events": 1.0, "rate_limit_ip_event_burst": 6})
    async with run_server(tight) as server:
        ada, bob = await server.signup("Ada"), await server.signup("Bob")
        a = await RecordingClient(server.url).connect(ada["token"])  # user-join: 1 event
        b = await RecordingClient(server.url).connect(bob["token"])  # 2
        try:
            acks = [await a.call("heartbeat", {}) for _ in range(2)] + [
                await b.call("heartbeat", {}) for _ in range(4)
            ]
            assert acks[:4] == [None] * 4
            assert [x["error"]["code"] for x in acks[4:]] == ["rate_limited"] * 2
            assert (await a.call("heartbeat", {}))["error"]["code"] == "rate_limited"
            assert a.sio.connected and b.sio.connected
            await asyncio.sleep(1.2)
            assert await a.call("heartbeat", {}) is None
        finally:
            await a.close()
            await b.close()


async def test_connections_per_user_are_limited(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_connections_per_user": 2})
    async with run_server(tight) as server:
        ada, bob = await server.signup("Ada"), await server.signup("Bob")
        first = await RecordingClient(server.url).connect(ada["token"])
        second = await RecordingClient(server.url).connect(ada["token"])
        try:
            error = await refused(server.url, ada["token"])
            assert error["data"]["code"] == "too_many_connections"
            # An anonymous session cannot get round it with user-join.
            anon = await RecordingClient(server.url).connect()
            ack = await anon.call("user-join", {"auth": {"token": ada["token"]}})
            assert ack["error"]["code"] == "too_many_connections"
            await anon.close()
            # user-join on a session that already belongs to Ada is not a new connection.
            assert "error" not in await first.call("user-join", {"auth": {"token": ada["token"]}})
            # Another user is not affected; a closed session frees its place.
            other = await RecordingClient(server.url).connect(bob["token"])
            await other.close()
            await second.close()
            for _ in range(50):
                if len(await server.services.sessions.sids_of(ada["id"])) < 2:
                    break
                await asyncio.sleep(0.05)
            third = await RecordingClient(server.url).connect(ada["token"])
            await third.close()
        finally:
            await first.close()
            await second.close()


async def test_connections_per_user_count_every_fleet_member(settings: Settings) -> None:
    probe = aioredis.Redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except Exception as exc:
        service_unavailable("Redis", exc)
    prefix = f"cwlimits:{uuid.uuid4().hex[:8]}:"
    fleet = settings.model_copy(
        update={"redis_url": REDIS_URL, "redis_prefix": prefix, "max_connections_per_user": 2}
    )
    try:
        # Two members sharing Redis and one SQLite file (same data_dir, so the same JWT secret).
        async with run_server(fleet) as p0, run_server(fleet) as p1:
            ada = await p0.signup("Ada")
            a0 = await RecordingClient(p0.url).connect(ada["token"])
            a1 = await RecordingClient(p1.url).connect(ada["token"])
            try:
                for url in (p0.url, p1.url):
                    error = await refused(url, ada["token"])
                    assert error["data"]["code"] == "too_many_connections"
            finally:
                await a0.close()
                await a1.close()
    finally:
        with contextlib.suppress(Exception):
            keys = [k async for k in probe.scan_iter(match=prefix + "*")]
            if keys:
                await probe.delete(*keys)
        await probe.aclose()


def test_ip_table_is_bounded_and_forgets_idle_ips() -> None:
    limiter = IpLimiter(rate=10.0, burst=2, max_entries=100)
    for i in range(1000):
        assert limiter.take(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(limiter) <= 100
    assert limiter.take("1.1.1.1", now=0.0) and limiter.take("1.1.1.1", now=0.0)
    assert not limiter.take("1.1.1.1", now=0.0)
    assert limiter.take("1.1.1.1", now=0.1)  # refilled one token
    # Idle for longer than a full refill: forgotten at the next sweep, bucket behaves as new.
    limiter.take("2.2.2.2", now=100.0)
    assert len(limiter) == 1
    assert IpLimiter(rate=0.0, burst=1).take("x") and not IpLimiter(rate=0.0, burst=1).enabled


async def test_cors_allows_only_the_configured_origins(settings: Settings) -> None:
    """REST preflights and the Socket.IO handshake honour CHATWIRE_CORS_ORIGINS."""
    app_origin, evil = "https://app.example", "https://evil.example"
    async with run_server(settings.model_copy(update={"cors_origins": [app_origin]})) as server:
        ada = await server.signup("Ada")
        async with server.http() as http:
            preflight = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            }
            good = await http.options("/api/v1/channels/create", headers={"Origin": app_origin, **preflight})
            bad = await http.options("/api/v1/channels/create", headers={"Origin": evil, **preflight})
            assert good.headers.get("access-control-allow-origin") == app_origin
            assert bad.headers.get("access-control-allow-origin") is None
            r = await http.get(
                "/api/v1/auths/", headers={"Origin": evil, "Authorization": f"Bearer {ada['token']}"}
            )
            assert (
                r.headers.get("access-control-allow-origin") is None
            )  # the browser will not show it to evil
        # The websocket handshake from a foreign origin is refused; from the app's origin it opens.
        for origin, accepted in ((evil, False), (app_origin, True)):
            client = socketio.AsyncClient(reconnection=False)
            try:
                await client.connect(
                    server.url,
                    headers={"Origin": origin},
                    auth={"token": ada["token"]},
                    socketio_path="ws/socket.io",
                    transports=["websocket"],
                    wait_timeout=5,
                )
                assert accepted, f"{origin} was let in"
            except socketio.exceptions.ConnectionError:
                assert not accepted, f"{origin} was refused"
            finally:
                await client.disconnect()
