"""The connect path's caches (services/auth_cache.py): a warm connect reads neither users nor revoked tokens from
the database, and every change that matters still takes effect at once: sign-out (here and on another fleet
process), a role change to `pending`, a change written by another process."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
import socketio
from sqlalchemy import event

from chatwire.config import Settings
from tests.conftest import REDIS_URL, RunningServer, postgres_database, run_server
from tests.integration.test_fleet import require_redis
from tests.sio import RecordingClient


@contextlib.contextmanager
def auth_reads(server: RunningServer) -> Iterator[list[str]]:
    """The SQL statements on the users and revoked-token tables while the block runs (real engine events)."""
    with statements(server, "revoked_tokens", "from users") as seen:
        yield seen


@contextlib.contextmanager
def statements(server: RunningServer, *needles: str) -> Iterator[list[str]]:
    """The SQL statements holding any of `needles` (lower case) while the block runs (real engine events)."""
    seen: list[str] = []
    engine = server.services.auth.users.db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        low = statement.lower()
        if any(needle in low for needle in needles):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def refused(url: str, token: str) -> Any:
    """The connect_error payload of a connect that must be refused."""
    client = RecordingClient(url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(token)
    return client.connect_error


async def test_warm_connect_reads_no_user_or_revocation_row(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    first = await RecordingClient(server.url).connect(ada["token"])
    await first.close()
    with auth_reads(server) as reads:
        again = [await RecordingClient(server.url).connect(ada["token"]) for _ in range(3)]
    try:
        assert reads == []
    finally:
        for client in again:
            await client.close()


async def test_signout_refuses_a_cached_token_at_once(server: RunningServer) -> None:
    ada = await server.signup("Ada")
    warm = await RecordingClient(server.url).connect(ada["token"])
    async with server.http(ada["token"]) as http:
        assert (await http.post("/api/v1/auths/signout")).status_code == 200
    assert await refused(server.url, ada["token"]) == {
        "message": "token revoked",
        "data": {"code": "unauthorized"},
    }
    async with server.http(ada["token"]) as http:
        assert (await http.get("/api/v1/auths/")).status_code == 401
    await warm.close()


async def test_revocations_survive_a_restart(settings: Settings) -> None:
    """The set is loaded from the database: a token signed out before a restart stays refused after it."""
    async with run_server(settings) as server:
        ada = await server.signup("Ada")
        async with server.http(ada["token"]) as http:
            assert (await http.post("/api/v1/auths/signout")).status_code == 200
    async with run_server(settings) as server:
        assert (await refused(server.url, ada["token"]))["message"] == "token revoked"


async def test_role_change_to_pending_reaches_the_next_connect(server: RunningServer) -> None:
    ada = await server.signup("Ada")  # first user: admin
    bob = await server.signup("Bob")
    warm = await RecordingClient(server.url).connect(bob["token"])
    auth = server.services.auth
    assert auth.user_cache.get(bob["id"]).role == "user"
    await server.services.users.update_profile(bob["id"], role="pending")
    assert auth.user_cache.get(bob["id"]) is None
    identity = await auth.authenticate(bob["token"], recent_user=True)
    assert identity.user.role == "pending"
    await warm.close()
    # and back: approval is seen by the next connect too
    await server.services.users.update_profile(bob["id"], role="user")
    assert (await auth.authenticate(bob["token"], recent_user=True)).user.role == "user"
    assert ada["role"] == "admin"


async def test_expired_claims_are_not_served_from_the_token_cache(server: RunningServer) -> None:
    auth = server.services.auth
    ada = await server.signup("Ada")
    user = await server.services.users.get(ada["id"])
    auth.token_ttl = 1
    token, _exp = auth.issue_token(user)
    auth.decode(token)
    assert token in auth.tokens
    await asyncio.sleep(2.1)
    assert token not in auth.tokens
    with pytest.raises(Exception, match="token expired"):
        await auth.authenticate(token, recent_user=True)


@contextlib.asynccontextmanager
async def two_processes(tmp: Any) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Two fleet members in this event loop, sharing Redis and a fresh PostgreSQL database."""
    await require_redis()
    prefix = f"cwauth:{uuid.uuid4().hex[:8]}:"
    async with postgres_database() as db_url:
        base = Settings(
            data_dir=tmp / "a",
            jwt_secret="fleet-" + uuid.uuid4().hex,
            log_format="text",
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            database_url=db_url,
            _env_file=None,  # type: ignore[call-arg]
        )
        async with run_server(base) as a:
            async with run_server(base.model_copy(update={"data_dir": tmp / "b"})) as b:
                yield a, b


async def test_fleet_signout_on_a_refuses_the_token_on_b_at_once(tmp_path: Any) -> None:
    async with two_processes(tmp_path) as (a, b):
        ada = await a.signup("Ada")
        warm = await RecordingClient(b.url).connect(ada["token"])  # B has the token, the row and the set
        loads = b.services.auth.revocations.loads
        assert loads >= 1
        async with a.http(ada["token"]) as http:
            assert (await http.post("/api/v1/auths/signout")).status_code == 200
        # no wait: the notice was on the bus before the sign-out answered
        assert (await refused(b.url, ada["token"]))["message"] == "token revoked"
        assert b.services.auth.revocations.loads == loads  # refused from B's set, not by re-reading the table
        await warm.close()


async def test_fleet_role_change_on_a_drops_the_row_on_b(tmp_path: Any) -> None:
    async with two_processes(tmp_path) as (a, b):
        await a.signup("Ada")
        bob = await a.signup("Bob")
        warm = await RecordingClient(b.url).connect(bob["token"])
        assert b.services.auth.user_cache.get(bob["id"]).role == "user"
        await a.services.users.update_profile(bob["id"], role="pending")
        for _ in range(100):
            if b.services.auth.user_cache.get(bob["id"]) is None:
                break
            await asyncio.sleep(0.02)
        assert b.services.auth.user_cache.get(bob["id"]) is None
        identity = await b.services.auth.authenticate(bob["token"], recent_user=True)
        assert identity.user.role == "pending"
        await warm.close()


async def test_fleet_gap_distrusts_the_set_until_reloaded(tmp_path: Any) -> None:
    """A revocation whose notice B never got (written straight to the table) is refused after B's bus gap."""
    async with two_processes(tmp_path) as (a, b):
        ada = await a.signup("Ada")
        warm = await RecordingClient(b.url).connect(ada["token"])
        identity = await a.services.auth.authenticate(ada["token"])
        await a.services.auth.users.revoke(identity.jti, ada["id"], identity.expires_at)  # no notice
        assert (await b.services.auth.authenticate(ada["token"], recent_user=True)).user.id == ada["id"]
        b.services.auth.fleet_gap()
        assert (await refused(b.url, ada["token"]))["message"] == "token revoked"
        await warm.close()


async def test_a_connect_after_a_role_change_registers_the_new_role(server: RunningServer) -> None:
    """The warm row is dropped by the change: the next socket session is registered as `pending`."""
    await server.signup("Ada")
    bob = await server.signup("Bob")
    warm = await RecordingClient(server.url).connect(bob["token"])
    info = await server.services.sessions.get(warm.sio.get_sid())
    assert info is not None and info.role == "user"
    await server.services.users.update_profile(bob["id"], role="pending")
    again = await RecordingClient(server.url).connect(bob["token"])
    info = await server.services.sessions.get(again.sio.get_sid())
    assert info is not None and info.role == "pending"
    await warm.close()
    await again.close()


async def test_pending_after_a_role_change_gets_no_channel_room(server: RunningServer) -> None:
    """A warm user row turned `pending`: the next user-join enters the user room only (hostile lane's rule)."""
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        r = await http.post(
            "/api/v1/channels/create", json={"name": "c", "type": "group", "user_ids": [bob["id"]]}
        )
        assert r.status_code == 200, r.text
    warm = await RecordingClient(server.url).connect(bob["token"])
    rooms = await server.services.broker.rooms_of(warm.sio.get_sid())
    assert any(r.startswith("channel:") for r in rooms)
    await server.services.users.update_profile(bob["id"], role="pending")
    again = await RecordingClient(server.url).connect(bob["token"])
    rooms = await server.services.broker.rooms_of(again.sio.get_sid())
    assert rooms == [f"user:{bob['id']}"], rooms
    await warm.close()
    await again.close()


def external_token(secret: str, sub: str, name: str) -> str:
    claims = {"sub": sub, "name": name, "aud": "chatwire", "exp": int(time.time()) + 60}
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_warm_external_connect_reads_no_user_row_and_a_new_name_still_lands(settings: Settings) -> None:
    secret = "app-secret-" + "e" * 30
    external = settings.model_copy(
        update={"external_algorithms": ["HS256"], "external_secret": secret, "external_audience": "chatwire"}
    )
    async with run_server(external) as server:
        token = external_token(secret, "u-9", "Grace")
        first = await RecordingClient(server.url).connect(token)  # provisions the row
        await first.close()
        with auth_reads(server) as reads:
            again = [await RecordingClient(server.url).connect(token) for _ in range(3)]
        try:
            assert reads == []  # connect and user-join of a known external user: served from the user cache
        finally:
            for client in again:
                await client.close()
        # a changed claim is written (and the cached row dropped) even though the row came from the cache
        renamed = await RecordingClient(server.url).connect(external_token(secret, "u-9", "Grace Hopper"))
        try:
            row = await server.services.users.get("u-9@external")
            assert row is not None and row.name == "Grace Hopper"
            identity = await server.services.auth.authenticate(token, recent_user=True)
            assert identity.user.id == "u-9@external"
        finally:
            await renamed.close()
