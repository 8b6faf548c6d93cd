"""Hostile input through real sockets and HTTP: random and malformed payloads (hypothesis, derandomized, a fixed
number per target) to every client -> server event and every REST route, and raw Engine.IO/Socket.IO garbage on
the websocket. The server must refuse with a clear error (or ignore), never crash, keep the fuzzed session and a
bystander's session working, and change no stored data.

The counts printed at the end of each test are the ones in the README section "Hostile input"."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import strategies as st
from pycrdt import Doc, Text

from chatwire.config import Settings
from chatwire.protocol import MAX_NESTING
from tests.conftest import RunningServer, run_server
from tests.dbsnap import snapshot
from tests.fuzz import DEEP, INT64, JSON, LEAF, NOT_DICT, NUL_TEXT, draw, mutations, nested
from tests.sio import RecordingClient

LIMIT = 32_768  # CHATWIRE_MAX_PAYLOAD_BYTES of the fuzzed server
GENERIC = 20  # per target: payloads of any shape
MUTANTS = 30  # per target: a valid payload with one field made wrong
PATHS = 25  # per path/query target
UNKNOWN = 40  # unknown events; unknown routes

# Counts of what was sent, per target (filled by the tests; printed for the README).
SENT: dict[str, int] = {}


@pytest.fixture
async def fuzz_server(settings: Settings) -> AsyncIterator[RunningServer]:
    # No rate limit in the way: every payload must reach its handler.
    loose = settings.model_copy(
        update={
            "max_payload_bytes": LIMIT,
            "rate_limit_events": 1e6,
            "rate_limit_burst": 1_000_000,
            "rate_limit_ip_events": 0.0,
            "demo_tokens_per_second": 0.0,
        }
    )
    async with run_server(loose) as running:
        yield running


@dataclass
class Scene:
    """Ada (the admin) owns a channel with Bob in it, a note and a chat; Bob is the bystander."""

    server: RunningServer
    ada: dict[str, Any]
    bob: dict[str, Any]
    carol: dict[str, Any]
    channel_id: str
    message_id: str
    note_id: str
    chat_id: str
    api_key: str
    yjs_update: bytes

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        return self.server.http(token)


async def make_scene(server: RunningServer) -> Scene:
    ada, bob, carol = await server.signup("Ada"), await server.signup("Bob"), await server.signup("Carol")
    async with server.http(ada["token"]) as http:
        r = await http.post(
            "/api/v1/channels/create", json={"name": "c", "type": "group", "user_ids": [bob["id"]]}
        )
        channel_id = r.json()["id"]
        r = await http.post(f"/api/v1/channels/{channel_id}/messages/post", json={"content": "first"})
        message_id = r.json()["id"]
        r = await http.post("/api/v1/notes/create", json={"title": "n", "data": {"content": {"md": "x"}}})
        note_id = r.json()["id"]
        chat = {
            "title": "t",
            "history": {"currentId": "m1", "messages": {"m1": {"role": "assistant", "content": ""}}},
        }
        chat_id = (await http.post("/api/v1/chats/new", json={"chat": chat})).json()["id"]
    _, key = await server.services.api_keys.create("fuzz", ["admin"])
    doc = Doc()
    doc["content"] = text = Text()
    text += "hello"
    return Scene(server, ada, bob, carol, channel_id, message_id, note_id, chat_id, key, doc.get_update())


class Bystander:
    """Bob, in the channel, calling heartbeat every 50 ms while the fuzzing runs; every call must be answered."""

    def __init__(self, client: RecordingClient) -> None:
        self.client = client
        self.answered = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            try:
                ack = await self.client.call("heartbeat", {}, timeout=5)
                if ack is not None:
                    self.failures.append(f"heartbeat ack {ack}")
                else:
                    self.answered += 1
            except Exception as exc:
                self.failures.append(repr(exc))
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def still_serving(scene: Scene, bob: RecordingClient) -> None:
    """After the fuzzing: a message posted over REST reaches Bob's session, and a new session works."""
    async with scene.http(scene.ada["token"]) as http:
        r = await http.post(f"/api/v1/channels/{scene.channel_id}/messages/post", json={"content": "after"})
        assert r.status_code == 200, r.text
    await bob.wait_for("events:channel", lambda p: p["data"]["data"].get("content") == "after", timeout=5)
    fresh = await RecordingClient(scene.server.url).connect(scene.carol["token"])
    assert await fresh.call("heartbeat", {}) is None
    await fresh.close()


def no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    # A traceback anywhere (uvicorn's "Exception in ASGI application", python-engineio's "Unknown receive
    # error", chatwire's "handler crashed") is a crash that reached a catch-all.
    crashes = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if (r.exc_info or "Exception in ASGI application" in r.getMessage() or "crashed" in r.getMessage())
        # uvicorn's own refusal of a text frame that is not UTF-8 (it closes with 1007), logged with its traceback
        and not (r.name == "uvicorn.error" and r.getMessage().startswith("Invalid UTF-8 sequence"))
    ]
    assert not crashes, crashes[:5]


def is_error_ack(ack: Any) -> bool:
    return (
        isinstance(ack, dict)
        and isinstance(ack.get("error"), dict)
        and isinstance(ack["error"].get("code"), str)
    )


# socket events


@dataclass
class EventTarget:
    event: str
    template: dict[str, Any]
    fields: dict[tuple[Any, ...], str]
    may_accept: bool = False  # the event takes any payload (heartbeat) or any object (join-channels)


def event_targets(s: Scene) -> list[EventTarget]:
    doc = f"note:{s.note_id}"
    token = s.ada["token"]
    return [
        EventTarget("user-join", {"auth": {"token": token}}, {("auth",): "dict", ("auth", "token"): "str"}),
        EventTarget("join-channels", {"auth": {"token": token}}, {("auth", "token"): "str"}, may_accept=True),
        EventTarget("join-note", {"note_id": s.note_id}, {("note_id",): "str", ("auth",): "dict"}),
        EventTarget(
            "events:channel",
            {"channel_id": s.channel_id, "data": {"type": "typing", "data": {"typing": True}}},
            {
                ("channel_id",): "str",
                ("message_id",): "str",
                ("data",): "dict",
                ("data", "type"): "str",
                ("data", "data", "typing"): "bool",
            },
        ),
        EventTarget(
            "events:chat",
            {"chat_id": s.chat_id, "data": {"type": "last_read_at"}},
            {("chat_id",): "str", ("data",): "dict", ("data", "type"): "str"},
        ),
        EventTarget(
            "ydoc:document:join", {"document_id": doc}, {("document_id",): "str", ("user_color",): "str"}
        ),
        EventTarget("ydoc:document:state", {"document_id": doc}, {("document_id",): "str"}),
        EventTarget(
            "ydoc:document:update",
            {"document_id": doc, "update": s.yjs_update},
            {("document_id",): "str", ("update",): "yjs", ("data",): "dict"},
        ),
        EventTarget(
            "ydoc:awareness:update",
            {"document_id": doc, "update": [0]},
            {("document_id",): "str", ("update",): "bytes"},
        ),
        EventTarget("ydoc:document:leave", {"document_id": doc}, {("document_id",): "str"}),
        EventTarget(
            "usage",
            {"model": "demo", "chat_id": s.chat_id},
            {("model",): "str", ("action",): "str", ("chat_id",): "str"},
        ),
        EventTarget("heartbeat", {}, {}, may_accept=True),
    ]


def any_shape() -> st.SearchStrategy[Any]:
    """A payload of any shape: JSON, binary, a deep tower, several arguments, or one over the size limit."""
    return st.one_of(
        JSON,
        st.binary(max_size=64),
        DEEP,
        st.tuples(LEAF, LEAF),
        st.integers(min_value=LIMIT + 1, max_value=LIMIT * 3).map(lambda n: {"pad": "x" * n}),
    )


async def test_fuzzed_socket_events_are_refused_and_change_nothing(
    fuzz_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    scene = await make_scene(fuzz_server)
    db = fuzz_server.services.db
    ada = await RecordingClient(fuzz_server.url).connect(scene.ada["token"])
    bob = await RecordingClient(fuzz_server.url).connect(scene.bob["token"])
    bystander = Bystander(bob)
    wrong: list[str] = []
    try:
        # Ada is in the document, so updates reach the deepest checks; then the state to keep is fixed.
        join = await ada.call("ydoc:document:join", {"document_id": f"note:{scene.note_id}"})
        assert not is_error_ack(join), join
        assert await ada.call("heartbeat", {}) is None and await bob.call("heartbeat", {}) is None
        await fuzz_server.services.writer.flush()
        bystander.start()
        for target in event_targets(scene):
            payloads = draw(any_shape(), GENERIC)
            if target.fields:
                payloads += draw(mutations(target.template, target.fields), MUTANTS)
            before = await snapshot(db)
            for payload in payloads:
                try:
                    ack = await ada.call(target.event, payload, timeout=5)
                except Exception as exc:
                    wrong.append(f"{target.event} {_short(payload)}: no ack ({exc!r})")
                    continue
                if not is_error_ack(ack) and not target.may_accept:
                    wrong.append(f"{target.event} {_short(payload)}: accepted ({_short(ack)})")
            # Ada rejoins when a fuzzed leave got through (a leave may take any document id).
            await ada.call("ydoc:document:join", {"document_id": f"note:{scene.note_id}"})
            await fuzz_server.services.writer.flush()
            if await snapshot(db) != before:
                wrong.append(f"{target.event}: stored data changed")
            SENT[f"socket {target.event}"] = len(payloads)
        known = {t.event for t in event_targets(scene)} | {"connect", "disconnect", "message"}
        unknown = draw(
            st.tuples(st.text(min_size=1, max_size=40).filter(lambda n: n not in known), JSON), UNKNOWN
        )
        for name, payload in unknown:
            ack = await ada.call(name, payload, timeout=5)
            if not (is_error_ack(ack) and ack["error"]["code"] == "invalid_payload"):
                wrong.append(f"unknown event {name!r}: {_short(ack)}")
        SENT["socket unknown events"] = len(unknown)
        assert ada.sio.connected, "the fuzzed session was dropped"
        await still_serving(scene, bob)
    finally:
        await bystander.stop()
        await ada.close()
        await bob.close()
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:40])
    assert not bystander.failures and bystander.answered > 0, bystander.failures[:5]
    no_crash_logged(caplog)
    total = sum(v for k, v in SENT.items() if k.startswith("socket"))
    print(f"\nfuzzed socket payloads: {total} over {len(event_targets(scene)) + 1} targets")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 160 else text[:150] + f"...({len(text)} chars)"


# REST routes


@dataclass
class Req:
    body: bytes
    content_type: str = "application/json"


def as_json(value: Any) -> Req:
    return Req(json.dumps(value).encode())


def garbage_bodies() -> st.SearchStrategy[Req]:
    """Bodies no route accepts: not an object, not JSON, not UTF-8, too deep to parse, too large, wrong type."""
    return st.one_of(
        NOT_DICT.map(as_json),
        st.binary(max_size=200).map(Req),
        st.binary(max_size=20).map(lambda b: Req(b'{"name": "\xff\xfe' + b + b'"}')),
        st.integers(min_value=500, max_value=200_000).map(lambda n: Req(b"[" * n + b"]" * n)),
        st.integers(min_value=500, max_value=20_000).map(lambda n: Req(b'{"a":' * n + b"1" + b"}" * n)),
        st.integers(min_value=LIMIT + 1, max_value=LIMIT * 2).map(
            lambda n: Req(b'{"pad":"' + b"x" * n + b'"}')
        ),
        st.binary(max_size=40).map(
            lambda b: Req(b'{"content": "' + base64.b64encode(b) + b'"', "application/json")
        ),
        st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]).map(
            lambda ct: Req(b'{"name": "x"}', ct)
        ),
    )


@dataclass
class RouteTarget:
    method: str
    path: str
    template: dict[str, Any] | None = None
    fields: dict[tuple[Any, ...], str] | None = None
    key: bool = False  # the server API: the admin API key instead of Ada's token
    fuzz_path: bool = False  # the `{x}` in `path` is fuzzed (ids, query strings) instead of the body
    may_succeed: bool = False  # a read (or a no-op) that may answer 2xx for a fuzzed path


def route_targets(s: Scene) -> list[RouteTarget]:
    c, m, n, chat, bob, carol = s.channel_id, s.message_id, s.note_id, s.chat_id, s.bob["id"], s.carol["id"]
    signup = {"name": "Zed", "email": "zed@example.com", "password": "pw"}
    user_fields = {("name",): "str", ("email",): "str", ("password",): "str"}
    return [
        RouteTarget("POST", "/api/v1/auths/signup", signup, {**user_fields, ("name",): "long"}),
        RouteTarget(
            "POST",
            "/api/v1/auths/signin",
            {"email": "zed@example.com", "password": "pw"},
            {("email",): "str", ("password",): "str"},
        ),
        RouteTarget(
            "POST", "/api/v1/auths/add", {**signup, "role": "user"}, {**user_fields, ("role",): "str"}
        ),
        RouteTarget(
            "POST",
            "/api/v1/channels/create",
            {"name": "x", "type": "group", "user_ids": [bob]},
            {("name",): "str", ("type",): "str", ("user_ids",): "ids", ("data",): "dict_or_deep"},
        ),
        RouteTarget(
            "POST", f"/api/v1/channels/{c}/update/members/add", {"user_ids": [carol]}, {("user_ids",): "ids"}
        ),
        RouteTarget(
            "POST", f"/api/v1/channels/{c}/update/members/remove", {"user_ids": [bob]}, {("user_ids",): "ids"}
        ),
        RouteTarget(
            "POST",
            f"/api/v1/channels/{c}/messages/post",
            {"content": "hi", "parent_id": m},
            {("content",): "str", ("parent_id",): "str", ("temp_id",): "str", ("data",): "dict_or_deep"},
        ),
        RouteTarget(
            "POST",
            f"/api/v1/channels/{c}/messages/{m}/update",
            {"content": "e"},
            {("content",): "str", ("data",): "dict_or_deep"},
        ),
        RouteTarget(
            "POST",
            f"/api/v1/channels/{c}/messages/{m}/reactions/add",
            {"name": "+1"},
            {("name",): "long"},
        ),
        RouteTarget(
            "POST", f"/api/v1/channels/{c}/messages/{m}/reactions/remove", {"name": "+1"}, {("name",): "str"}
        ),
        RouteTarget("POST", "/api/v1/chats/new", {"chat": {"title": "t"}}, {("chat",): "dict_or_deep"}),
        RouteTarget(
            "POST",
            f"/api/v1/chats/{chat}/messages/m1/event",
            {"type": "chat:message:delta", "data": {}},
            {("type",): "str", ("data",): "deep"},
        ),
        RouteTarget(
            "POST",
            "/api/v1/notes/create",
            {"title": "t", "data": {}, "access_control": {"read": {"user_ids": [bob]}}},
            {
                ("title",): "str",
                ("data",): "dict_or_deep",
                ("access_control",): "dict",
                ("access_control", "read", "user_ids"): "ids",
            },
        ),
        RouteTarget(
            "POST",
            f"/api/v1/notes/{n}/update",
            {"title": "t"},
            {("title",): "long", ("data",): "dict_or_deep"},
        ),
        RouteTarget(
            "POST",
            f"/api/v1/notes/{n}/access/update",
            {"access_control": {"read": {"user_ids": [bob]}}},
            {("access_control",): "dict", ("access_control", "read", "user_ids"): "ids"},
        ),
        RouteTarget(
            "POST",
            "/api/chat/completions",
            {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "chat_id": chat, "id": "m9"},
            {("model",): "str", ("messages",): "objects", ("chat_id",): "str", ("id",): "str"},
        ),
        RouteTarget(
            "POST",
            "/api/v1/events/publish",
            {"room": f"user:{bob}", "event": "ping", "data": {}},
            {("room",): "str", ("event",): "str", ("data",): "deep"},
            key=True,
        ),
        RouteTarget(
            "PUT",
            "/api/v1/server/users/newcomer",
            {"name": "N", "email": "n@example.com"},
            {("name",): "str", ("email",): "str"},
            key=True,
        ),
        RouteTarget(
            "POST",
            "/api/v1/server/channels",
            {"name": "s", "user_ids": [bob]},
            {("name",): "str", ("user_ids",): "ids", ("description",): "str"},
            key=True,
        ),
        RouteTarget(
            "POST",
            f"/api/v1/server/channels/{c}/members/add",
            {"user_ids": [carol]},
            {("user_ids",): "ids"},
            key=True,
        ),
        RouteTarget(
            "POST",
            f"/api/v1/server/channels/{c}/members/remove",
            {"user_ids": [bob]},
            {("user_ids",): "ids"},
            key=True,
        ),
        # fuzzed ids and query strings
        RouteTarget("GET", "/api/v1/channels/{x}", fuzz_path=True),
        RouteTarget("GET", f"/api/v1/channels/{c}/messages?{{x}}", fuzz_path=True, may_succeed=True),
        RouteTarget("GET", f"/api/v1/channels/{c}/messages/{{x}}/thread", fuzz_path=True),
        RouteTarget("DELETE", "/api/v1/channels/{x}/delete", fuzz_path=True),
        RouteTarget("DELETE", f"/api/v1/channels/{c}/messages/{{x}}/delete", fuzz_path=True),
        RouteTarget("GET", "/api/v1/chats/{x}", fuzz_path=True),
        RouteTarget("GET", "/api/v1/chats/?{x}", fuzz_path=True, may_succeed=True),
        RouteTarget("GET", "/api/v1/notes/{x}", fuzz_path=True),
        RouteTarget("DELETE", "/api/v1/notes/{x}/delete", fuzz_path=True),
        RouteTarget("POST", "/api/tasks/stop/{x}", fuzz_path=True),
        RouteTarget("GET", "/api/tasks/chat/{x}", fuzz_path=True, may_succeed=True),
        RouteTarget("GET", "/api/v1/users/?{x}", fuzz_path=True, may_succeed=True),
        RouteTarget("GET", "/api/v1/presence?{x}", key=True, fuzz_path=True, may_succeed=True),
        RouteTarget("DELETE", "/api/v1/server/channels/{x}", key=True, fuzz_path=True),
        RouteTarget(
            "POST", "/api/v1/presence/users/{x}/disconnect", key=True, fuzz_path=True, may_succeed=True
        ),
    ]


# Over every id's length limit, under the request line limits of HTTP servers (percent-encoded: 6 bytes each).
LONG_PATH = st.integers(min_value=129, max_value=1500).map(lambda n: "\u00e9" * n)
SEGMENT = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/.?#%\\"),
        min_size=1,
        max_size=300,
    ),
    NUL_TEXT.filter(
        lambda t: "/" not in t and "." not in t and "%" not in t and "?" not in t and "#" not in t
    ),
    LONG_PATH,
)
QUERY_VALUE = st.one_of(
    st.text(max_size=30),
    INT64.map(str),
    st.sampled_from(["-1", "1e400", "nan", "", "\x00"]),
    st.integers(min_value=2**63, max_value=2**200).map(str),
    LONG_PATH,
)
QUERY = st.dictionaries(
    st.sampled_from(["skip", "limit", "user_id", "x"]), QUERY_VALUE, min_size=1, max_size=3
).map(urlencode)


async def test_fuzzed_rest_routes_are_refused_and_change_nothing(
    fuzz_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    scene = await make_scene(fuzz_server)
    db = fuzz_server.services.db
    bob = await RecordingClient(fuzz_server.url).connect(scene.bob["token"])
    bystander = Bystander(bob)
    wrong: list[str] = []
    user_http = scene.http(scene.ada["token"])
    key_http = httpx.AsyncClient(base_url=fuzz_server.url, headers={"X-API-Key": scene.api_key}, timeout=10)
    try:
        # Bob's first heartbeat writes his last_active_at: before any snapshot, not during the first target.
        assert await bob.call("heartbeat", {}) is None
        await fuzz_server.services.writer.flush()
        bystander.start()
        for target in route_targets(scene):
            http = key_http if target.key else user_http
            before = await snapshot(db)
            sent = 0
            if target.fuzz_path:
                values = draw(
                    QUERY if "?{x}" in target.path else SEGMENT.map(lambda v: quote(v, safe="")), PATHS
                )
                for value in values:
                    r = await http.request(target.method, target.path.replace("{x}", value))
                    sent += 1
                    ok = r.status_code < 500 if target.may_succeed else 400 <= r.status_code < 500
                    if not ok or (r.status_code >= 400 and "code" not in _json(r)):
                        wrong.append(
                            f"{target.method} {target.path} x={_short(value)}: {r.status_code} {r.text[:200]}"
                        )
            else:
                assert target.template is not None and target.fields is not None
                reqs = draw(garbage_bodies(), GENERIC) + [
                    as_json(v) for v in draw(mutations(target.template, target.fields), MUTANTS)
                ]
                for req in reqs:
                    r = await http.request(
                        target.method,
                        target.path,
                        content=req.body,
                        headers={"content-type": req.content_type},
                    )
                    sent += 1
                    if not 400 <= r.status_code < 500 or "code" not in _json(r):
                        wrong.append(
                            f"{target.method} {target.path} {req.content_type} {_short(req.body)}: "
                            f"{r.status_code} {r.text[:200]}"
                        )
            await fuzz_server.services.writer.flush()
            if await snapshot(db) != before:
                wrong.append(f"{target.method} {target.path}: stored data changed")
            SENT[f"rest {target.method} {target.path}"] = sent
        # Unknown routes and methods: refused, never served as something else.
        unknown = draw(
            st.tuples(
                st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
                st.lists(SEGMENT.map(lambda v: quote(v, safe="")), min_size=1, max_size=4),
            ),
            UNKNOWN,
        )
        for method, parts in unknown:
            r = await user_http.request(method, "/api/v1/nope/" + "/".join(parts), content=b"{}")
            if not 400 <= r.status_code < 500:
                wrong.append(f"unknown route {method} {parts}: {r.status_code}")
        SENT["rest unknown routes"] = len(unknown)
        await still_serving(scene, bob)
    finally:
        await bystander.stop()
        await user_http.aclose()
        await key_http.aclose()
        await bob.close()
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:40])
    assert not bystander.failures and bystander.answered > 0, bystander.failures[:5]
    no_crash_logged(caplog)
    total = sum(v for k, v in SENT.items() if k.startswith("rest"))
    print(f"\nfuzzed REST requests: {total} over {len(route_targets(scene)) + 1} targets")


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# raw Engine.IO / Socket.IO garbage


class RawSocket:
    """A websocket spoken by hand over TCP, so that frames can be anything: any opcode, invalid UTF-8 in a text
    frame, a length that lies. Just enough of RFC 6455 for a client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawSocket:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock = cls(reader, writer)
        opening = await sock.recv()
        assert opening is not None and opening.startswith(b"0{"), opening  # Engine.IO open packet
        return sock

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> None:
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(0x1, text.encode() if isinstance(text, str) else text)

    async def recv(self, timeout: float = 5) -> bytes | None:
        """The next data frame's payload (answering pings); None when the server closed."""
        while True:
            try:
                b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return None
            if opcode in (0x1, 0x2):
                return payload
            # control frames other than close: ignore

    async def outcome(self, connected: bool, wait: float = 1.0) -> str:
        """After the garbage: "works" if the connection still answers (a heartbeat with an ack once the
        namespace is connected, a namespace connect before), "closed" if the server ended it, "silent" if
        neither happened within `wait` seconds."""
        probe, answer = ('4299["heartbeat",{}]', (b"4399",)) if connected else ("40", (b"40", b"44"))
        try:
            self.send_text(probe)
            await self.writer.drain()
        except ConnectionError:
            return "closed"
        deadline = asyncio.get_running_loop().time() + wait
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                frame = await self.recv(timeout=left)
            except TimeoutError:
                break
            if frame is None:
                return "closed"
            if frame.startswith(answer):
                return "works"
        return "silent"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


GARBAGE_TEXT: list[str | bytes] = [
    "",  # empty packet
    "9",  # unknown Engine.IO type
    "x",
    "0",  # a client may not send "open"
    "1",  # close
    "5",  # upgrade outside the upgrade
    "6",  # noop
    "4",  # message without a Socket.IO packet
    "47",  # unknown Socket.IO type
    "49[]",
    "42",  # event without data
    '42["heartbeat"',  # truncated JSON
    '42["heartbeat",{"a":',
    "42{}",  # not an array
    "42[]",  # no event name
    "42[1,2]",  # a number as event name
    "42[null]",
    '42["connect"]',  # reserved names
    '42["disconnect"]',
    '42["__proto__",{}]',
    '42/nope,["heartbeat"]',  # unknown namespace
    "40/admin,{}",
    '421x["heartbeat"]',  # bad ack id
    "42" + "9" * 40 + '["heartbeat",{}]',  # ack id beyond any integer
    '42["heartbeat",NaN]',
    '42["heartbeat",1e999]',
    '42["heartbeat","\\ud800"]',  # lone surrogate escape
    "42" + "[" * 100_000 + "]" * 100_000,  # deep nesting
    '42["heartbeat",' + "[" * 600 + "]" * 600 + "]",
    '42["usage",{"model":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}]",
    '42["events:channel",{"channel_id":"c","data":{"type":"typing","data":' + "[" * 300 + "]" * 300 + "}}]",
    '451-["ydoc:document:update",{"document_id":"note:x","update":{"_placeholder":true,"num":0}}]',  # no attachment
    '452-["heartbeat",{"_placeholder":true,"num":7}]',
    '45x-["heartbeat"]',
    "43",  # an ack the server never asked for
    '431["x"]',
    "44",  # connect_error from a client
    "41",  # disconnect the namespace (allowed; the transport stays)
    b'42["heartbeat","\xff\xfe"]',  # invalid UTF-8 in a text frame
    b"\xc3\x28",
]


async def test_raw_engineio_garbage_leaves_the_server_serving(
    fuzz_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    scene = await make_scene(fuzz_server)
    bob = await RecordingClient(fuzz_server.url).connect(scene.bob["token"])
    bystander = Bystander(bob)
    bystander.start()
    outcomes: dict[str, str] = {}
    cases: list[tuple[str, Callable[[RawSocket], Awaitable[None] | None]]] = []
    for text in GARBAGE_TEXT:
        cases.append((f"text {text[:60]!r}", lambda s, t=text: s.send_text(t)))
    cases += [
        ("binary frame before any event", lambda s: s.send_frame(0x2, b"\x00\x01\x02garbage")),
        ("binary attachment without its header", lambda s: s.send_frame(0x2, b"\x04" + b"\xff" * 64)),
        ("unknown opcode 0x3", lambda s: s.send_frame(0x3, b"hello")),
        ("reserved control opcode 0xB", lambda s: s.send_frame(0xB, b"")),
        ("continuation without a start", lambda s: s.send_frame(0x0, b"42[]")),
        ("fragment never finished", lambda s: s.send_frame(0x1, b'42["heart', fin=False)),
        ("truncated frame (length lies)", lambda s: s.send_frame(0x1, b"42[]", length=1000)),
        (
            "frame over the Engine.IO limit",
            lambda s: s.send_text('42["heartbeat","' + "x" * (LIMIT * 5) + '"]'),
        ),
        ("ping with a huge control payload", lambda s: s.send_frame(0x9, b"x" * 200)),
        ("close with a bad code", lambda s: s.send_frame(0x8, b"\x03\xe7")),
    ]
    try:
        for name, send in cases:
            for connected in (False, True):  # before and after the Socket.IO namespace connect
                sock = await RawSocket.open(fuzz_server.url)
                try:
                    if connected:
                        sock.send_text(json.dumps({"token": scene.carol["token"]}).join(["40", ""]))
                        assert (await sock.recv() or b"").startswith(b"40{"), "namespace connect failed"
                    send(sock)
                    with contextlib.suppress(ConnectionError):
                        await sock.writer.drain()
                    outcomes[f"{name} ({'after' if connected else 'before'} connect)"] = await sock.outcome(
                        connected
                    )
                finally:
                    sock.close()
        SENT["raw frames"] = len(outcomes)
        # The server still serves the bystander and new sessions.
        await still_serving(scene, bob)
    finally:
        await bystander.stop()
        await bob.close()
    assert not bystander.failures and bystander.answered > 0, bystander.failures[:5]
    no_crash_logged(caplog)
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("works", "closed", "silent")}
    print(f"\nraw garbage frames: {len(outcomes)}; afterwards the connection {counts}")
    # A connection that neither answers nor closes would be a session stuck until its ping times out.
    # Silence is the protocol's answer only here; each such connection ends at the next ping deadline.
    may_be_silent = {
        "text '1' (before connect)",  # the client closed the Engine.IO session itself
        "text '1' (after connect)",
        "text '41' (after connect)",  # the client left the namespace: a heartbeat there gets no ack
        'text \'451-["ydoc:document:update",{"document_id":"note:x","update"\' (after connect)',
        'text \'452-["heartbeat",{"_placeholder":true,"num":7}]\' (after connect)',  # awaits attachments
        "truncated frame (length lies) (before connect)",  # the probe is read as the rest of that frame
        "truncated frame (length lies) (after connect)",
    }
    silent = {k for k, v in outcomes.items() if v == "silent"}
    assert silent <= may_be_silent, silent - may_be_silent


async def test_an_event_named_disconnect_does_not_end_the_session(server: RunningServer) -> None:
    """python-socketio would run the server's disconnect handler for a client event named "disconnect": the
    session would vanish from presence (and from the per-user connection count) while still connected."""
    ada = await server.signup("Ada")
    client = await RecordingClient(server.url).connect(ada["token"])
    try:
        for name in ("disconnect", "connect", "disconnecting"):
            ack = await client.call(name, {})
            assert ack["error"]["code"] == "invalid_payload", (name, ack)
        assert client.sio.get_sid() in await server.services.sessions.sids_of(ada["id"])
        assert await client.call("heartbeat", {}) is None
    finally:
        await client.close()


async def test_deep_nesting_is_refused_before_it_is_stored_or_relayed(fuzz_server: RunningServer) -> None:
    """Objects nested deeper than MAX_NESTING were stored and then failed to serialize (500 after the write),
    or failed inside python-socketio's emit; now they are refused up front, over REST and on sockets."""
    scene = await make_scene(fuzz_server)
    db = fuzz_server.services.db
    c, chat = scene.channel_id, scene.chat_id
    deep = {"k": nested(MAX_NESTING + 1)}
    bodies = [
        (scene.ada["token"], f"/api/v1/channels/{c}/messages/post", {"content": "x", "data": deep}),
        (scene.ada["token"], f"/api/v1/channels/{c}/messages/post", {"content": "x", "meta": deep}),
        (scene.ada["token"], "/api/v1/notes/create", {"title": "t", "data": deep}),
        (scene.ada["token"], "/api/v1/chats/new", {"chat": {"title": "t", "x": deep}}),
        (scene.ada["token"], f"/api/v1/chats/{chat}/messages/m1/event", {"type": "x", "data": deep}),
    ]
    before = await snapshot(db)
    for token, path, body in bodies:
        for payload in (body, {**body, **{k: {"k": nested(600)} for k in body if k != "content"}}):
            async with scene.http(token) as http:
                r = await http.post(path, json=payload)
            assert r.status_code == 422 and r.json()["code"] == "invalid_payload", (path, r.text[:200])
    async with httpx.AsyncClient(base_url=fuzz_server.url, headers={"X-API-Key": scene.api_key}) as http:
        r = await http.post(
            "/api/v1/events/publish", json={"room": f"user:{scene.bob['id']}", "event": "e", "data": deep}
        )
        assert r.status_code == 422, r.text[:200]
    ada = await RecordingClient(fuzz_server.url).connect(scene.ada["token"])
    try:
        ack = await ada.call(
            "events:channel",
            {"channel_id": c, "data": {"type": "typing", "data": {"typing": True, "x": deep}}},
        )
        assert ack["error"]["code"] == "invalid_payload"
        # As deep as allowed is fine, end to end.
        ok = {"k": nested(MAX_NESTING - 2)}
        async with scene.http(scene.ada["token"]) as http:
            r = await http.post(f"/api/v1/channels/{c}/messages/post", json={"content": "x", "data": ok})
            assert r.status_code == 200, r.text[:200]
    finally:
        await ada.close()
    after = await snapshot(db)
    assert len(after["channel_messages"]) == len(before["channel_messages"]) + 1
    assert {k: v for k, v in after.items() if k != "channel_messages"} == {
        k: v for k, v in before.items() if k != "channel_messages"
    }


# text that cannot be stored: lone surrogates (not encodable as UTF-8) and NUL characters, at any depth

POISON = ["\udfff", "a\ud800b", "\udc00\ud83d", "x\x00y", "\ud83d"]


def poisoned(template: Any) -> list[Any]:
    """Copies of `template` with one string (or key) made unencodable: every string leaf in turn, a new key in
    every object, and a poisoned value nested under every object."""
    variants: list[Any] = []

    def walk(value: Any, rebuild: Callable[[Any], Any]) -> None:
        if isinstance(value, str):
            for n, bad in enumerate(POISON):
                variants.append(rebuild(value + bad if n % 2 else bad))
        elif isinstance(value, dict):
            variants.append(rebuild({**value, POISON[len(variants) % len(POISON)]: 1}))
            variants.append(rebuild({**value, "deep": {"a": [{"b": POISON[len(variants) % len(POISON)]}]}}))
            for key, item in value.items():
                walk(item, lambda new, key=key, value=value: rebuild({**value, key: new}))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, lambda new, i=i, value=value: rebuild([*value[:i], new, *value[i + 1 :]]))

    walk(template, lambda new: new)
    return variants


def _plain(value: Any) -> Any:
    """JSON-able: bytes become arrays of integers (the Yjs wire form of the original client)."""
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _ack_frame(sock: RawSocket, ack_id: int) -> bytes | None:
    """The ack frame of `ack_id` (other frames, such as events to the user, are skipped); None if none came."""
    while True:
        try:
            frame = await sock.recv(timeout=5)
        except TimeoutError:
            return None
        if frame is None or frame.startswith(f"43{ack_id}[".encode()):
            return frame


async def others_views_answer(scene: Scene) -> list[str]:
    """Every shared view of another member (Bob) and the owner's chat still answers 200."""
    wrong = []
    async with scene.http(scene.bob["token"]) as bob, scene.http(scene.ada["token"]) as ada:
        for http, path in (
            (bob, "/api/v1/channels/"),
            (bob, f"/api/v1/channels/{scene.channel_id}"),
            (bob, f"/api/v1/channels/{scene.channel_id}/messages"),
            (bob, f"/api/v1/channels/{scene.channel_id}/messages/{scene.message_id}/thread"),
            (bob, "/api/v1/notes/"),
            (ada, f"/api/v1/notes/{scene.note_id}"),
            (ada, f"/api/v1/chats/{scene.chat_id}"),
            (ada, "/api/v1/chats/"),
            (ada, "/api/v1/users/"),
        ):
            try:
                r = await asyncio.wait_for(http.get(path), 10)
            except TimeoutError:
                wrong.append(f"GET {path}: no answer in 10 s")
                continue
            if r.status_code != 200:
                wrong.append(f"GET {path}: {r.status_code} {r.text[:200]}")
    return wrong


async def test_unencodable_text_on_every_route_and_event_is_refused_and_stores_nothing(
    fuzz_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Lone surrogates pass any JSON parser but no UTF-8 encoder: stored, they made every shared view that
    includes them answer 500 (channel history, note list, channel list) and the chat writer retry forever. Each
    string of every REST body and socket payload in turn, new keys and nested values: refused with
    `invalid_payload`, nothing stored, and the other users' views answer afterwards."""
    caplog.set_level(logging.WARNING)
    scene = await make_scene(fuzz_server)
    db = fuzz_server.services.db
    wrong: list[str] = []
    sent = 0
    sock = await RawSocket.open(fuzz_server.url)
    sock.send_text("40" + json.dumps({"token": scene.ada["token"]}))
    sock.send_text('420["heartbeat",{}]')  # its one write of last_active_at happens before the snapshot
    await sock.writer.drain()
    assert (await sock.recv() or b"").startswith(b"40{")
    assert (await sock.recv() or b"").startswith(b"430")
    await fuzz_server.services.writer.flush()
    before = await snapshot(db)
    user_http = scene.http(scene.ada["token"])
    key_http = httpx.AsyncClient(base_url=fuzz_server.url, headers={"X-API-Key": scene.api_key}, timeout=10)
    try:
        for target in route_targets(scene):
            http = key_http if target.key else user_http
            if target.fuzz_path:
                # Paths and query strings are bytes: an encoded surrogate is invalid UTF-8, never a 500.
                for value in ("%ED%B3%BF", "a%ED%A0%80b", "%00", "%C0%80"):
                    path = target.path.replace("{x}", f"x={value}" if "?{x}" in target.path else value)
                    r = await http.request(target.method, path)
                    sent += 1
                    if r.status_code >= 500 or (r.status_code >= 400 and "code" not in _json(r)):
                        wrong.append(f"{target.method} {path}: {r.status_code} {r.text[:200]}")
                continue
            for body in poisoned(target.template):
                r = await http.request(
                    target.method,
                    target.path,
                    content=json.dumps(body).encode(),  # escapes: "\udfff" is valid JSON text
                    headers={"content-type": "application/json"},
                )
                sent += 1
                if not 400 <= r.status_code < 500 or _json(r).get("code") != "invalid_payload":
                    wrong.append(
                        f"{target.method} {target.path} {_short(body)}: {r.status_code} {r.text[:200]}"
                    )
        SENT["rest unencodable"] = sent
        # Socket events, by hand (python-socketio's encoder here is orjson, which refuses to send them).
        events = 0
        for target in event_targets(scene):
            for payload in [*poisoned(_plain(target.template)), ["\udfff"], "\udfff"]:
                events += 1
                sock.send_text(f"42{events}" + json.dumps([target.event, payload]))
                await sock.writer.drain()
                frame = await _ack_frame(sock, events)
                if (
                    frame is None
                    or not frame.startswith(f"43{events}[".encode())
                    or b"invalid_payload" not in frame
                ):
                    wrong.append(f"socket {target.event} {_short(payload)}: {frame!r:.200}")
        sock.send_text('42999999["heartbeat",{}]')
        await sock.writer.drain()
        assert await _ack_frame(sock, 999999) is not None, "the session stopped answering"
        sock.close()
        SENT["socket unencodable"] = events
        await fuzz_server.services.writer.flush()
        after = await snapshot(db)
        changed = [table for table in after if after[table] != before.get(table)]
        if changed:
            wrong.append(f"stored data changed: {changed}")
        wrong += await others_views_answer(scene)
        assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:40])
        bob = await RecordingClient(fuzz_server.url).connect(scene.bob["token"])
        try:
            await still_serving(scene, bob)
        finally:
            await bob.close()
    finally:
        await user_http.aclose()
        await key_http.aclose()
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:40])
    no_crash_logged(caplog)
    print(f"\nunencodable text: {SENT['rest unencodable']} REST requests, {events} socket events")
