"""Outgoing webhooks against a real HTTP receiver: signatures, retries with back-off, dead deliveries and their
retry, a hanging endpoint that slows nothing else, every event kind, stats and metrics; and incoming channel
webhooks in Open WebUI's routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from chatwire.client.server import ServerApiError, ServerClient
from chatwire.client.webhooks import WebhookVerificationError, verify
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.models import WebhookEndpoint
from chatwire.db.repos.webhooks import WebhookRepo
from chatwire.services.webhooks import WebhookService
from tests.conftest import RunningServer, run_server
from tests.dbsnap import snapshot
from tests.sio import RecordingClient
from tests.webhook_receiver import Receiver, run_receiver


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_backoff_base_seconds": 0.05,
            "webhook_backoff_max_seconds": 0.2,
            "webhook_endpoint_cache_seconds": 0.0,
            "webhook_timeout_seconds": 2.0,
        }
    )


@pytest.fixture
async def hooked(fast_settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(fast_settings) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with run_receiver() as running:
        yield running


async def api_of(server: RunningServer, *scopes: str) -> ServerClient:
    _record, key = await server.services.api_keys.create("hooks-test", list(scopes or ("webhooks",)))
    return ServerClient(server.url, key)


async def channel_with(server: RunningServer, owner: dict[str, Any], *members: dict[str, Any]) -> str:
    async with server.http(owner["token"]) as http:
        r = await http.post(
            "/api/v1/channels/create",
            json={"name": "team", "type": "group", "user_ids": [m["id"] for m in members]},
        )
        r.raise_for_status()
        return str(r.json()["id"])


async def settled(
    api: ServerClient, endpoint_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """The endpoint once `done(endpoint)` holds: a receiver's answer is recorded just after it is sent, so a test
    that saw the request arrive waits (bounded) for the outcome to be written."""
    info = await api.webhook(endpoint_id)
    deadline = asyncio.get_running_loop().time() + timeout
    while not done(info) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        info = await api.webhook(endpoint_id)
    return info


async def post(server: RunningServer, token: str, channel_id: str, content: str) -> dict[str, Any]:
    async with server.http(token) as http:
        r = await http.post(f"/api/v1/channels/{channel_id}/messages/post", json={"content": content})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


def is_message(content: str) -> Callable[[Any], bool]:
    return lambda e: bool(e["data"]["type"] == "message" and e["data"]["data"]["content"] == content)


async def test_delivery_is_signed_and_verifies_and_a_forgery_does_not(
    hooked: RunningServer, receiver: Receiver
) -> None:
    ada = await hooked.signup("Ada")
    channel = await channel_with(hooked, ada)
    async with await api_of(hooked) as api:
        endpoint = await api.create_webhook(receiver.endpoint(), ["channel.message.posted"], "audit")
        secret = endpoint["secret"]
        assert secret.startswith("whsec_") and endpoint["events"] == ["channel.message.posted"]
        assert all("secret" not in e for e in await api.webhooks())
        message = await post(hooked, ada["token"], channel, "hello hooks")
        await receiver.wait(lambda r: len(r.delivered()) == 1)
        call = receiver.delivered()[0]
        event = verify(secret, call.headers, call.body)
        assert event["type"] == "channel.message.posted" and event["id"] == call.headers["webhook-id"]
        assert event["data"]["message"]["id"] == message["id"]
        assert event["data"]["message"]["content"] == "hello hooks"
        assert event["data"]["channel_id"] == channel and event["data"]["user"]["id"] == ada["id"]
        assert call.headers["chatwire-event"] == "channel.message.posted"
        assert call.headers["chatwire-attempt"] == "1"
        with pytest.raises(WebhookVerificationError):
            verify(secret, call.headers, call.body.replace(b"hello", b"HELLO"))
        with pytest.raises(WebhookVerificationError):
            verify("whsec_" + "A" * 44, call.headers, call.body)
        stale = int(call.headers["webhook-timestamp"]) + 301
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify(secret, call.headers, call.body, now=stale)
        forged = {**call.headers, "webhook-id": "msg_other"}
        with pytest.raises(WebhookVerificationError):
            verify(secret, forged, call.body)
        stats = (await settled(api, endpoint["id"], lambda e: e["stats"]["delivered"] == 1))["stats"]
        assert stats["last_status"] == 200 and stats["delivered"] == 1 and stats["pending"] == 0
        [delivery] = await api.webhook_deliveries(endpoint["id"])
        assert delivery["id"] == event["id"] and delivery["status"] == "delivered"
    async with httpx.AsyncClient(base_url=hooked.url) as http:
        text = (await http.get("/metrics")).text
    assert 'chatwire_webhook_attempts_total{outcome="delivered"} 1.0' in text
    assert "chatwire_webhook_outbox_pending 0.0" in text


async def test_failing_receiver_gets_retries_with_the_same_id_until_it_answers(
    hooked: RunningServer, receiver: Receiver
) -> None:
    receiver.fail_first = 3
    ada = await hooked.signup("Ada")
    channel = await channel_with(hooked, ada)
    async with await api_of(hooked) as api:
        endpoint = await api.create_webhook(receiver.endpoint(), ["*"])
        await post(hooked, ada["token"], channel, "retry me")
        await receiver.wait(lambda r: len(r.delivered()) == 1)
        posted = [c for c in receiver.calls if c.headers["chatwire-event"] == "channel.message.posted"]
        assert [c.status for c in posted] == [500, 500, 500, 200]
        assert len({c.headers["webhook-id"] for c in posted}) == 1
        assert [c.headers["chatwire-attempt"] for c in posted] == ["1", "2", "3", "4"]
        for c in posted:
            verify(endpoint["secret"], c.headers, c.body)
        info = await settled(api, endpoint["id"], lambda e: e["stats"]["delivered"] == 1)
        assert info["stats"]["failed_attempts"] == 3 and info["stats"]["consecutive_failures"] == 0
        [delivery] = await api.webhook_deliveries(endpoint["id"], status="delivered")
        assert delivery["attempts"] == 4 and delivery["last_status"] == 200


async def test_delivery_goes_dead_after_the_last_attempt_and_can_be_sent_again(
    fast_settings: Settings, receiver: Receiver
) -> None:
    receiver.down = True
    async with run_server(fast_settings.model_copy(update={"webhook_max_attempts": 3})) as server:
        ada = await server.signup("Ada")
        channel = await channel_with(server, ada)
        async with await api_of(server) as api:
            endpoint = await api.create_webhook(receiver.endpoint(), ["channel.message.posted"])
            await post(server, ada["token"], channel, "nobody home")
            for _ in range(100):
                dead = await api.webhook_deliveries(endpoint["id"], status="dead")
                if dead:
                    break
                await asyncio.sleep(0.05)
            assert len(dead) == 1 and dead[0]["attempts"] == 3 and dead[0]["last_status"] == 503
            assert len(receiver.calls) == 3
            info = await api.webhook(endpoint["id"])
            assert info["stats"]["consecutive_failures"] == 3 and "503" in info["stats"]["last_error"]
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert "chatwire_webhook_outbox_dead 1.0" in (await http.get("/metrics")).text
            receiver.down = False
            again = await api.retry_delivery(endpoint["id"], dead[0]["id"])
            assert again["status"] == "pending"
            await receiver.wait(lambda r: len(r.delivered()) == 1)
            assert receiver.delivered()[0].headers["webhook-id"] == dead[0]["id"]
            with pytest.raises(ServerApiError) as info_err:
                for _ in range(50):
                    await api.retry_delivery(endpoint["id"], dead[0]["id"])
                    await asyncio.sleep(0.05)
            assert info_err.value.status == 409


async def test_a_hanging_endpoint_slows_neither_sockets_nor_other_endpoints(
    fast_settings: Settings, receiver: Receiver
) -> None:
    receiver.hang_paths = {"/stuck"}
    settings = fast_settings.model_copy(update={"webhook_timeout_seconds": 30.0, "webhook_concurrency": 2})
    async with run_server(settings) as server:
        ada = await server.signup("Ada")
        bob = await server.signup("Bob")
        channel = await channel_with(server, ada, bob)
        tab = await RecordingClient(server.url).connect(bob["token"])
        try:
            async with await api_of(server) as api:
                await api.create_webhook(receiver.endpoint("/stuck"), ["channel.message.posted"])
                await api.create_webhook(receiver.endpoint("/fine"), ["channel.message.posted"])
                sent = [f"m{i}" for i in range(20)]
                for content in sent:
                    await post(server, ada["token"], channel, content)
                    # Each message reaches the member's socket while the stuck endpoint holds its slots.
                    await tab.wait_for("events:channel", is_message(content), timeout=3)
                await receiver.wait(lambda r: len(r.delivered("/fine")) == 20, timeout=10)
                fine = [c.json["data"]["message"]["content"] for c in receiver.delivered("/fine")]
                assert sorted(fine) == sorted(sent)
                stuck = [c for c in receiver.calls if c.path == "/stuck"]
                assert len(stuck) == 2  # the per-endpoint concurrency: the rest waits in the outbox
                listed = {e["url"]: e for e in await api.webhooks()}
                assert listed[receiver.endpoint("/stuck")]["stats"]["pending"] == 20
                fine_endpoint = listed[receiver.endpoint("/fine")]
                fine_endpoint = await settled(api, fine_endpoint["id"], lambda e: e["stats"]["pending"] == 0)
                assert fine_endpoint["stats"]["pending"] == 0
        finally:
            await tab.close()


async def test_every_event_kind_reaches_its_subscribers(hooked: RunningServer, receiver: Receiver) -> None:
    async with await api_of(hooked) as api:
        endpoint = await api.create_webhook(receiver.endpoint(), ["*"])
        ada = await hooked.signup("Ada")
        channel = await channel_with(hooked, ada)
        tab = await RecordingClient(hooked.url).connect(ada["token"])
        message = await post(hooked, ada["token"], channel, "first")
        async with hooked.http(ada["token"]) as http:
            base = f"/api/v1/channels/{channel}/messages/{message['id']}"
            (await http.post(f"{base}/update", json={"content": "edited"})).raise_for_status()
            (await http.post(f"{base}/reactions/add", json={"name": "+1"})).raise_for_status()
            (await http.post(f"{base}/reactions/remove", json={"name": "+1"})).raise_for_status()
            (await http.delete(f"{base}/delete")).raise_for_status()
            r = await http.post("/api/v1/notes/create", json={"title": "N", "data": {"content": {"md": "x"}}})
            note = r.json()
            (await http.post(f"/api/v1/notes/{note['id']}/update", json={"title": "N2"})).raise_for_status()
            r = await http.post("/api/v1/chats/new", json={"chat": {"title": "T"}})
            chat = r.json()
            r = await http.post(
                "/api/chat/completions",
                json={
                    "model": "demo",
                    "messages": [{"role": "user", "content": "5 tokens"}],
                    "chat_id": chat["id"],
                },
            )
            out = r.json()
        await tab.close()

        def kinds(r: Receiver) -> set[str]:
            return {c.json["type"] for c in r.delivered()}

        wanted = {
            "user.online",
            "channel.message.posted",
            "channel.message.updated",
            "channel.reaction.added",
            "channel.reaction.removed",
            "channel.message.deleted",
            "note.updated",
            "chat.completion.finished",
            "user.offline",
        }
        await receiver.wait(lambda r: wanted <= kinds(r), timeout=15)
        by_kind = {c.json["type"]: c.json["data"] for c in receiver.delivered()}
        assert by_kind["channel.message.updated"]["message"]["content"] == "edited"
        assert by_kind["channel.reaction.added"]["message"]["name"] == "+1"
        assert by_kind["channel.message.deleted"]["message"]["id"] == message["id"]
        assert by_kind["note.updated"]["note"]["title"] == "N2"
        assert by_kind["note.updated"]["source"] == "rest"
        assert by_kind["user.online"]["user"]["id"] == ada["id"]
        assert by_kind["user.offline"]["user"]["id"] == ada["id"]
        finished = by_kind["chat.completion.finished"]
        async with hooked.http(ada["token"]) as http:
            stored = (await http.get(f"/api/v1/chats/{chat['id']}")).json()
        stored_message = stored["chat"]["history"]["messages"][out["message_id"]]
        assert finished["content"] == stored_message["content"] and finished["content"]
        assert finished["chat_id"] == chat["id"] and finished["user_id"] == ada["id"] and finished["done"]
        count = len(receiver.delivered())
        info = await settled(api, endpoint["id"], lambda e: e["stats"]["delivered"] >= count)
        assert info["stats"]["delivered"] == count


async def test_endpoint_registration_refuses_bad_input_and_needs_the_scope(hooked: RunningServer) -> None:
    async with await api_of(hooked, "publish") as wrong:
        with pytest.raises(ServerApiError) as info:
            await wrong.create_webhook("http://127.0.0.1:1/x", ["*"])
        assert info.value.status == 403
    before = await snapshot(hooked.services.db)
    async with await api_of(hooked) as api:
        for url, events in (
            ("ftp://x/y", ["*"]),
            ("http://127.0.0.1:1/x", ["no.such.kind"]),
            ("http://127.0.0.1:1/x", []),
        ):
            with pytest.raises(ServerApiError) as info:
                await api.create_webhook(url, events)
            assert info.value.code == "invalid_payload", (url, events)
        with pytest.raises(ServerApiError) as info:
            await api.webhook("nope")
        assert info.value.status == 404
    after = await snapshot(hooked.services.db)
    assert {k: v for k, v in after.items() if k != "api_keys"} == {
        k: v for k, v in before.items() if k != "api_keys"
    }
    async with await api_of(hooked, "admin") as admin:
        created = await admin.create_webhook("http://127.0.0.1:1/x", ["user.online"])
        updated = await admin.update_webhook(created["id"], active=False, rotate_secret=True)
        assert updated["active"] is False and updated["secret"] != created["secret"]
        await admin.delete_webhook(created["id"])
        assert await admin.webhooks() == []


# incoming channel webhooks


async def test_incoming_webhook_posts_live_under_its_name_and_a_wrong_token_posts_nothing(
    hooked: RunningServer,
) -> None:
    ada = await hooked.signup("Ada")
    bob = await hooked.signup("Bob")
    channel = await channel_with(hooked, ada, bob)
    tab = await RecordingClient(hooked.url).connect(bob["token"])
    try:
        async with hooked.http(ada["token"]) as http:
            r = await http.post(f"/api/v1/channels/{channel}/webhooks/create", json={"name": "CI bot"})
            assert r.status_code == 200, r.text
            hook = r.json()
            assert hook["name"] == "CI bot" and hook["channel_id"] == channel and len(hook["token"]) >= 32
            listed = (await http.get(f"/api/v1/channels/{channel}/webhooks")).json()
            assert [h["id"] for h in listed] == [hook["id"]]
        async with hooked.http(bob["token"]) as http:  # a member, not the creator: no management
            r = await http.post(f"/api/v1/channels/{channel}/webhooks/create", json={"name": "mine"})
            assert r.status_code == 403 and r.json()["code"] == "forbidden"
            assert (await http.get(f"/api/v1/channels/{channel}/webhooks")).status_code == 403
        async with httpx.AsyncClient(base_url=hooked.url) as anon:
            before = await snapshot(hooked.services.db)
            r = await anon.post(f"/api/v1/channels/webhooks/{hook['id']}/wrong-token", json={"content": "x"})
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
            r = await anon.post(f"/api/v1/channels/webhooks/nope/{hook['token']}", json={"content": "x"})
            assert r.status_code == 401
            assert await snapshot(hooked.services.db) == before
            await tab.expect_none("events:channel", lambda e: e["data"]["type"] == "message", wait=0.2)
            r = await anon.post(
                f"/api/v1/channels/webhooks/{hook['id']}/{hook['token']}", json={"content": "build passed"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["success"] is True
            message_id = r.json()["message_id"]
        live = await tab.wait_for("events:channel", lambda e: e["data"]["type"] == "message")
        assert live["message_id"] == message_id
        assert live["user"] == {"id": hook["id"], "name": "CI bot", "role": "webhook"}
        assert live["data"]["data"]["content"] == "build passed"
        assert live["data"]["data"]["user"]["name"] == "CI bot"
        async with hooked.http(bob["token"]) as http:
            [stored] = (await http.get(f"/api/v1/channels/{channel}/messages")).json()
        assert stored["id"] == message_id and stored["content"] == "build passed"
        assert stored["user"] == {"id": hook["id"], "name": "CI bot", "role": "webhook"}
        async with hooked.http(ada["token"]) as http:
            base = f"/api/v1/channels/{channel}/webhooks/{hook['id']}"
            r = await http.post(f"{base}/update", json={"name": "CD bot"})
            assert r.status_code == 200 and r.json()["name"] == "CD bot"
            assert r.json()["last_used_at"] is not None
            assert (await http.delete(f"{base}/delete")).json() is True
            assert (await http.get(f"/api/v1/channels/{channel}/webhooks")).json() == []
        async with httpx.AsyncClient(base_url=hooked.url) as anon:
            r = await anon.post(
                f"/api/v1/channels/webhooks/{hook['id']}/{hook['token']}", json={"content": "gone"}
            )
            assert r.status_code == 401
    finally:
        await tab.close()


async def test_incoming_webhook_messages_trigger_outgoing_webhooks(
    hooked: RunningServer, receiver: Receiver
) -> None:
    ada = await hooked.signup("Ada")
    channel = await channel_with(hooked, ada)
    async with await api_of(hooked) as api:
        await api.create_webhook(receiver.endpoint(), ["channel.message.posted"])
    async with hooked.http(ada["token"]) as http:
        hook = (await http.post(f"/api/v1/channels/{channel}/webhooks/create", json={"name": "bot"})).json()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=hooked.url) as anon:
        r = await anon.post(
            f"/api/v1/channels/webhooks/{hook['id']}/{hook['token']}", json={"content": "ping"}
        )
        r.raise_for_status()
    await receiver.wait(lambda r: len(r.delivered()) == 1)
    assert time.monotonic() - started < 10
    data = receiver.delivered()[0].json["data"]
    assert data["user"] == {"id": hook["id"], "name": "bot", "role": "webhook"}
    assert data["message"]["content"] == "ping"


class CountingRepo(WebhookRepo):
    """The real repository, counting how often the active endpoints are read."""

    reads = 0

    async def active_endpoints(self) -> list[WebhookEndpoint]:
        self.reads += 1
        return await super().active_endpoints()


async def test_events_that_find_the_endpoint_cache_stale_share_one_read(db: Database) -> None:
    repo = CountingRepo(db)
    service = WebhookService(repo, cache_seconds=60.0)
    # A connect storm: hundreds of presence changes arrive before the first read of the endpoints returns.
    await asyncio.gather(*(service.notify("user.online", {"user_id": f"u{i}"}) for i in range(200)))
    assert repo.reads == 1
    created = await service.create("https://hooks.example.com/in", ["user.online"], "", None)
    # A new endpoint is seen at once (not after the cache's minute), by one read again.
    await asyncio.gather(*(service.notify("user.online", {"user_id": f"v{i}"}) for i in range(50)))
    assert repo.reads == 2
    pending = await repo.deliveries(created["id"], "pending", 100)
    assert len(pending) == 50 and service.enqueue_failures == 0
