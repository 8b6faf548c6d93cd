"""The security matrix as data: every socket event and REST route against every identity, with the expected
outcome; `tests/integration/test_security_matrix.py` runs every case against a real server and checks that
docs/SECURITY.md is this table rendered.

Regenerate the document after changing the table: `python -m tests.security_matrix --write`.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import socketio

from tests.sio import RecordingClient

DOC = Path(__file__).resolve().parent.parent / "docs" / "SECURITY.md"
REGENERATE = "python -m tests.security_matrix --write"

# Who calls. `owner` created the channel (with `member` in it), the note (granting `reader` read and `writer`
# write access) and the chat; `other` is a signed-up user with no relation to any of them. `expired` and
# `revoked` are tokens of `member` (past `exp`; signed out).
USERS = ("anonymous", "expired", "revoked", "other", "member", "reader", "writer", "owner", "admin")
# Who calls the server API: no key, a user's JWT instead of a key, a made-up key, a revoked key, and live keys
# with one scope each.
KEYS = ("no key", "user token", "unknown key", "revoked key", "publish", "channels", "presence", "admin")

OK = "ok"
U = "unauthorized"
F = "forbidden"
NF = "not_found"
NM = "not_member"
INV = "invalid_payload"
HIDDEN = "ok (hidden)"  # answered, but without the owner's data
BAD_TOKENS = {"anonymous": U, "expired": U, "revoked": U}


def users(ok: set[str] | str, deny: str = F, **special: str) -> dict[str, str]:
    """Expected outcomes per user identity: `ok` for the named ones (or "all" valid users), `deny` for the
    other valid users, `unauthorized` for the three without a valid token unless `special` says otherwise."""
    valid = USERS[3:]
    allowed = set(valid) if ok == "all" else set(ok)
    out = {**BAD_TOKENS, **{who: OK if who in allowed else deny for who in valid}}
    out.update({k.replace("_", " "): v for k, v in special.items()})
    return out


def keys(scope: str) -> dict[str, str]:
    """Expected outcomes per API-key identity for a route that needs `scope`."""
    out = {"no key": U, "user token": U, "unknown key": U, "revoked key": U}
    for s in ("publish", "channels", "presence", "admin"):
        out[s] = OK if s in (scope, "admin") else F
    return out


Runner = Callable[["World", str], Awaitable[str]]


@dataclass(frozen=True)
class Action:
    """One thing a caller may try, on one resource, and what each identity must get."""

    kind: str  # "socket", "rest" or "server"
    name: str
    resource: str
    expect: dict[str, str]
    run: Runner = field(compare=False)
    # The database must be unchanged after a refusal (false only where a background task writes anyway).
    check_unchanged: bool = True
    note: str = ""


@dataclass
class World:
    """The server under test and the people and things of the matrix."""

    url: str
    services: Any
    jwt_secret: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, str | None] = field(default_factory=dict)
    channel_id: str = ""
    message_id: str = ""
    note_id: str = ""
    chat_id: str = ""
    chat_message_id: str = "m1"
    yjs_update: list[int] = field(default_factory=list)
    # Set by the test for cases that must change nothing: takes a database snapshot. Runners call `mark()`
    # right before the call under test (after making any fresh things), so `before` is the state it must keep.
    snap: Callable[[], Awaitable[Any]] | None = None
    before: Any = None

    async def mark(self) -> None:
        self.before = await self.snap() if self.snap is not None else None

    def http(self, token: str | None = None, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        h = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers={**h, **(headers or {})}, timeout=10)

    async def as_owner(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http(self.tokens["owner"]) as http:
            r = await http.request(method, path, json=body)
            r.raise_for_status()
            return r.json()

    # fresh things for destructive cases, made by the owner

    async def fresh_channel(self) -> str:
        body = {"name": f"c-{uuid.uuid4().hex[:6]}", "type": "group", "user_ids": [self.ids["member"]]}
        return str((await self.as_owner("POST", "/api/v1/channels/create", body))["id"])

    async def fresh_message(self) -> str:
        path = f"/api/v1/channels/{self.channel_id}/messages/post"
        return str((await self.as_owner("POST", path, {"content": "fresh"}))["id"])

    async def fresh_note(self) -> str:
        body = {
            "title": "fresh",
            "access_control": {
                "read": {"user_ids": [self.ids["reader"]]},
                "write": {"user_ids": [self.ids["writer"]]},
            },
        }
        return str((await self.as_owner("POST", "/api/v1/notes/create", body))["id"])

    async def fresh_chat(self) -> str:
        return str((await self.as_owner("POST", "/api/v1/chats/new", {"chat": {"title": "fresh"}}))["id"])

    async def fresh_task(self) -> str:
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": "go on for 5000 tokens"}],
            "chat_id": self.chat_id,
            "id": f"a-{uuid.uuid4().hex[:6]}",
        }
        return str((await self.as_owner("POST", "/api/chat/completions", body))["task_id"])

    async def fresh_webhook(self) -> str:
        """An incoming webhook of the shared channel."""
        path = f"/api/v1/channels/{self.channel_id}/webhooks/create"
        return str((await self.as_owner("POST", path, {"name": "fresh hook"}))["id"])

    async def fresh_token(self, who: str) -> str | None:
        """A token that may be spent (signed out) without touching the shared one."""
        if who not in self.ids:
            return self.tokens[who]
        user = await self.services.users.get(self.ids[who])
        return str(self.services.auth.issue_token(user)[0])


async def build_world(url: str, services: Any, jwt_secret: str) -> World:
    """Sign the people up and make the shared channel, message, note, chat and API keys."""
    from pycrdt import Doc, Text

    world = World(url=url, services=services, jwt_secret=jwt_secret)
    async with world.http() as http:
        for who in ("admin", "owner", "member", "reader", "writer", "other"):  # the first is the admin
            r = await http.post(
                "/api/v1/auths/signup",
                json={"name": who, "email": f"{who}-{uuid.uuid4().hex[:6]}@example.com", "password": "pw"},
            )
            r.raise_for_status()
            world.tokens[who], world.ids[who] = r.json()["token"], r.json()["id"]
    assert (await services.users.get(world.ids["admin"])).role == "admin"
    world.tokens["anonymous"] = None
    now = int(time.time())
    claims = {"id": world.ids["member"], "jti": uuid.uuid4().hex, "iat": now - 7200, "exp": now - 3600}
    world.tokens["expired"] = jwt.encode(claims, jwt_secret, algorithm="HS256")
    revoked = await world.fresh_token("member")
    async with world.http(revoked) as http:
        (await http.post("/api/v1/auths/signout")).raise_for_status()
    world.tokens["revoked"] = revoked

    world.channel_id = await world.fresh_channel()
    world.message_id = await world.fresh_message()
    world.note_id = await world.fresh_note()
    chat = {
        "title": "owned",
        "history": {"currentId": "m1", "messages": {"m1": {"role": "assistant", "content": "hi"}}},
    }
    world.chat_id = str((await world.as_owner("POST", "/api/v1/chats/new", {"chat": chat}))["id"])

    world.api_keys = {"no key": None, "user token": world.tokens["admin"], "unknown key": "cwk_" + "x" * 40}
    for scope in ("publish", "channels", "presence", "admin"):
        world.api_keys[scope] = (await services.api_keys.create(f"matrix-{scope}", [scope]))[1]
    row, key = await services.api_keys.create("matrix-revoked", ["admin"])
    await services.api_keys.revoke(row["id"])
    world.api_keys["revoked key"] = key

    doc = Doc()
    doc["content"] = text = Text()
    text += "hello"
    world.yjs_update = list(doc.get_update())
    return world


# outcome helpers


def of_response(r: httpx.Response) -> str:
    if r.is_success:
        return OK
    try:
        return str(r.json().get("code") or r.status_code)
    except Exception:
        return str(r.status_code)


def of_ack(ack: Any) -> str:
    if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
        return str(ack["error"].get("code"))
    return OK


async def rest(world: World, who: str, method: str, path: str, body: Any = None) -> str:
    await world.mark()
    async with world.http(world.tokens[who]) as http:
        return of_response(await http.request(method, path, json=body))


async def on_socket(world: World, who: str, steps: Callable[[RecordingClient], Awaitable[Any]]) -> str:
    """Connect as `who` (token in the handshake; none for anonymous), run `steps`, return the last ack's outcome
    (a refused connect is its connect_error code)."""
    await world.mark()
    client = RecordingClient(world.url)
    try:
        try:
            await client.connect(world.tokens[who], join=False)
        except socketio.exceptions.ConnectionError:
            data = client.connect_error or {}
            return (
                str((data.get("data") or {}).get("code", "refused")) if isinstance(data, dict) else "refused"
            )
        return of_ack(await steps(client))
    finally:
        await client.close()


def emit(event: str, payload: Callable[[World], Any]) -> Runner:
    async def run(world: World, who: str) -> str:
        return await on_socket(world, who, lambda c: c.call(event, payload(world)))

    return run


def in_doc(event: str, payload: Callable[[World], Any]) -> Runner:
    """Join the note's document first (whatever that answers), then send `event`."""

    async def run(world: World, who: str) -> str:
        async def steps(c: RecordingClient) -> Any:
            await c.call("ydoc:document:join", {"document_id": f"note:{world.note_id}"})
            return await c.call(event, payload(world))

        return await on_socket(world, who, steps)

    return run


def route(method: str, path: str, body: Callable[[World], Any] | None = None) -> Runner:
    """A REST call on the shared resources; `path` is formatted with the world's ids."""

    async def run(world: World, who: str) -> str:
        p = path.format(c=world.channel_id, m=world.message_id, n=world.note_id, chat=world.chat_id)
        return await rest(world, who, method, p, body(world) if body else None)

    return run


def on_fresh(make: str, method: str, path: str, body: Callable[[World], Any] | None = None) -> Runner:
    """A destructive REST call on a thing made for this case alone (`make`: channel, message, note, chat, task)."""

    async def run(world: World, who: str) -> str:
        fresh = await getattr(world, f"fresh_{make}")()
        p = path.format(c=world.channel_id, x=fresh)
        return await rest(world, who, method, p, body(world) if body else None)

    return run


async def connect(world: World, who: str) -> str:
    async def nothing(_c: RecordingClient) -> None:
        return None

    return await on_socket(world, who, nothing)


async def signout(world: World, who: str) -> str:
    token = await world.fresh_token(who)
    await world.mark()
    async with world.http(token) as http:
        return of_response(await http.post("/api/v1/auths/signout"))


async def user_join(world: World, who: str) -> str:
    """An anonymous connection authenticating afterwards with `who`'s token (anonymous: no token at all)."""
    await world.mark()
    client = RecordingClient(world.url)
    try:
        await client.connect(None, join=False)
        token = world.tokens[who]
        return of_ack(await client.call("user-join", {"auth": {"token": token}} if token else {}))
    finally:
        await client.close()


async def stop_task(world: World, who: str) -> str:
    task_id = await world.fresh_task()
    try:
        return await rest(world, who, "POST", f"/api/tasks/stop/{task_id}")
    finally:
        await world.services.tasks.stop(task_id)


async def stop_chat(world: World, who: str) -> str:
    task_id = await world.fresh_task()
    try:
        return await rest(world, who, "POST", f"/api/tasks/chat/{world.chat_id}/stop")
    finally:
        await world.services.tasks.stop(task_id)


async def chat_tasks(world: World, who: str) -> str:
    task_id = await world.fresh_task()
    try:
        async with world.http(world.tokens[who]) as http:
            r = await http.get(f"/api/tasks/chat/{world.chat_id}")
        outcome = of_response(r)
        if outcome == OK and task_id not in r.json()["task_ids"]:
            return HIDDEN
        return outcome
    finally:
        await world.services.tasks.stop(task_id)


async def start_completion(world: World, who: str) -> str:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "chat_id": world.chat_id,
        "id": f"a-{uuid.uuid4().hex[:6]}",
    }
    async with world.http(world.tokens[who]) as http:
        r = await http.post("/api/chat/completions", json=body)
    if r.is_success:
        await world.services.tasks.stop(r.json()["task_id"])
    return of_response(r)


async def list_channels(world: World, who: str) -> str:
    """The owner's channel must be listed only to its members."""
    async with world.http(world.tokens[who]) as http:
        r = await http.get("/api/v1/channels/")
    if r.is_success and world.channel_id not in [c["id"] for c in r.json()]:
        return HIDDEN
    return of_response(r)


async def list_notes(world: World, who: str) -> str:
    async with world.http(world.tokens[who]) as http:
        r = await http.get("/api/v1/notes/")
    if r.is_success and world.note_id not in [n["id"] for n in r.json()]:
        return HIDDEN
    return of_response(r)


async def list_chats(world: World, who: str) -> str:
    async with world.http(world.tokens[who]) as http:
        r = await http.get("/api/v1/chats/")
    if r.is_success and world.chat_id not in [c["id"] for c in r.json()]:
        return HIDDEN
    return of_response(r)


def server_route(
    method: str, path: str, body: Callable[[World], Any] | None = None, fresh: bool = False
) -> Runner:
    async def run(world: World, who: str) -> str:
        channel = await world.fresh_channel() if fresh else world.channel_id
        p = path.format(c=channel, u=world.ids["other"])
        key = world.api_keys[who]
        await world.mark()
        async with world.http(headers={"X-API-Key": key} if key else None) as http:
            if who == "user token":
                http.headers["Authorization"] = f"Bearer {key}"
                del http.headers["X-API-Key"]
            return of_response(await http.request(method, p, json=body(world) if body else None))

    return run


def server_on_endpoint(method: str, path: str, body: Callable[[World], Any] | None = None) -> Runner:
    """A server API call on an outgoing webhook endpoint made for this case (subscribed to nothing the matrix
    does, so no delivery writes to the database while refusals are checked)."""

    async def run(world: World, who: str) -> str:
        endpoint = await world.services.webhooks.create("http://127.0.0.1:9/hook", ["note.updated"], "", None)
        p = path.format(e=endpoint["id"])
        key = world.api_keys[who]
        await world.mark()
        async with world.http(headers={"X-API-Key": key} if key else None) as http:
            if who == "user token":
                http.headers["Authorization"] = f"Bearer {key}"
                del http.headers["X-API-Key"]
            return of_response(await http.request(method, p, json=body(world) if body else None))

    return run


def note_doc(w: World) -> dict[str, Any]:
    return {"document_id": f"note:{w.note_id}"}


MEMBERS = {"member", "owner"}
READERS = {"reader", "writer", "owner", "admin"}
WRITERS = {"writer", "owner", "admin"}
OWNER_ADMIN = {"owner", "admin"}

ACTIONS: list[Action] = [
    # socket events (the identity's token is in the handshake; anonymous connects without one)
    Action(
        "socket",
        "connect",
        "-",
        users("all", anonymous=OK),
        connect,
        note="anonymous may connect (then only user-join works); a bad token is refused at connect",
    ),
    Action(
        "socket", "user-join", "-", users("all", anonymous=INV), user_join, note="on an anonymous connection"
    ),
    Action(
        "socket",
        "join-channels",
        "-",
        users("all"),
        emit("join-channels", lambda w: {}),
        note="joins the rooms of the caller's own channels only",
    ),
    Action(
        "socket", "join-note", "note", users(READERS, NF), emit("join-note", lambda w: {"note_id": w.note_id})
    ),
    Action(
        "socket",
        "events:channel typing",
        "channel",
        users(MEMBERS, NM),
        emit(
            "events:channel",
            lambda w: {"channel_id": w.channel_id, "data": {"type": "typing", "data": {"typing": True}}},
        ),
    ),
    Action(
        "socket",
        "events:channel last_read_at",
        "channel",
        users(MEMBERS, NM),
        emit("events:channel", lambda w: {"channel_id": w.channel_id, "data": {"type": "last_read_at"}}),
    ),
    Action(
        "socket",
        "events:chat last_read_at",
        "chat",
        users({"owner"}, NF),
        emit("events:chat", lambda w: {"chat_id": w.chat_id, "data": {"type": "last_read_at"}}),
    ),
    Action("socket", "ydoc:document:join", "note", users(READERS, NF), emit("ydoc:document:join", note_doc)),
    Action(
        "socket",
        "ydoc:document:state",
        "note",
        users(READERS, NF),
        in_doc("ydoc:document:state", note_doc),
        note="after trying to join",
    ),
    Action(
        "socket",
        "ydoc:document:update",
        "note",
        users(WRITERS, F, member=NF, other=NF),
        in_doc("ydoc:document:update", lambda w: {**note_doc(w), "update": w.yjs_update}),
        note="after trying to join",
    ),
    Action(
        "socket",
        "ydoc:awareness:update",
        "note",
        users(READERS, NM),
        in_doc("ydoc:awareness:update", lambda w: {**note_doc(w), "update": [0]}),
        note="after trying to join",
    ),
    Action("socket", "ydoc:document:leave", "note", users("all"), in_doc("ydoc:document:leave", note_doc)),
    Action("socket", "usage", "-", users("all"), emit("usage", lambda w: {"model": "demo"})),
    Action("socket", "heartbeat", "-", users("all"), emit("heartbeat", lambda w: {})),
    Action(
        "socket", "unknown event", "-", users(set(), INV, anonymous=INV), emit("no-such-event", lambda w: {})
    ),
    # REST routes of users
    Action("rest", "GET /api/v1/auths/", "-", users("all"), route("GET", "/api/v1/auths/")),
    Action(
        "rest", "POST /api/v1/auths/signout", "-", users("all"), signout, note="a fresh token of the caller"
    ),
    Action(
        "rest",
        "POST /api/v1/auths/add",
        "-",
        users({"admin"}),
        route(
            "POST",
            "/api/v1/auths/add",
            lambda w: {
                "name": "New",
                "email": f"n-{uuid.uuid4().hex[:8]}@x.io",
                "password": "pw",
                "role": "user",
            },
        ),
    ),
    Action("rest", "GET /api/v1/users/", "-", users({"admin"}), route("GET", "/api/v1/users/")),
    Action(
        "rest",
        "POST /api/v1/channels/create (group)",
        "channel",
        users("all"),
        route("POST", "/api/v1/channels/create", lambda w: {"name": "g", "type": "group"}),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/create (public)",
        "channel",
        users({"admin"}),
        route("POST", "/api/v1/channels/create", lambda w: {"name": "p"}),
    ),
    Action("rest", "GET /api/v1/channels/", "channel", users(MEMBERS, HIDDEN), list_channels),
    Action(
        "rest",
        "GET /api/v1/channels/{id}",
        "channel",
        users(MEMBERS, NM),
        route("GET", "/api/v1/channels/{c}"),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/update/members/add",
        "channel",
        users(OWNER_ADMIN),
        on_fresh(
            "channel",
            "POST",
            "/api/v1/channels/{x}/update/members/add",
            lambda w: {"user_ids": [w.ids["other"]]},
        ),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/update/members/remove",
        "channel",
        users(OWNER_ADMIN),
        on_fresh(
            "channel",
            "POST",
            "/api/v1/channels/{x}/update/members/remove",
            lambda w: {"user_ids": [w.ids["member"]]},
        ),
    ),
    Action(
        "rest",
        "DELETE /api/v1/channels/{id}/delete",
        "channel",
        users(OWNER_ADMIN),
        on_fresh("channel", "DELETE", "/api/v1/channels/{x}/delete"),
    ),
    Action(
        "rest",
        "GET /api/v1/channels/{id}/messages",
        "channel",
        users(MEMBERS, NM),
        route("GET", "/api/v1/channels/{c}/messages"),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/messages/post",
        "channel",
        users(MEMBERS, NM),
        route("POST", "/api/v1/channels/{c}/messages/post", lambda w: {"content": "hello"}),
    ),
    Action(
        "rest",
        "GET /api/v1/channels/{id}/messages/{mid}/thread",
        "message",
        users(MEMBERS, NM),
        route("GET", "/api/v1/channels/{c}/messages/{m}/thread"),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/messages/{mid}/update",
        "message",
        users(OWNER_ADMIN, NM, member=F),
        on_fresh("message", "POST", "/api/v1/channels/{c}/messages/{x}/update", lambda w: {"content": "e"}),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/messages/{mid}/reactions/add",
        "message",
        users(MEMBERS, NM),
        on_fresh(
            "message", "POST", "/api/v1/channels/{c}/messages/{x}/reactions/add", lambda w: {"name": "+1"}
        ),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/messages/{mid}/reactions/remove",
        "message",
        users(MEMBERS, NM),
        on_fresh(
            "message", "POST", "/api/v1/channels/{c}/messages/{x}/reactions/remove", lambda w: {"name": "+1"}
        ),
    ),
    Action(
        "rest",
        "DELETE /api/v1/channels/{id}/messages/{mid}/delete",
        "message",
        users(OWNER_ADMIN, NM, member=F),
        on_fresh("message", "DELETE", "/api/v1/channels/{c}/messages/{x}/delete"),
    ),
    Action(
        "rest",
        "POST /api/v1/chats/new",
        "chat",
        users("all"),
        route("POST", "/api/v1/chats/new", lambda w: {"chat": {"title": "t"}}),
    ),
    Action("rest", "GET /api/v1/chats/", "chat", users({"owner"}, HIDDEN), list_chats),
    Action(
        "rest",
        "GET /api/v1/chats/{id}",
        "chat",
        users(OWNER_ADMIN, NF),
        route("GET", "/api/v1/chats/{chat}"),
        note="admins may read any chat",
    ),
    Action(
        "rest",
        "POST /api/v1/chats/{id}",
        "chat",
        users({"owner"}, NF),
        route("POST", "/api/v1/chats/{chat}", lambda w: {"chat": {"title": "renamed"}}),
        note="update or rename: the owner only",
    ),
    Action(
        "rest",
        "DELETE /api/v1/chats/{id}",
        "chat",
        users(OWNER_ADMIN, NF),
        on_fresh("chat", "DELETE", "/api/v1/chats/{x}"),
    ),
    Action("rest", "GET /api/v1/chats/pinned", "chat", users("all"), route("GET", "/api/v1/chats/pinned")),
    Action(
        "rest", "GET /api/v1/chats/all/tags", "chat", users("all"), route("GET", "/api/v1/chats/all/tags")
    ),
    Action(
        "rest",
        "POST /api/v1/chats/{id}/messages/{mid}/event",
        "chat",
        users(OWNER_ADMIN, NF),
        route(
            "POST",
            "/api/v1/chats/{chat}/messages/m1/event",
            lambda w: {"type": "chat:message:delta", "data": {"content": "x"}},
        ),
        note="an admin's event goes to the owner's tabs",
    ),
    Action(
        "rest",
        "POST /api/v1/notes/create",
        "note",
        users("all"),
        route("POST", "/api/v1/notes/create", lambda w: {"title": "mine"}),
    ),
    Action("rest", "GET /api/v1/notes/", "note", users(READERS, HIDDEN), list_notes),
    Action("rest", "GET /api/v1/notes/{id}", "note", users(READERS, NF), route("GET", "/api/v1/notes/{n}")),
    Action(
        "rest",
        "POST /api/v1/notes/{id}/update",
        "note",
        users(WRITERS, F, member=NF, other=NF),
        route("POST", "/api/v1/notes/{n}/update", lambda w: {"title": "edited"}),
    ),
    Action(
        "rest",
        "POST /api/v1/notes/{id}/access/update",
        "note",
        users(OWNER_ADMIN, F, member=NF, other=NF),
        on_fresh(
            "note",
            "POST",
            "/api/v1/notes/{x}/access/update",
            lambda w: {"access_control": {"read": {"user_ids": [w.ids["other"]]}}},
        ),
    ),
    Action(
        "rest",
        "DELETE /api/v1/notes/{id}/delete",
        "note",
        users(OWNER_ADMIN, F, member=NF, other=NF),
        on_fresh("note", "DELETE", "/api/v1/notes/{x}/delete"),
    ),
    Action("rest", "GET /api/models", "-", users("all"), route("GET", "/api/models")),
    Action(
        "rest",
        "POST /api/chat/completions",
        "chat",
        users({"owner"}, NF),
        start_completion,
        check_unchanged=False,
        note="on the owner's chat",
    ),
    Action(
        "rest",
        "POST /api/tasks/stop/{task_id}",
        "task",
        users(OWNER_ADMIN, NF),
        stop_task,
        check_unchanged=False,
        note="a running generation of the owner",
    ),
    Action(
        "rest",
        "POST /api/tasks/chat/{id}/stop",
        "task",
        users(OWNER_ADMIN, NF),
        stop_chat,
        check_unchanged=False,
        note="stops the chat's generations from any tab",
    ),
    Action(
        "rest",
        "GET /api/tasks/chat/{id}",
        "task",
        users(OWNER_ADMIN, HIDDEN),
        chat_tasks,
        check_unchanged=False,
        note="lists only the caller's own tasks (admin: all)",
    ),
    Action("rest", "GET /api/usage", "-", users("all"), route("GET", "/api/usage")),
    Action(
        "rest",
        "GET /metrics",
        "-",
        {k: OK for k in USERS},
        route("GET", "/metrics"),
        note="public: restrict it at the proxy or turn it off (CHATWIRE_METRICS_ENABLED=false)",
    ),
    Action("rest", "GET /health", "-", {k: OK for k in USERS}, route("GET", "/health")),
    # presence, history and incoming webhooks of channels and notes
    Action(
        "rest",
        "GET /api/v1/channels/{id}/presence",
        "channel",
        users(MEMBERS, NM),
        route("GET", "/api/v1/channels/{c}/presence"),
    ),
    Action(
        "rest",
        "GET /api/v1/channels/{id}/events",
        "channel",
        users(MEMBERS, NM),
        route("GET", "/api/v1/channels/{c}/events"),
    ),
    Action(
        "rest",
        "GET /api/v1/notes/{id}/presence",
        "note",
        users(READERS, NF),
        route("GET", "/api/v1/notes/{n}/presence"),
    ),
    Action(
        "rest",
        "GET /api/v1/channels/{id}/webhooks",
        "channel",
        users(OWNER_ADMIN, F),
        route("GET", "/api/v1/channels/{c}/webhooks"),
        note="the channel's creator or an admin (the answer holds the tokens)",
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/webhooks/create",
        "channel",
        users(OWNER_ADMIN, F),
        route("POST", "/api/v1/channels/{c}/webhooks/create", lambda w: {"name": "hook"}),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/{id}/webhooks/{wid}/update",
        "webhook",
        users(OWNER_ADMIN, F),
        on_fresh(
            "webhook", "POST", "/api/v1/channels/{c}/webhooks/{x}/update", lambda w: {"name": "renamed"}
        ),
    ),
    Action(
        "rest",
        "DELETE /api/v1/channels/{id}/webhooks/{wid}/delete",
        "webhook",
        users(OWNER_ADMIN, F),
        on_fresh("webhook", "DELETE", "/api/v1/channels/{c}/webhooks/{x}/delete"),
    ),
    Action(
        "rest",
        "POST /api/v1/channels/webhooks/{wid}/{token} (wrong token)",
        "webhook",
        users(set(), U),
        on_fresh(
            "webhook", "POST", "/api/v1/channels/webhooks/{x}/not-the-token", lambda w: {"content": "x"}
        ),
        note="the URL's token is the credential: a login does not replace it",
    ),
    # server API (API keys)
    Action(
        "server",
        "POST /api/v1/events/publish",
        "room",
        keys("publish"),
        server_route(
            "POST",
            "/api/v1/events/publish",
            lambda w: {"room": f"user:{w.ids['other']}", "event": "ping", "data": {}},
        ),
    ),
    Action(
        "server",
        "POST /api/v1/events/publish/batch",
        "room",
        keys("publish"),
        server_route(
            "POST",
            "/api/v1/events/publish/batch",
            lambda w: {"events": [{"room": f"user:{w.ids['other']}", "event": "ping", "data": {}}]},
        ),
    ),
    Action(
        "server",
        "PUT /api/v1/server/users/{id}",
        "user",
        keys("channels"),
        server_route("PUT", "/api/v1/server/users/{u}", lambda w: {"name": "other"}),
    ),
    Action(
        "server",
        "POST /api/v1/server/channels",
        "channel",
        keys("channels"),
        server_route("POST", "/api/v1/server/channels", lambda w: {"name": "srv"}),
    ),
    Action(
        "server",
        "GET /api/v1/server/channels/{id}",
        "channel",
        keys("channels"),
        server_route("GET", "/api/v1/server/channels/{c}"),
    ),
    Action(
        "server",
        "POST /api/v1/server/channels/{id}/members/add",
        "channel",
        keys("channels"),
        server_route(
            "POST",
            "/api/v1/server/channels/{c}/members/add",
            lambda w: {"user_ids": [w.ids["other"]]},
            fresh=True,
        ),
    ),
    Action(
        "server",
        "POST /api/v1/server/channels/{id}/members/remove",
        "channel",
        keys("channels"),
        server_route(
            "POST",
            "/api/v1/server/channels/{c}/members/remove",
            lambda w: {"user_ids": [w.ids["member"]]},
            fresh=True,
        ),
    ),
    Action(
        "server",
        "DELETE /api/v1/server/channels/{id}",
        "channel",
        keys("channels"),
        server_route("DELETE", "/api/v1/server/channels/{c}", fresh=True),
    ),
    Action("server", "GET /api/v1/presence", "-", keys("presence"), server_route("GET", "/api/v1/presence")),
    Action(
        "server",
        "POST /api/v1/presence/users/{id}/disconnect",
        "user",
        keys("presence"),
        server_route("POST", "/api/v1/presence/users/{u}/disconnect"),
    ),
    Action(
        "server",
        "GET /api/v1/presence/rooms/{room}",
        "channel",
        keys("presence"),
        server_route("GET", "/api/v1/presence/rooms/channel:{c}"),
    ),
    Action(
        "server",
        "GET /api/v1/server/rooms/{room}/events",
        "channel",
        keys("publish"),
        server_route("GET", "/api/v1/server/rooms/channel:{c}/events"),
    ),
    Action(
        "server",
        "POST /api/v1/server/webhooks",
        "endpoint",
        keys("webhooks"),
        server_on_endpoint(
            "POST",
            "/api/v1/server/webhooks",
            lambda w: {"url": "http://127.0.0.1:9/x", "events": ["note.updated"]},
        ),
        check_unchanged=True,
    ),
    Action(
        "server",
        "GET /api/v1/server/webhooks",
        "-",
        keys("webhooks"),
        server_on_endpoint("GET", "/api/v1/server/webhooks"),
    ),
    Action(
        "server",
        "GET /api/v1/server/webhooks/{id}",
        "endpoint",
        keys("webhooks"),
        server_on_endpoint("GET", "/api/v1/server/webhooks/{e}"),
    ),
    Action(
        "server",
        "PATCH /api/v1/server/webhooks/{id}",
        "endpoint",
        keys("webhooks"),
        server_on_endpoint("PATCH", "/api/v1/server/webhooks/{e}", lambda w: {"active": False}),
    ),
    Action(
        "server",
        "DELETE /api/v1/server/webhooks/{id}",
        "endpoint",
        keys("webhooks"),
        server_on_endpoint("DELETE", "/api/v1/server/webhooks/{e}"),
    ),
    Action(
        "server",
        "GET /api/v1/server/webhooks/{id}/deliveries",
        "endpoint",
        keys("webhooks"),
        server_on_endpoint("GET", "/api/v1/server/webhooks/{e}/deliveries"),
    ),
    Action(
        "server",
        "POST /api/v1/server/webhooks/{id}/deliveries/{did}/retry",
        "endpoint",
        {**keys("webhooks"), "admin": NF},
        server_on_endpoint("POST", "/api/v1/server/webhooks/{e}/deliveries/none/retry"),
        note="admin: 404 for a delivery that does not exist",
    ),
]


def case_count() -> int:
    return sum(len(a.expect) for a in ACTIONS)


def render() -> str:
    """docs/SECURITY.md: the matrix tables and the limits, from ACTIONS."""
    short = {
        OK: "ok",
        U: "401",
        F: "403",
        NF: "404",
        NM: "403 nm",
        INV: "400",
        HIDDEN: "hidden",
        "rate_limited": "429",
    }
    lines = [
        "# Security",
        "",
        f"<!-- Generated by tests/security_matrix.py; do not edit by hand. Regenerate: `{REGENERATE}`. -->",
        "",
        "Who may do what. Every cell below is a test case: `tests/integration/test_security_matrix.py` runs all "
        f"{case_count()} of them against a real server (python-socketio client and HTTP), checks the outcome, and "
        "for every refusal checks that the database is unchanged (a snapshot of every table before and after).",
        "",
        "Identities: `owner` created the channel (with `member` in it), the note (granting `reader` read and "
        "`writer` write access) and the chat; `other` is a signed-up user with no relation to them; `expired` "
        "(past `exp`) and `revoked` (signed out) are tokens of `member`; `admin` is the first user.",
        "",
        "Outcomes: `ok`; `401` unauthorized; `403` forbidden; `403 nm` not_member; `404` not_found (a thing the "
        "caller may not see is reported as missing); `400` invalid_payload; `hidden` = answered, but the "
        'owner\'s thing is not in the list. On sockets the code is in the ack `{"error": {"code"}}`; a bad '
        "token is refused at connect (`connect_error` with `data.code`), so every event of `expired` and "
        "`revoked` is `401`.",
        "",
    ]
    for kind, title, idents in (
        ("socket", "Socket events", USERS),
        ("rest", "REST routes", USERS),
        ("server", "Server API (API keys)", KEYS),
    ):
        lines += [
            f"## {title}",
            "",
            "| action | on | " + " | ".join(idents) + " |",
            "|---|---|" + "---|" * len(idents),
        ]
        for a in ACTIONS:
            if a.kind != kind:
                continue
            name = f"`{a.name}`" + (f" ({a.note})" if a.note else "")
            cells = [short.get(a.expect[i], a.expect[i]) for i in idents]
            lines.append(f"| {name} | {a.resource} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Server API identities: `user token` is a user's JWT (even an admin's) where an API key is expected; "
        "`unknown key` is made up; `revoked key` was an `admin` key revoked with `chatwire keys revoke`; the "
        "others are live keys with that one scope (`admin` allows every scope).",
        "",
        LIMITS,
    ]
    return "\n".join(lines)


LIMITS = """## Limits

| limit | setting (default) | refusal |
|---|---|---|
| socket events per session | `CHATWIRE_RATE_LIMIT_EVENTS` (50/s), `CHATWIRE_RATE_LIMIT_BURST` (200) | ack `rate_limited`; the connection stays open |
| socket event handlers in flight per connection | `CHATWIRE_SOCKET_MAX_HANDLERS` (16; 0 = off) | later events wait in arrival order, at most `CHATWIRE_RATE_LIMIT_BURST` of them; past that the ack `rate_limited` ("too many events in flight"); the connection stays open |
| socket events per client IP, all its sessions | `CHATWIRE_RATE_LIMIT_IP_EVENTS` (1000/s; 0 = off), `CHATWIRE_RATE_LIMIT_IP_EVENT_BURST` (5000) | ack `rate_limited` |
| socket connects per client IP | `CHATWIRE_RATE_LIMIT_IP_CONNECTS` (50/s; 0 = off), `CHATWIRE_RATE_LIMIT_IP_CONNECT_BURST` (500) | `connect_error` `{message, data: {code: "rate_limited"}}` |
| live connections per user, across the fleet | `CHATWIRE_MAX_CONNECTIONS_PER_USER` (100; 0 = off) | `connect_error` `data.code` `too_many_connections` (or that ack to `user-join`) |
| socket event payload, REST body | `CHATWIRE_MAX_PAYLOAD_BYTES` (1 MiB) | ack / HTTP 413 `payload_too_large`; a websocket frame over 4x the limit closes the connection |
| size of one collaborative document (its encoded Yjs state; a live document holds ~8-12x that in memory while anyone edits it) | `CHATWIRE_DOC_MAX_BYTES` (4 MiB; 0 = off) | ack `payload_too_large` to the update that would pass it, nothing applied, stored or relayed; deleting content frees room at the next compaction |
| nesting of lists/objects in any payload | 128 levels (`chatwire.protocol.MAX_NESTING`) | ack / HTTP 422 `invalid_payload` |
| text: every string and key at any depth must be encodable UTF-8 (no lone surrogates such as `"\\udfff"`) and hold no NUL | always (REST bodies, socket payloads, emitted and published events, external token claims) | HTTP 422 / ack `invalid_payload`, nothing stored; a token's id claim: 401; its name or email: ignored |
| binary attachments of one socket packet | `CHATWIRE_MAX_ATTACHMENTS` (16), `CHATWIRE_MAX_ATTACHMENT_BYTES` (1 MiB in all) | checked on the announcement and before each attachment is kept: an anonymous connection is closed; a signed-in one gets the ack `payload_too_large`, the rest of the packet is thrown away and the connection stays |
| failed sign-ins per account (email, known or not) | `CHATWIRE_SIGNIN_ACCOUNT_ATTEMPTS` (10; 0 = off) in `CHATWIRE_SIGNIN_WINDOW_SECONDS` (300 s, sliding) | HTTP 429 `rate_limited` with `Retry-After` (seconds), before any password hashing; a right password waits too; a success clears the account's count |
| failed sign-ins per client IP | `CHATWIRE_SIGNIN_IP_ATTEMPTS` (50; 0 = off) in the same window | HTTP 429 `rate_limited` with `Retry-After` |
| time to send a request's headers (every request of a kept-alive connection) | `CHATWIRE_HTTP_HEADER_TIMEOUT` (10 s); at most 64 KiB of headers | HTTP 408 (431 when too large) and the connection is closed |
| connections per client IP whose first request's headers are not complete (slowloris) | `CHATWIRE_HTTP_MAX_PENDING_PER_IP` (64; 0 = off) | the connection is closed at once, unanswered |
| OpenAPI schema and docs (`/openapi.json`, `/docs`, `/redoc`: every route, the server API too) | `CHATWIRE_OPENAPI_ENABLED` (false) | 404 unless enabled |
| CORS (REST and the Socket.IO handshake) | `CHATWIRE_CORS_ORIGINS` (`*`) | the browser refuses; set your app's origins in production |

Text: JSON lets a string hold a lone surrogate (`"\\udfff"`) or NUL (`"\\u0000"`); neither can be stored
(UTF-8 has no encoding for a lone surrogate; PostgreSQL text holds no NUL) nor sent, so every request body is
checked once at the edge, unknown fields included, before any route runs (the check parses again only a body that
holds a surrogate or NUL escape), and every socket payload before its handler. Nothing is normalised: the
request is refused whole. The chat message writer is the last line: a write that fails for a reason other than
the database being away (connection lost, locked, timed out: retried for as long as it takes) is retried 4 times
with back-off, then the batch is given up, its events with unstorable text are dropped, the rest are written again
on the row as stored, and the loss is logged (`message write given up; events not persisted`) and counted; other
messages and readers of the chat never wait on it.

Sign-in limits are one limit for the whole deployment. Embedded, they live in the process's memory, whose tables
keep at most 100,000 accounts and 100,000 addresses, the least recently failed going first. In a fleet they live
in Redis (a sorted set per account or address, hashed, timed by the Redis server's clock and expiring with the
window), so failures spread over the processes behind a load balancer add up. Behind a reverse proxy
the unfinished-connection bound counts the proxy's address (the TCP peer): let the proxy bound slow clients
itself (nginx: `client_header_timeout`) and raise the bound or set it to 0.

Tokens: a sign-out revokes one token (its `jti`, fleet-wide). An admin's "sign out all devices"
(`POST /api/v1/users/{id}/sessions/revoke`) or new password for a user sets the user's cut-off
(`users.tokens_valid_after`, in ms): every token of ours issued before it is refused (tokens carry `iat_ms`; older
ones are judged by `iat`), on every process at once, since the change drops the user's cached row fleet-wide, and the
user's live sessions end. A role change ends the live sessions too: they reconnect with what the new role allows (a
`pending` account keeps only its own room). API keys and external tokens are not affected (the app controls those).

Identities: an external token's user is `{id claim}@{issuer}` (`CHATWIRE_EXTERNAL_ISSUER`, or `external` when
none is set; `x-` and a hash when that would be longer than 64 characters or the issuer holds `@`), so it can
never be a native account (their ids are UUIDs), another issuer's user, or a reserved id (`system`, the acting
identity of the server API); `PUT /api/v1/server/users/{id}` maps the app's id the same way. A row provisioned
before this (id equal to the subject, no password) still belongs to that subject. A `pending` account (or any
role without access) signs in and hears its own `user:` room only: no channel rooms at `user-join` or when added
to a channel, and every socket event but `heartbeat` is refused with `forbidden`, as its REST calls are.

Metric labels: the `event` label takes its values from the events chatwire knows (`chatwire.metrics.EVENT_LABELS`);
any other name a client sends or the server API publishes counts as `other`.

Per-IP state is one token bucket per address in a table of at most `CHATWIRE_RATE_LIMIT_IP_TABLE_SIZE` (100,000)
addresses; an address whose bucket has refilled is forgotten, and when the table is full the least recently seen
goes. The per-user connection limit counts the user's sessions in the session store, which in fleet mode is Redis,
so it holds across processes (two connects racing on different processes may both pass).

Client address: the ASGI scope's `client`. Behind a reverse proxy that is the proxy, unless uvicorn rewrites it
from `X-Forwarded-For`: uvicorn's proxy headers setting (`--proxy-headers`, on by default) trusts the header only
from `--forwarded-allow-ips` / `FORWARDED_ALLOW_IPS` (default `127.0.0.1`). Set it to your proxy's address;
never to `*` on a server clients reach directly, or every client picks its own address.

Malformed traffic: a client event named like a lifecycle event (`connect`, `disconnect`, `disconnecting`, ...)
is an unknown event to chatwire's engine, refused with an `invalid_payload` ack (the server's own lifecycle handlers
never run for it). A frame or packet that does not decode closes that connection, as Socket.IO's reference server
does: an empty text frame, an unknown Engine.IO or Socket.IO packet type, bad base64, JSON that does not parse (or
is nested deeper than the decoder goes), a payload of the wrong shape, a bad ack id, an attachment nobody announced,
a packet for a namespace the client has not joined. A well-formed event with an unacceptable payload (a lone
surrogate, a NUL, too deep, too large) gets its `invalid_payload` / `payload_too_large` ack and the connection
stays. A text frame that is not UTF-8 is closed with 1007.

Hostile input (fuzzed payloads on every event and route, raw Engine.IO/Socket.IO garbage) is tested in
`tests/integration/test_fuzz.py`; see the README section "Hostile input".
"""


def main(argv: list[str]) -> int:
    if "--write" in argv:
        DOC.write_text(render())
        print(f"wrote {DOC} ({case_count()} cases)")
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
