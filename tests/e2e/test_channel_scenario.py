"""End to end: a real `chatwire serve` process, two official Node socket.io-client 4.x clients and one
python-socketio client live through a channel's life; each sees every `events:channel` event of docs/PROTOCOL.md
section 4 with its documented payload."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import postgres_database
from tests.nodeclient import NodeClient
from tests.process import ServerProcess, serve_process
from tests.sio import RecordingClient

pytestmark = pytest.mark.e2e

MESSAGE_KEYS = {
    "id",
    "channel_id",
    "user_id",
    "content",
    "parent_id",
    "reply_count",
    "reactions",
    "created_at",
    "updated_at",
}


class Everyone:
    """The three clients; `see` waits until each has received a matching `events:channel`."""

    def __init__(self, node_a: NodeClient, node_b: NodeClient, py: RecordingClient) -> None:
        self.node_a = node_a
        self.node_b = node_b
        self.py = py

    async def see(self, kind: str, message_id: str | None, channel_id: str) -> dict[str, Any]:
        def match(p: Any) -> bool:
            return (
                p["channel_id"] == channel_id
                and p["data"]["type"] == kind
                and (message_id is None or p["message_id"] == message_id)
            )

        payloads = [
            await self.node_a.wait_event("events:channel", match),
            await self.node_b.wait_event("events:channel", match),
            await self.py.wait_for("events:channel", match),
        ]
        # the same payload for everyone (JavaScript reads the nanosecond timestamps as doubles, as it does
        # with Open WebUI's, so numbers are compared as doubles)
        assert as_doubles(payloads[0]) == as_doubles(payloads[1]) == as_doubles(payloads[2]), payloads
        envelope = payloads[0]
        assert set(envelope) >= {"channel_id", "message_id", "data", "user"}
        assert set(envelope["data"]) == {"type", "data"}
        assert {"id", "name"} <= set(envelope["user"])
        return envelope


def as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_doubles(v) for v in value]
    return value


def check_message(body: dict[str, Any]) -> None:
    assert MESSAGE_KEYS <= set(body), MESSAGE_KEYS - set(body)
    assert isinstance(body["reactions"], list) and isinstance(body["reply_count"], int)


async def rest(server: ServerProcess, token: str, method: str, url: str, body: Any = None) -> Any:
    async with server.http(token) as http:
        r = await http.request(method, url, json=body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_channel_scenario_across_official_clients(tmp_path: Path, database: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env = {}
        if database == "postgres":
            env["CHATWIRE_DATABASE_URL"] = await stack.enter_async_context(postgres_database())
        server = await stack.enter_async_context(serve_process(tmp_path, env))
        await run_scenario(server)


async def run_scenario(server: ServerProcess) -> None:
    ada = await server.signup("Ada")
    bob = await server.signup("Bob")
    assert ada["role"] == "admin" and bob["role"] == "user"

    node_a = await NodeClient(server.url, ada["token"]).start()
    node_b = await NodeClient(server.url, bob["token"]).start()
    py = await RecordingClient(server.url).connect(bob["token"])  # Bob's second tab, in Python
    everyone = Everyone(node_a, node_b, py)
    try:
        joined = await node_a.wait_for(lambda ln: ln["type"] == "joined")
        assert joined["ack"] == {"id": ada["id"], "name": "Ada"}
        connect = await node_a.wait_for(lambda ln: ln["type"] == "connect")
        assert connect["recovered"] is False

        channel = await rest(
            server,
            ada["token"],
            "POST",
            "/api/v1/channels/create",
            {"name": "team", "type": "group", "user_ids": [bob["id"]]},
        )
        cid = channel["id"]
        created = await everyone.see("channel:created", None, cid)
        assert created["data"]["data"] == {} and created["user"]["id"] == ada["id"]

        # post
        posted = await rest(
            server,
            bob["token"],
            "POST",
            f"/api/v1/channels/{cid}/messages/post",
            {"content": "hello", "temp_id": "tmp-1"},
        )
        got = await everyone.see("message", posted["id"], cid)
        check_message(got["data"]["data"])
        assert got["data"]["data"]["content"] == "hello" and got["data"]["data"]["temp_id"] == "tmp-1"
        assert got["user"]["id"] == bob["id"] and got["data"]["data"]["parent_id"] is None
        mid = posted["id"]

        # edit
        await rest(
            server,
            bob["token"],
            "POST",
            f"/api/v1/channels/{cid}/messages/{mid}/update",
            {"content": "hello!"},
        )
        updated = await everyone.see("message:update", mid, cid)
        check_message(updated["data"]["data"])
        assert updated["data"]["data"]["content"] == "hello!"

        # react and un-react
        await rest(
            server,
            ada["token"],
            "POST",
            f"/api/v1/channels/{cid}/messages/{mid}/reactions/add",
            {"name": "+1"},
        )
        added = await everyone.see("message:reaction:add", mid, cid)
        check_message(added["data"]["data"])
        assert added["data"]["data"]["name"] == "+1"
        assert added["data"]["data"]["reactions"] == [
            {
                "name": "+1",
                "user_ids": [ada["id"]],
                "users": [{"id": ada["id"], "name": ada["name"]}],
                "count": 1,
            }
        ]
        await rest(
            server,
            ada["token"],
            "POST",
            f"/api/v1/channels/{cid}/messages/{mid}/reactions/remove",
            {"name": "+1"},
        )
        removed = await everyone.see("message:reaction:remove", mid, cid)
        assert removed["data"]["data"]["name"] == "+1" and removed["data"]["data"]["reactions"] == []

        # reply: the reply itself, and the parent with its new count
        reply = await rest(
            server,
            ada["token"],
            "POST",
            f"/api/v1/channels/{cid}/messages/post",
            {"content": "re", "parent_id": mid},
        )
        got_reply = await everyone.see("message", reply["id"], cid)
        assert got_reply["data"]["data"]["parent_id"] == mid
        parent = await everyone.see("message:reply", mid, cid)
        check_message(parent["data"]["data"])
        assert parent["data"]["data"]["id"] == mid and parent["data"]["data"]["reply_count"] == 1

        # typing, from an official client over the socket
        ack = await node_b.call(
            "events:channel", {"channel_id": cid, "data": {"type": "typing", "data": {"typing": True}}}
        )
        assert ack == {"ok": True}
        typing = await everyone.see("typing", None, cid)
        assert typing["data"]["data"] == {"typing": True} and typing["user"]["id"] == bob["id"]
        assert typing["user"]["name"] == "Bob"

        # delete the reply: message:delete, then the parent's count drops
        await rest(server, ada["token"], "DELETE", f"/api/v1/channels/{cid}/messages/{reply['id']}/delete")
        deleted_reply = await everyone.see("message:delete", reply["id"], cid)
        assert deleted_reply["data"]["data"]["id"] == reply["id"]

        def parent_count_zero(p: Any) -> bool:
            return (
                p["data"]["type"] == "message:reply"
                and p["message_id"] == mid
                and p["data"]["data"]["reply_count"] == 0
            )

        await node_a.wait_event("events:channel", parent_count_zero)
        await node_b.wait_event("events:channel", parent_count_zero)
        await py.wait_for("events:channel", parent_count_zero)

        # delete the message
        await rest(server, bob["token"], "DELETE", f"/api/v1/channels/{cid}/messages/{mid}/delete")
        deleted = await everyone.see("message:delete", mid, cid)
        check_message(deleted["data"]["data"])
        assert deleted["data"]["data"]["id"] == mid

        # every kind of section 4 was seen by all three, in the order it happened
        kinds = [p["args"][0]["data"]["type"] for p in node_a.lines if p.get("event") == "events:channel"]
        assert kinds == [
            "channel:created",
            "message",
            "message:update",
            "message:reaction:add",
            "message:reaction:remove",
            "message",
            "message:reply",
            "typing",
            "message:delete",
            "message:reply",
            "message:delete",
        ]
        assert kinds == [a[0]["data"]["type"] for a in node_b.events("events:channel")]
        assert kinds == [p["data"]["type"] for p in py.received["events:channel"]]
    finally:
        await node_a.close()
        await node_b.close()
        await py.close()

    # the server logged each connection and join as JSON lines with user and session ids
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    joins = [ln for ln in lines if ln.get("msg") == "join"]
    assert {ln["user_id"] for ln in joins} == {ada["id"], bob["id"]} and all(ln.get("sid") for ln in joins)
    assert len([ln for ln in lines if ln.get("msg") == "connect"]) == 3
