"""Hostile input, round two (issue 16), each finding reproduced against a real server on loopback: text that
cannot be encoded, binary attachments without bound, pending accounts on the socket, sign-in guessing, metric
label flooding and the public schema. The fuzz of every route and event with such text is in test_fuzz.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import uvicorn

from chatwire.app import create_app
from chatwire.backends.attempts_memory import MemoryAttemptLog
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.chats import MessageStore
from chatwire.services.persistence import MessageWriter
from chatwire.transport.http_guard import http_protocol
from chatwire.transport.server import ws_protocol_for
from tests.conftest import RunningServer, free_port, run_server
from tests.integration.test_fuzz import RawSocket
from tests.integration.test_persistence import make_chat, stored
from tests.rawhttp import closed, drip, opened, serving
from tests.sio import RecordingClient

SMALL = 64 * 1024  # CHATWIRE_MAX_ATTACHMENT_BYTES of the servers below


@pytest.fixture
async def hostile_server(settings: Settings) -> AsyncIterator[RunningServer]:
    tight = settings.model_copy(
        update={"max_attachments": 4, "max_attachment_bytes": SMALL, "demo_tokens_per_second": 0.0}
    )
    async with run_server(tight) as running:
        yield running


async def open_namespace(url: str, token: str | None = None) -> RawSocket:
    """A raw websocket with the Socket.IO namespace connected (anonymous without `token`)."""
    sock = await RawSocket.open(url)
    sock.send_text("40" + (f'{{"token":"{token}"}}' if token else ""))
    await sock.writer.drain()
    reply = await sock.recv()
    assert reply is not None and reply.startswith(b"40{"), reply
    return sock


async def closed_within(sock: RawSocket, seconds: float = 5) -> bool:
    """Whether the server ends the connection within `seconds` (frames received meanwhile are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            frame = await sock.recv(timeout=left)
        except TimeoutError:
            return False
        if frame is None:
            return True
    return False


# binary attachments


async def test_anonymous_attachment_count_over_the_limit_closes_the_connection(
    hostile_server: RunningServer,
) -> None:
    sock = await open_namespace(hostile_server.url)
    try:
        sock.send_text('451000000-["ydoc:document:update",{"document_id":"note:x"}]')
        await sock.writer.drain()
        assert await closed_within(sock), "announcing a million attachments kept the connection"
    finally:
        sock.close()
    assert hostile_server.app.state.hub.attachments_refused == 1


async def test_anonymous_attachment_bytes_over_the_limit_close_before_they_are_kept(
    hostile_server: RunningServer,
) -> None:
    hub = hostile_server.app.state.hub
    sock = await open_namespace(hostile_server.url)
    try:
        placeholder = '{"_placeholder":true,"num":%d}'
        sock.send_text('453-["heartbeat",[' + ",".join(placeholder % i for i in range(3)) + "]]")
        sock.send_frame(0x2, b"\x04" + b"a" * (SMALL // 2))  # Engine.IO binary: under the limit, kept
        await sock.writer.drain()
        assert not await closed_within(sock, 0.2)
        assert hub.attachments_refused == 0
        sock.send_frame(0x2, b"\x04" + b"b" * SMALL)  # over the packet's limit: refused, never appended
        await sock.writer.drain()
        assert await closed_within(sock)
    finally:
        sock.close()
    assert hub.attachments_refused == 1


async def test_authenticated_attachments_over_the_limit_get_an_ack_and_the_session_stays(
    hostile_server: RunningServer,
) -> None:
    ada = await hostile_server.signup("Ada")
    client = await RecordingClient(hostile_server.url).connect(ada["token"])
    try:
        ack = await client.call(
            "ydoc:awareness:update", {"document_id": "note:x", "update": b"z" * (SMALL + 1)}
        )
        assert ack["error"]["code"] == "payload_too_large", ack
        many = {"document_id": "note:x", "update": [bytes([i]) for i in range(5)]}
        ack = await client.call("ydoc:awareness:update", many)
        assert ack["error"]["code"] == "payload_too_large", ack
        assert await client.call("heartbeat", {}) is None  # the remaining attachments were thrown away
    finally:
        await client.close()


# text that cannot be encoded, over the socket


async def test_socket_event_with_a_lone_surrogate_is_refused_with_invalid_payload(
    hostile_server: RunningServer,
) -> None:
    # Sent by hand: the JSON escapes of lone surrogates, as any JSON encoder of a browser or stdlib json writes
    # them (python-socketio's packets here are encoded by orjson, which refuses to).
    ada = await hostile_server.signup("Ada")
    sock = await open_namespace(hostile_server.url, ada["token"])
    try:
        for n, payload in enumerate(
            ['{"model":"demo\\udfff"}', '{"model":"demo","\\ud800":1}', '["\\udc00"]', '{"model":"a\\u0000"}']
        ):
            sock.send_text(f'42{n}["usage",{payload}]')
            await sock.writer.drain()
            frame = await sock.recv()
            assert frame is not None and frame.startswith(f"43{n}".encode()), frame
            assert b'"invalid_payload"' in frame, frame
        sock.send_text('4299["heartbeat",{}]')
        await sock.writer.drain()
        frame = await sock.recv()
        assert frame is not None and frame.startswith(b"4399"), frame
    finally:
        sock.close()


# the message writer: a poisoned event must not block the chat


def _delta(text: str) -> dict[str, Any]:
    return {"type": "message", "data": {"content": text}}


async def test_writer_gives_up_a_poisoned_event_and_persists_the_rest(db: Database) -> None:
    chat_id = await make_chat(db, {"m1": {"role": "assistant", "content": ""}})
    writer = MessageWriter(MessageStore(db), flush_interval=0.01)
    try:
        poison = "\udfff" if db.engine.dialect.name == "sqlite" else "nul \x00 here"
        for piece in ("a", poison, "b"):
            writer.submit(chat_id, "m1", _delta(piece))
        await asyncio.wait_for(writer.flush(chat_id), 10)
        assert (await stored(db, chat_id, "m1")).content == "ab"
        assert writer.stats.abandoned == 1
        # Later events of the same message are written as usual; so is another message.
        writer.submit(chat_id, "m1", _delta("c"))
        writer.submit(chat_id, "m2", _delta("other"))
        await asyncio.wait_for(writer.flush(chat_id), 10)
        assert (await stored(db, chat_id, "m1")).content == "abc"
        assert (await stored(db, chat_id, "m2")).content == "other"
    finally:
        await writer.close()


async def test_poisoned_chat_event_never_blocks_readers_or_later_events(
    hostile_server: RunningServer,
) -> None:
    ada = await hostile_server.signup("Ada")
    services = hostile_server.services
    chat = {
        "title": "t",
        "history": {"currentId": "m1", "messages": {"m1": {"role": "assistant", "content": ""}}},
    }
    async with hostile_server.http(ada["token"]) as http:
        chat_id = (await http.post("/api/v1/chats/new", json={"chat": chat})).json()["id"]
        # Over REST the edge refuses it; a producer inside the process (an upstream model) is the other way in.
        r = await http.post(
            f"/api/v1/chats/{chat_id}/messages/m1/event",
            content=b'{"type":"message","data":{"content":"\\udfff"}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_payload", r.text
        for piece in ("one ", "\ud800", "two"):
            await services.events.emit(ada["id"], chat_id, "m1", _delta(piece))
        r = await asyncio.wait_for(http.get(f"/api/v1/chats/{chat_id}"), 10)
        assert r.status_code == 200, r.text
        assert r.json()["chat"]["history"]["messages"]["m1"]["content"] == "one two"
        await services.events.emit(ada["id"], chat_id, "m1", _delta("!"))
        r = await asyncio.wait_for(http.get(f"/api/v1/chats/{chat_id}"), 10)
        assert r.json()["chat"]["history"]["messages"]["m1"]["content"] == "one two!"


# pending accounts on the socket


async def test_pending_account_gets_nothing_over_the_socket_but_its_user_room(
    hostile_server: RunningServer,
) -> None:
    admin = await hostile_server.signup("Admin")
    async with hostile_server.http(admin["token"]) as http:
        r = await http.post(
            "/api/v1/auths/add",
            json={"name": "Pat", "email": "pat@example.com", "password": "pw", "role": "pending"},
        )
        pat = r.json()
        channel_id = (
            await http.post(
                "/api/v1/channels/create", json={"name": "c", "type": "group", "user_ids": [pat["id"]]}
            )
        ).json()["id"]
        note_id = (
            await http.post(
                "/api/v1/notes/create",
                json={"title": "n", "access_control": {"read": {"user_ids": [pat["id"]]}}},
            )
        ).json()["id"]
        async with hostile_server.http(pat["token"]) as pat_http:
            assert (await pat_http.get("/api/v1/channels/")).status_code == 403
        client = await RecordingClient(hostile_server.url).connect(pat["token"])
        try:
            refused = {
                "join-channels": {},
                "join-note": {"note_id": note_id},
                "events:channel": {
                    "channel_id": channel_id,
                    "data": {"type": "typing", "data": {"typing": True}},
                },
                "ydoc:document:join": {"document_id": f"note:{note_id}"},
                "usage": {"model": "demo"},
            }
            for event, payload in refused.items():
                ack = await client.call(event, payload)
                assert ack["error"]["code"] == "forbidden", (event, ack)
            ack = await client.call(
                "events:channel", {"channel_id": channel_id, "data": {"type": "last_read_at"}}
            )
            assert ack["error"]["code"] == "forbidden", ack
            rooms = await hostile_server.services.broker.rooms_of(client.sio.sid)
            assert all(not room.startswith(("channel:", "note:", "doc_")) for room in rooms)
            # Added to another channel while connected: its session stays out of that room too.
            other = (
                await http.post(
                    "/api/v1/channels/create", json={"name": "d", "type": "group", "user_ids": [pat["id"]]}
                )
            ).json()["id"]
            await http.post(f"/api/v1/channels/{channel_id}/messages/post", json={"content": "secret"})
            await http.post(f"/api/v1/channels/{other}/messages/post", json={"content": "secret too"})
            await client.expect_none("events:channel", lambda p: p["data"]["type"] == "message")
            # Its own user room still works: the channel:created notice reached it.
            await client.wait_for("events:channel", lambda p: p["data"]["type"] == "channel:created")
            assert await client.call("heartbeat", {}) is None
        finally:
            await client.close()


# sign-in guessing


async def test_signin_guessing_is_throttled_per_account_and_per_ip(settings: Settings) -> None:
    limits = {"signin_account_attempts": 3, "signin_ip_attempts": 6, "signin_window_seconds": 60.0}
    async with run_server(settings.model_copy(update=limits)) as server:
        ada = await server.signup("Ada", "ada@example.com", "right-password")
        async with server.http() as http:
            wrong = {"email": "ada@example.com", "password": "guess"}
            codes = [(await http.post("/api/v1/auths/signin", json=wrong)).status_code for _ in range(3)]
            assert codes == [401, 401, 401]
            r = await http.post("/api/v1/auths/signin", json=wrong)
            assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
            assert 1 <= int(r.headers["retry-after"]) <= 60
            # Even the right password waits: the account is locked for the window, without hashing anything.
            r = await http.post("/api/v1/auths/signin", json={**wrong, "password": "right-password"})
            assert r.status_code == 429
            # Per IP: other accounts, unknown ones included, count against the address.
            others = [
                (
                    await http.post(
                        "/api/v1/auths/signin", json={"email": f"x{i}@example.com", "password": "p"}
                    )
                ).status_code
                for i in range(4)
            ]
            assert others == [401, 401, 401, 429], others
        accounts = server.services.auth.throttle.accounts
        assert isinstance(accounts, MemoryAttemptLog)
        assert accounts.retry_after_at("ada@example.com", 1e12) is None  # the window slides
    assert ada["id"]


# metric labels and the schema


async def test_unknown_event_names_share_one_metric_label(hostile_server: RunningServer) -> None:
    ada = await hostile_server.signup("Ada")
    client = await RecordingClient(hostile_server.url).connect(ada["token"])
    try:
        for i in range(150):
            await client.emit(f"made-up-{i}", {})
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()
    async with hostile_server.http() as http:
        text = (await http.get("/metrics")).text
    labels = {
        line.split('event="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("chatwire_events_in_total{")
    }
    assert labels <= {"other", "heartbeat", "user-join"} and {"other", "heartbeat"} <= labels, labels
    assert 'chatwire_events_in_total{event="other"} 150.0' in text


async def test_openapi_schema_and_docs_are_off_by_default(settings: Settings) -> None:
    async with run_server(settings) as server, server.http() as http:
        for path in ("/openapi.json", "/docs", "/redoc"):
            r = await http.get(path)
            assert r.status_code == 404 or "openapi" not in r.text.lower(), (path, r.status_code)
    async with (
        run_server(settings.model_copy(update={"openapi_enabled": True})) as server,
        server.http() as http,
    ):
        r = await http.get("/openapi.json")
        assert r.status_code == 200 and "/api/v1/server/channels" in r.json()["paths"]
        assert (await http.get("/docs")).status_code == 200


# slow clients


@contextlib.asynccontextmanager
async def guarded_server(settings: Settings, timeout: float, pending: int) -> AsyncIterator[str]:
    """A chatwire server on uvicorn with the slow-client guard as `chatwire serve` runs it."""
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ws=ws_protocol_for(settings),
        http=http_protocol(timeout, pending),
    )
    async with serving(config):
        yield f"127.0.0.1:{port}"


async def test_slowloris_headers_are_cut_off_and_unfinished_connections_per_ip_are_bounded(
    settings: Settings,
) -> None:
    async with guarded_server(settings, timeout=1.0, pending=3) as address:
        # One header line every 0.3 s, never finished: closed with 408 at the deadline (not kept forever).
        reader, writer = await opened(address)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        dripping = asyncio.create_task(drip(writer, every=0.3))
        answer = await closed(reader, within=5)
        dripping.cancel()
        writer.close()
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert loop.time() - started < 3
        # Three silent connections fill this IP's table: a fourth is closed at once, without an answer.
        silent = [await opened(address) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader4, writer4 = await opened(address)
        assert await closed(reader4, within=0.5) == b""
        writer4.close()
        # A client that finishes its headers is served as usual, meanwhile and after.
        for r, w in silent:
            assert (await closed(r, within=3) or b"").startswith(b"HTTP/1.1 408")
            w.close()
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            assert (await http.get("/health")).status_code == 200
            # The second request of a kept-alive connection gets its own deadline.
        reader, writer = await opened(address)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n")
        answer = await closed(reader, within=5)
        writer.close()
        assert answer is not None and answer.startswith(b"HTTP/1.1 200") and b"408" in answer, answer


# external identities


async def test_external_identities_never_become_native_or_reserved_accounts(settings: Settings) -> None:
    secret = "s" * 32
    external = settings.model_copy(
        update={"external_algorithms": ["HS256"], "external_secret": secret, "external_issuer": "my-app"}
    )
    async with run_server(external) as server:
        admin = await server.signup("Admin")

        def token(sub: str, **extra: Any) -> str:
            claims = {"sub": sub, "iss": "my-app", "exp": int(time.time()) + 60, **extra}
            return jwt.encode(claims, secret, algorithm="HS256")

        async with server.http(token(admin["id"], name="Mallory", role="user")) as http:
            me = (await http.get("/api/v1/auths/")).json()
        assert me["id"] == f"{admin['id']}@my-app" and me["role"] == "user"
        first = await server.services.auth.users.get(admin["id"])
        assert (first.name, first.role) == ("Admin", "admin")  # the native admin is untouched
        # `system` (the server API's acting identity) is reserved: the token gets an id of its own namespace.
        _, key = await server.services.api_keys.create("k", ["channels"])
        headers = {"X-API-Key": key}
        async with server.http() as http:
            r = await http.post(
                "/api/v1/server/channels", json={"name": "ops", "type": "group"}, headers=headers
            )
            channel_id = r.json()["id"]
            r = await http.put("/api/v1/server/users/system", json={"name": "S"}, headers=headers)
            assert r.json()["id"] == "system@my-app"
        async with server.http(token("system", role="user")) as http:
            me = (await http.get("/api/v1/auths/")).json()
            assert me["id"] == "system@my-app"
            r = await http.delete(f"/api/v1/channels/{channel_id}/delete")
            assert r.status_code in (403, 404), r.text
        # The same subject under another issuer is another user (a long namespace falls back to a hash).
        from chatwire.services.external_auth import external_user_id

        assert external_user_id("ada", "other-app") != external_user_id("ada", "my-app")
        assert (
            external_user_id("ada", "x" * 80).startswith("x-")
            and len(external_user_id("ada", "x" * 80)) <= 64
        )
        # A row provisioned before ids were namespaced (id = subject, no password) still belongs to its subject.
        legacy, _ = await server.services.auth.users.provision(
            user_id="old-ada",
            name="Old Ada",
            email="old@example.com",
            fallback_email="o@x.invalid",
            role="user",
        )
        async with server.http(token("old-ada")) as http:
            assert (await http.get("/api/v1/auths/")).json()["id"] == legacy.id == "old-ada"
        # Claims with unencodable text: the id is refused, a name is ignored.
        async with server.http(token("bad\udfff")) as http:
            assert (await http.get("/api/v1/auths/")).status_code == 401
        async with server.http(token("fine", name="x\udfff")) as http:
            me = (await http.get("/api/v1/auths/")).json()
            assert me["id"] == "fine@my-app" and me["name"] == "fine"
