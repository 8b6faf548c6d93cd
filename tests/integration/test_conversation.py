"""Conversations against a fake OpenAI-compatible model server (a real HTTP server with real SSE, recording every
request): the model receives the whole path of the tree, regenerate and edit make siblings with the right path,
failures end the answer with a sentence, stop works by chat, the chat update merges without losing a stream,
and an answer cut by a shutdown is stored as interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatwire.client import ChatEvent, ChatwireClient
from chatwire.config import Settings
from tests.conftest import RunningServer, free_port, run_server
from tests.fake_openai import FakeOpenAI, reply


@pytest.fixture
def upstream() -> AsyncIterator[FakeOpenAI]:  # type: ignore[misc]
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def served(settings: Settings, upstream: FakeOpenAI) -> AsyncIterator[RunningServer]:
    update = {"openai_base_url": upstream.base_url, "demo_tokens_per_second": 0.0}
    async with run_server(settings.model_copy(update=update)) as running:
        yield running


async def post(server: RunningServer, token: str, path: str, body: Any, status: int = 200) -> Any:
    async with server.http(token) as http:
        r = await http.post(path, json=body)
        assert r.status_code == status, r.text
        return r.json()


async def chat_of(server: RunningServer, token: str, chat_id: str) -> dict[str, Any]:
    await server.services.writer.flush()
    async with server.http(token) as http:
        r = await http.get(f"/api/v1/chats/{chat_id}")
        assert r.status_code == 200, r.text
        return r.json()["chat"]  # type: ignore[no-any-return]


async def wait_done(server: RunningServer, token: str, chat_id: str, mid: str) -> dict[str, Any]:
    for _ in range(500):
        msg = (await chat_of(server, token, chat_id))["history"]["messages"].get(mid)
        if msg is not None and msg.get("done"):
            return msg  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{mid} never finished")


def turn(user_id: str, text: str, parent: str | None, answer_id: str, chat_id: str | None) -> dict[str, Any]:
    """A request in Open WebUI's frontend shape (no `messages`: the server builds the path)."""
    body: dict[str, Any] = {
        "model": "tiny",
        "user_message": {"id": user_id, "role": "user", "content": text, "parentId": parent},
        "parent_id": parent,
        "id": answer_id,
        "stream": True,
    }
    if chat_id:
        body["chat_id"] = chat_id
    return body


def pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


async def test_three_turns_send_every_earlier_turn_in_order(
    served: RunningServer, upstream: FakeOpenAI
) -> None:
    user = await served.signup("Ada")
    token = user["token"]
    # Turn 1 creates the chat (parent_id null, no chat_id), as Open WebUI's frontend does.
    out = await post(served, token, "/api/chat/completions", turn("u1", "My name is Ada.", None, "a1", None))
    chat_id = out["chat_id"]
    assert out["status"] is True and out["message_id"] == "a1" and out["task_ids"] == [out["task_id"]]
    a1 = await wait_done(served, token, chat_id, "a1")
    await post(served, token, "/api/chat/completions", turn("u2", "I like tea.", "a1", "a2", chat_id))
    a2 = await wait_done(served, token, chat_id, "a2")
    await post(served, token, "/api/chat/completions", turn("u3", "What is my name?", "a2", "a3", chat_id))
    a3 = await wait_done(served, token, chat_id, "a3")

    sent = upstream.chats()
    assert pairs(sent[0]) == [("user", "My name is Ada.")]
    assert pairs(sent[2]) == [
        ("user", "My name is Ada."),
        ("assistant", a1["content"]),
        ("user", "I like tea."),
        ("assistant", a2["content"]),
        ("user", "What is my name?"),
    ]
    assert a3["content"] == reply(sent[2]) == "Answer 3 to: What is my name?"
    chat = await chat_of(served, token, chat_id)
    history = chat["history"]
    assert history["currentId"] == "a3"
    assert [m["id"] for m in chat["messages"]] == ["u1", "a1", "u2", "a2", "u3", "a3"]
    assert history["messages"]["u1"]["parentId"] is None and history["messages"]["u1"]["childrenIds"] == [
        "a1"
    ]
    assert history["messages"]["a1"]["childrenIds"] == ["u2"]
    for mid in ("a1", "a2", "a3"):
        assert history["messages"][mid]["model"] == "tiny" and history["messages"][mid]["outcome"] == "done"
        assert history["messages"][mid]["role"] == "assistant" and history["messages"][mid]["timestamp"] > 0


async def test_chatwire_shape_stores_the_question_and_sends_the_body_messages(
    served: RunningServer, upstream: FakeOpenAI
) -> None:
    user = await served.signup("Bea")
    token = user["token"]
    chat_id = (await post(served, token, "/api/v1/chats/new", {"chat": {"title": "t"}}))["id"]
    first = [{"role": "user", "content": "Hello"}]
    body = {"model": "tiny", "messages": first, "chat_id": chat_id, "id": "a1"}
    await post(served, token, "/api/chat/completions", body)
    a1 = await wait_done(served, token, chat_id, "a1")
    second = [*first, {"role": "assistant", "content": a1["content"]}, {"role": "user", "content": "Again"}]
    await post(served, token, "/api/chat/completions", {**body, "messages": second, "id": "a2"})
    await wait_done(served, token, chat_id, "a2")
    assert upstream.chats()[1] == second
    chat = await chat_of(served, token, chat_id)
    assert pairs(chat["messages"]) == [
        ("user", "Hello"),
        ("assistant", a1["content"]),
        ("user", "Again"),
        ("assistant", "Answer 2 to: Again"),
    ]
    # The same id twice is refused and changes nothing.
    await post(served, token, "/api/chat/completions", {**body, "messages": second, "id": "a2"}, status=409)


async def test_regenerate_and_edit_are_siblings_with_the_right_path(
    served: RunningServer, upstream: FakeOpenAI
) -> None:
    user = await served.signup("Cy")
    token = user["token"]
    chat_id = (await post(served, token, "/api/chat/completions", turn("u1", "One", None, "a1", None)))[
        "chat_id"
    ]
    a1 = await wait_done(served, token, chat_id, "a1")
    await post(served, token, "/api/chat/completions", turn("u2", "Two", "a1", "a2", chat_id))
    await wait_done(served, token, chat_id, "a2")
    # Regenerate: the stored question again, a new answer id -> a sibling of a2.
    regen = {
        "model": "tiny",
        "user_message": {"id": "u2"},
        "parent_id": "a1",
        "id": "a2b",
        "chat_id": chat_id,
    }
    await post(served, token, "/api/chat/completions", regen)
    await wait_done(served, token, chat_id, "a2b")
    # Edit: a new user message under the same parent -> a sibling of u2, with its own answer.
    await post(served, token, "/api/chat/completions", turn("u2e", "Two, edited", "a1", "a2e", chat_id))
    a2e = await wait_done(served, token, chat_id, "a2e")

    sent = upstream.chats()
    assert pairs(sent[2]) == [("user", "One"), ("assistant", a1["content"]), ("user", "Two")]
    assert pairs(sent[3]) == [("user", "One"), ("assistant", a1["content"]), ("user", "Two, edited")]
    assert a2e["content"] == "Answer 2 to: Two, edited"
    history = (await chat_of(served, token, chat_id))["history"]
    assert history["messages"]["u2"]["childrenIds"] == ["a2", "a2b"]
    assert history["messages"]["a1"]["childrenIds"] == ["u2", "u2e"]
    assert history["currentId"] == "a2e"
    # The client moves back to the regenerated branch; the server keeps currentId and the path follows it.
    chat = await post(served, token, f"/api/v1/chats/{chat_id}", {"chat": {"history": {"currentId": "a2b"}}})
    assert [m["id"] for m in chat["chat"]["messages"]] == ["u1", "a1", "u2", "a2b"]
    # A follow-up under that branch gets that branch as its context.
    await post(served, token, "/api/chat/completions", turn("u3", "Three", "a2b", "a3", chat_id))
    await wait_done(served, token, chat_id, "a3")
    assert [c for _, c in pairs(upstream.chats()[4])][2:] == ["Two", "Answer 2 to: Two", "Three"]


async def test_upstream_failures_are_sentences_and_models_say_unavailable(
    settings: Settings, upstream: FakeOpenAI
) -> None:
    update = {"openai_base_url": upstream.base_url}
    async with run_server(settings.model_copy(update=update)) as srv:
        user = await srv.signup("Di")
        token = user["token"]
        async with srv.http(token) as http:
            models = (await http.get("/api/models")).json()["data"]
        assert {m["id"]: m["available"] for m in models} == {"demo": True, "tiny": True}
        upstream.fail_status = 500
        chat_id = (await post(srv, token, "/api/chat/completions", turn("u1", "Hi", None, "a1", None)))[
            "chat_id"
        ]
        a1 = await wait_done(srv, token, chat_id, "a1")
        host = f"127.0.0.1:{upstream.port}"
        assert a1["outcome"] == "failed"
        assert a1["error"] == {
            "content": f"The model server at {host} refused the request (500): the model is overloaded"
        }
        # The model server goes away: the models it listed are shown unavailable, a message gets a clear error.
        upstream.__exit__()
        async with srv.http(token) as http:
            models = (await http.get("/api/models")).json()["data"]
        tiny = next(m for m in models if m["id"] == "tiny")
        assert (
            tiny["available"] is False
            and tiny["error"] == f"The model server at {host} could not be reached."
        )
        await post(srv, token, "/api/chat/completions", turn("u2", "Still there?", "a1", "a2", chat_id))
        a2 = await wait_done(srv, token, chat_id, "a2")
        assert a2["outcome"] == "failed" and a2["model"] == "tiny"
        assert a2["error"]["content"] == f"The model server at {host} could not be reached."
        assert "Error(" not in str(a2) and "demo" not in str(a2)
        upstream.__enter__()  # the fixture closes it again


async def test_a_server_without_a_model_server_refuses_other_models(settings: Settings) -> None:
    async with run_server(settings) as srv:
        user = await srv.signup("Ed")
        body = turn("u1", "Hi", None, "a1", None)
        out = await post(srv, user["token"], "/api/chat/completions", body, status=404)
        assert "no model server" in out["detail"] and out["code"] == "not_found"


async def test_stop_by_chat_from_another_tab_keeps_the_prefix_and_snapshots_converge(
    settings: Settings,
) -> None:
    with FakeOpenAI(token_delay=0.02, words=400) as slow:
        update = {"openai_base_url": slow.base_url, "completion_snapshot_seconds": 0.3}
        async with run_server(settings.model_copy(update=update)) as srv:
            user = await srv.signup("Flo")
            token = user["token"]
            other_tab = await ChatwireClient(srv.url, token, reconnection=False).connect()
            seen: list[ChatEvent] = []
            other_tab.on_event(seen.append)
            try:
                out = await post(srv, token, "/api/chat/completions", turn("u1", "Long", None, "a1", None))
                chat_id = out["chat_id"]
                await other_tab.wait_for(
                    lambda: any(e.type == "chat:completion" and "content" in e.data for e in seen)
                )
                # The other tab knows no task id: it stops by chat.
                stopped = await post(srv, token, f"/api/tasks/chat/{chat_id}/stop", None)
                assert stopped["status"] is True and stopped["message"] == "stopped"
                a1 = await wait_done(srv, token, chat_id, "a1")
                assert a1["outcome"] == "stopped"
                full = reply([{"role": "user", "content": "Long"}], 400)
                assert a1["content"] and full.startswith(a1["content"]) and a1["content"] != full
                snapshots = [
                    e.data["content"] for e in seen if e.type == "chat:completion" and "content" in e.data
                ]
                deltas = "".join(e.data["content"] for e in seen if e.type == "chat:message:delta")
                assert snapshots and all(deltas.startswith(s) for s in snapshots)
                assert deltas == a1["content"]
                # Nothing runs any more: a second stop finds nothing; someone else's chat is not found.
                again = await post(srv, token, f"/api/tasks/chat/{chat_id}/stop", None)
                assert again["message"] == "No tasks found."
                eve = await srv.signup("Eve")
                await post(srv, eve["token"], f"/api/tasks/chat/{chat_id}/stop", None, status=404)
            finally:
                await other_tab.close()


async def test_update_merges_without_losing_a_streaming_answer_and_delete(settings: Settings) -> None:
    with FakeOpenAI(token_delay=0.02, words=200) as slow:
        async with run_server(settings.model_copy(update={"openai_base_url": slow.base_url})) as srv:
            user = await srv.signup("Gus")
            token = user["token"]
            chat_id = (await post(srv, token, "/api/chat/completions", turn("u1", "Q", None, "a1", None)))[
                "chat_id"
            ]
            await asyncio.sleep(0.5)
            # A stale tab saves its copy: an empty, unfinished a1 and a renamed title. The stream's row wins.
            stale = {
                "title": "Renamed",
                "history": {
                    "currentId": "a1",
                    "messages": {
                        "u1": {"id": "u1", "role": "user", "content": "Q", "parentId": None},
                        "a1": {
                            "id": "a1",
                            "role": "assistant",
                            "content": "",
                            "parentId": "u1",
                            "done": False,
                        },
                    },
                },
            }
            saved = await post(srv, token, f"/api/v1/chats/{chat_id}", {"chat": stale})
            assert saved["title"] == "Renamed"
            assert saved["chat"]["history"]["messages"]["a1"]["content"] != ""
            a1 = await wait_done(srv, token, chat_id, "a1")
            assert a1["content"] == reply([{"role": "user", "content": "Q"}], 200) and a1["outcome"] == "done"
            # A finished message can be edited by the client (Open WebUI edits answers the same way).
            edit = {"history": {"messages": {"a1": {**a1, "content": "short"}}}}
            saved = await post(srv, token, f"/api/v1/chats/{chat_id}", {"chat": edit})
            assert saved["chat"]["history"]["messages"]["a1"]["content"] == "short"
            assert saved["chat"]["history"]["messages"]["u1"]["content"] == "Q"  # kept: not sent
            # Fixed paths are not chat ids.
            async with srv.http(token) as http:
                assert (await http.get("/api/v1/chats/pinned")).json() == []
                assert (await http.get("/api/v1/chats/all/tags")).json() == []
                bad = await http.post(f"/api/v1/chats/{chat_id}", json={"chat": {"title": 5}})
                assert bad.status_code == 400 and bad.json()["code"] == "invalid_payload"
            eve = await srv.signup("Eve")
            await post(srv, eve["token"], f"/api/v1/chats/{chat_id}", {"chat": {"title": "x"}}, status=404)
            async with srv.http(eve["token"]) as http:
                assert (await http.delete(f"/api/v1/chats/{chat_id}")).status_code == 404
            async with srv.http(token) as http:
                assert (await http.delete(f"/api/v1/chats/{chat_id}")).json() is True
                assert (await http.get(f"/api/v1/chats/{chat_id}")).status_code == 404


async def test_an_answer_cut_by_shutdown_is_interrupted_after_restart(settings: Settings) -> None:
    with FakeOpenAI(token_delay=0.05, words=400) as slow:
        current = settings.model_copy(update={"openai_base_url": slow.base_url})
        async with run_server(current) as srv:
            user = await srv.signup("Hal")
            token = user["token"]
            chat_id = (await post(srv, token, "/api/chat/completions", turn("u1", "Q", None, "a1", None)))[
                "chat_id"
            ]
            await asyncio.sleep(0.8)
        # A row left unfinished by a crash (no shutdown ran) is marked at the next start.
        async with run_server(current) as srv:
            await srv.services.chats.repo.update(
                chat_id,
                {
                    "history": {
                        "messages": {"x1": {"id": "x1", "role": "assistant", "content": "cut", "done": False}}
                    }
                },
            )
        async with run_server(current.model_copy(update={"port": free_port()})) as srv:
            history = (await chat_of(srv, token, chat_id))["history"]["messages"]
            assert history["a1"]["outcome"] == "interrupted" and history["a1"]["done"] is True
            assert history["a1"]["content"].startswith("Answer 1 to: Q")
            assert history["x1"]["outcome"] == "interrupted" and history["x1"]["content"] == "cut"


async def test_stop_by_chat_reaches_the_process_that_runs_it(tmp_path: Path) -> None:
    """Fleet: the answer streams on process 0; a tab on process 1 stops it by chat (no task id), and the stored
    answer says stopped; another user's stop of that chat is refused."""
    from tests.integration.test_fleet import REDIS_URL, fleet_of, json_of, require_redis

    await require_redis()
    async with fleet_of(2, tmp_path, REDIS_URL) as fl:
        for s in fl.servers:
            s.env["CHATWIRE_DEMO_TOKENS_PER_SECOND"] = "100"
        ada, eve = await fl.signup("Ada"), await fl.signup("Eve")
        body = {**turn("u1", "go on for 3000 tokens", None, "a1", None), "model": "demo"}
        async with fl.servers[0].http(ada["token"]) as http:
            out = await json_of(await http.post("/api/chat/completions", json=body))
        chat_id = out["chat_id"]
        await asyncio.sleep(1.0)
        async with fl.servers[1].http(eve["token"]) as http:
            assert (await http.post(f"/api/tasks/chat/{chat_id}/stop")).status_code == 404
        async with fl.servers[1].http(ada["token"]) as http:
            r = await http.post(f"/api/tasks/chat/{chat_id}/stop")
            assert r.status_code == 200 and r.json()["message"] == "stopped", r.text
            for _ in range(300):
                a1 = (await json_of(await http.get(f"/api/v1/chats/{chat_id}")))["chat"]["history"][
                    "messages"
                ]["a1"]
                if a1["done"]:
                    break
                await asyncio.sleep(0.1)
        assert a1["outcome"] == "stopped" and 0 < len(a1["content"].split()) < 3000, a1


async def test_a_stop_that_finds_no_generation_ends_an_orphaned_answer(served: RunningServer) -> None:
    """An unfinished answer nobody streams (its process died in a fleet) does not block the chat: a stop that
    finds no generation ends it as interrupted once it has been silent a while; a fresh one is left alone."""
    from sqlalchemy import update

    from chatwire.db.models import ChatMessage

    user = await served.signup("Ivy")
    token = user["token"]
    chat_id = (await post(served, token, "/api/v1/chats/new", {"chat": {"title": "t"}}))["id"]
    orphan = {"id": "x1", "role": "assistant", "content": "half", "done": False}
    await post(served, token, f"/api/v1/chats/{chat_id}", {"chat": {"history": {"messages": {"x1": orphan}}}})
    stop = f"/api/tasks/chat/{chat_id}/stop"
    assert (await post(served, token, stop, None))["message"] == "No tasks found."
    assert (await chat_of(served, token, chat_id))["history"]["messages"]["x1"]["done"] is False  # too fresh
    async with served.services.db.session() as s:
        await s.execute(update(ChatMessage).where(ChatMessage.id == "x1").values(updated_at=1))
    assert (await post(served, token, stop, None))["message"] == "No tasks found."
    x1 = (await chat_of(served, token, chat_id))["history"]["messages"]["x1"]
    assert x1["done"] is True and x1["outcome"] == "interrupted" and x1["content"] == "half"
