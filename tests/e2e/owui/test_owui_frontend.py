"""Open WebUI's own compiled frontend (the pinned wheel's `open_webui/frontend`, unchanged) on chatwire, in Chromium.

Everything a user does here goes through the reference client's own pages and its own REST and Socket.IO calls;
chatwire answers all of chatwire's domain, the proxy (tests/e2e/owui/proxy.py) only the routes outside it. REST
calls straight to chatwire only set up (users, a channel) and read back what was stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.owui.conftest import ARTIFACTS, Deployment

pytestmark = pytest.mark.e2e

TIMEOUT = 15_000  # ms, for anything the frontend shows after a round trip


@dataclass
class Tab:
    """One signed-in browser tab and the page errors it raised."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@dataclass
class People:
    admin: dict[str, Any]
    bob: dict[str, Any]


@pytest.fixture(scope="module")
def people(deployment: Deployment) -> People:
    return People(admin=deployment.admin, bob=deployment.add_user("Bob"))


@pytest.fixture
def open_tab(deployment: Deployment, browser: Any) -> Iterator[Callable[[dict[str, Any]], Tab]]:
    """Sign a user in through the frontend's own sign-in form, in a fresh browser context (its own storage)."""
    contexts: list[Any] = []

    def open_(user: dict[str, Any], context: Any = None) -> Tab:
        if context is None:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            contexts.append(context)
            page = context.new_page()
            tab = Tab(page)
            page.on("pageerror", lambda e: tab.errors.append(str(e)))
            page.goto(deployment.url + "/auth")
            page.fill("input[type=email]", user["email"])
            page.fill("input[type=password]", user["password"])
            page.keyboard.press("Enter")
            page.wait_for_url(deployment.url + "/", timeout=TIMEOUT)
            return tab
        page = context.new_page()
        tab = Tab(page)
        page.on("pageerror", lambda e: tab.errors.append(str(e)))
        return tab

    yield open_  # type: ignore[misc]
    for context in contexts:
        context.close()


def second_tab(first: Tab) -> Tab:
    """Another tab of the same signed-in browser (shares its localStorage token)."""
    page = first.page.context.new_page()
    tab = Tab(page)
    page.on("pageerror", lambda e: tab.errors.append(str(e)))
    return tab


def crashes(tab: Tab) -> list[str]:
    """Page errors that are crashes of the frontend (TypeErrors from a missing field), not refused requests."""
    return [e for e in tab.errors if "TypeError" in e or "undefined" in e or "null" in e]


# sign-in and users


def test_admin_and_plain_user_sign_in_and_see_the_chat_page(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    for user in (people.admin, people.bob):
        tab = open_tab(user)
        page = tab.page
        # The chat page: the model chosen by default and an enabled message input.
        page.wait_for_selector("#chat-input", timeout=TIMEOUT)
        assert page.locator("#chat-input").is_editable()
        page.wait_for_function(
            "() => window.localStorage.token && window.localStorage.token.length > 20", timeout=TIMEOUT
        )
        session = page.evaluate(
            """async () => (await fetch('/api/v1/auths/', {headers: {Authorization: `Bearer ${localStorage.token}`}}))
                .json()"""
        )
        assert session["id"] == user["id"] and session["permissions"]["features"]["channels"] is True
        tab.shot(f"home-{user['role']}")
        assert crashes(tab) == [], tab.errors
    assert deployment.proxy.unserved == []


def test_admin_users_page_lists_users(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(people.admin)
    page = tab.page
    page.goto(deployment.url + "/admin/users")
    for user in (people.admin, people.bob):
        page.get_by_text(user["email"], exact=True).wait_for(timeout=TIMEOUT)
    tab.shot("admin-users")
    assert crashes(tab) == [], tab.errors


def test_admin_edits_a_user_and_the_users_open_tab_learns_it(
    deployment: Deployment, open_tab: Callable[..., Tab], people: People
) -> None:
    cara = deployment.add_user("Cara")
    cara_tab = open_tab(cara)
    cara_tab.page.wait_for_selector("#chat-input", timeout=TIMEOUT)
    tab = open_tab(people.admin)
    page = tab.page
    page.goto(deployment.url + "/admin/users")
    row = page.locator("tr").filter(has_text=cara["email"])
    row.get_by_role("button", name="Edit User").click()
    page.get_by_label("Name", exact=True).fill("Cara Lane")
    page.get_by_label("Role", exact=True).select_option("pending")
    tab.shot("admin-edit-user")
    seen = len(deployment.proxy.forwarded)
    page.get_by_role("button", name="Save").click()
    row = page.locator("tr").filter(has_text=cara["email"])
    row.get_by_text("Cara Lane").wait_for(timeout=TIMEOUT)
    row.get_by_role("button", name="Change User Role").filter(has_text=re.compile("pending", re.I)).wait_for(
        timeout=TIMEOUT
    )
    with deployment.api(people.admin["token"]) as c:
        stored = c.get("/api/v1/users/", params={"page": 1, "query": cara["email"]}).json()["users"][0]
    assert (stored["name"], stored["role"]) == ("Cara Lane", "pending")
    # Cara's tab: a reload shows the frontend's own pending-account screen, with whom to ask.
    cara_tab.page.reload()
    cara_tab.page.get_by_text("Account Activation Pending").wait_for(timeout=TIMEOUT)
    cara_tab.page.get_by_text(people.admin["email"]).wait_for(timeout=TIMEOUT)
    cara_tab.shot("pending-account")
    # Since the save, what Cara's tab asked for beyond its own account was refused with 403, as it should be for a
    # pending account; those refusals are checked here and kept out of the log that the last test reads.
    mine = deployment.proxy.forwarded[seen:]
    refused = [call for call in mine if call[2] >= 400]
    assert refused and all(status == 403 for _, _, status in refused), refused
    assert ("GET", "/api/v1/auths/admin/details", 200) in mine
    del deployment.proxy.forwarded[seen:]
    deployment.proxy.forwarded.extend(call for call in mine if call[2] < 400)
    assert crashes(tab) == [] and crashes(cara_tab) == [], tab.errors + cara_tab.errors


def test_a_plain_user_is_kept_out_of_the_admin_users_list(deployment: Deployment, people: People) -> None:
    with deployment.api(people.bob["token"]) as c:
        r = c.get("/api/v1/users/", params={"page": 1})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


# channels


def test_admin_creates_a_channel_from_the_sidebar_and_a_user_gets_it_live(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    """The create form's defaults (a standard channel: `type: ""`, `is_private: null`) are accepted; the new
    channel is open to every user, and Bob's sidebar lists it without a reload."""
    ada, bob = open_tab(people.admin), open_tab(people.bob)
    for tab in (ada, bob):
        tab.page.locator("button[aria-label='Open Sidebar']").first.click()
        tab.page.get_by_text("Channels", exact=True).wait_for(timeout=TIMEOUT)
    bob.page.get_by_text("Channels", exact=True).click()  # the section starts folded
    ada.page.get_by_text("Channels", exact=True).hover()
    ada.page.locator("button[aria-label='Create Channel']").first.click()
    ada.page.fill("input[placeholder='new-channel']", "announcements")
    ada.page.get_by_role("button", name="Create", exact=True).click()
    ada.page.wait_for_url(re.compile(r".*/channels/[0-9a-f-]{36}$"), timeout=TIMEOUT)
    channel_id = ada.page.url.rsplit("/", 1)[1]
    bob.page.get_by_text("announcements", exact=True).wait_for(timeout=TIMEOUT)
    ada.page.get_by_text("This is the very beginning of the").wait_for(timeout=TIMEOUT)
    ada.shot("channel-created")
    with deployment.api(people.bob["token"]) as c:
        seen = c.get(f"/api/v1/channels/{channel_id}").json()
    assert seen["type"] is None and seen["is_private"] is False and seen["write_access"] is True
    assert {g["principal_id"] for g in seen["access_grants"]} == {"*"}  # shown as public, not locked
    assert ("POST", "/api/v1/channels/create", 200) in deployment.proxy.forwarded
    assert crashes(ada) == [] and crashes(bob) == [], ada.errors + bob.errors


def _channel_message(tab: Tab, text: str) -> Any:
    return tab.page.locator("[id^=message-]", has_text=text).first


def _hover_button(tab: Tab, message: Any, index: int) -> None:
    """Click the `index`th button of a message's hover toolbar (reaction, reply, pin, thread, edit, delete)."""
    message.hover()
    message.locator(".hover-reveal button, .absolute button").nth(index).click()


def test_two_users_in_a_channel_post_type_react_reply_edit_delete_live(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    with deployment.api(people.admin["token"]) as c:
        channel = c.post(
            "/api/v1/channels/create",
            json={"name": f"team-{int(time.time())}", "type": "group", "user_ids": [people.bob["id"]]},
        ).json()
    url = f"{deployment.url}/channels/{channel['id']}"
    ada, bob = open_tab(people.admin), open_tab(people.bob)
    for tab in (ada, bob):
        tab.page.goto(url)
        tab.page.get_by_text("This is the very beginning of the").wait_for(timeout=TIMEOUT)
    editor_a = ada.page.locator("#chat-input, .ProseMirror").first

    # typing: Bob sees Ada typing
    editor_a.click()
    ada.page.keyboard.type("Hello Bob, the release is ready", delay=20)
    bob.page.get_by_text("is typing").wait_for(timeout=TIMEOUT)
    # post: Bob gets it live
    ada.page.keyboard.press("Enter")
    first = _channel_message(bob, "Hello Bob, the release is ready")
    first.wait_for(timeout=TIMEOUT)

    # react: Bob adds a reaction, Ada sees it
    first.hover()
    first.locator("button").first.click()
    bob.page.fill("input[placeholder='Search all emojis']", "thumbsup")
    bob.page.locator("img[src*='/assets/emojis/']").first.click()
    reactions = ada.page.locator("[id^=message-]", has_text="Hello Bob").locator(
        "img[src*='/assets/emojis/']"
    )
    reactions.first.wait_for(timeout=TIMEOUT)

    # reply in a thread: Bob opens the thread and replies, Ada sees the reply count
    first.hover()
    first.locator("button[aria-label='Reply in Thread']").click()
    thread_editor = bob.page.locator(".ProseMirror").last
    thread_editor.wait_for(timeout=TIMEOUT)
    bob.page.wait_for_function("() => document.querySelectorAll('.ProseMirror').length > 1", timeout=TIMEOUT)
    thread_editor.click()
    bob.page.keyboard.type("Great, shipping it", delay=10)
    bob.page.keyboard.press("Enter")
    bob.page.get_by_text("Great, shipping it").wait_for(timeout=TIMEOUT)
    ada.page.locator("[id^=message-]", has_text="Hello Bob").get_by_text("1 Replies").wait_for(
        timeout=TIMEOUT
    )

    # edit: Ada edits her message, Bob sees the new text
    mine = _channel_message(ada, "Hello Bob, the release is ready")
    mine_id = mine.get_attribute("id")
    mine.hover()
    mine.locator("[id^=edit-message-]").click()
    box = ada.page.locator(f"[id='{mine_id}'] textarea")
    box.fill("Hello Bob, the release (v2) is ready")
    ada.page.locator("#confirm-edit-message-button").click()
    _channel_message(bob, "the release (v2) is ready").wait_for(timeout=TIMEOUT)

    # pin: Ada pins it (the toolbar's third button), Bob sees it marked
    edited = _channel_message(ada, "the release (v2) is ready")
    edited.hover()
    edited.locator("div.hover-reveal button").nth(2).click()
    _channel_message(bob, "the release (v2) is ready").get_by_text("Pinned", exact=True).wait_for(
        timeout=TIMEOUT
    )

    # the reaction and the pin survive a reload
    bob.page.reload()
    again = _channel_message(bob, "the release (v2) is ready")
    again.wait_for(timeout=TIMEOUT)
    again.locator("img[src*='/assets/emojis/']").first.wait_for(timeout=TIMEOUT)
    again.get_by_text("Pinned", exact=True).wait_for(timeout=TIMEOUT)
    bob.shot("channel-bob")

    # delete: Bob posts a message and deletes it, Ada sees it come and go
    editor_b = bob.page.locator(".ProseMirror").first
    editor_b.click()
    bob.page.keyboard.type("Oops, wrong channel", delay=10)
    bob.page.keyboard.press("Enter")
    _channel_message(ada, "Oops, wrong channel").wait_for(timeout=TIMEOUT)
    oops = _channel_message(bob, "Oops, wrong channel")
    oops.hover()
    oops.locator("div.hover-reveal button").last.click()
    bob.page.get_by_role("button", name="Confirm").click()
    _channel_message(ada, "Oops, wrong channel").wait_for(state="detached", timeout=TIMEOUT)
    ada.shot("channel-ada")

    with deployment.api(people.admin["token"]) as c:
        stored = c.get(f"/api/v1/channels/{channel['id']}/messages").json()
    assert [m["content"] for m in stored] == ["Hello Bob, the release (v2) is ready"]
    assert stored[0]["reply_count"] == 1 and stored[0]["latest_reply_at"] > stored[0]["created_at"]
    assert stored[0]["is_pinned"] is True and stored[0]["pinned_by"] == people.admin["id"]
    with deployment.api(people.admin["token"]) as c:
        replies = c.get(f"/api/v1/channels/{channel['id']}/messages/{stored[0]['id']}/thread").json()
    assert [(m["content"], m["user_id"]) for m in replies] == [("Great, shipping it", people.bob["id"])]
    assert stored[0]["reactions"][0]["users"] == [{"id": people.bob["id"], "name": "Bob"}]
    assert crashes(ada) == [] and crashes(bob) == [], ada.errors + bob.errors


# notes


def test_a_note_edited_from_two_tabs(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    ada = open_tab(people.admin)
    ada.page.goto(f"{deployment.url}/notes/new?title=Launch-plan")
    ada.page.get_by_role("button", name="Confirm").click()
    ada.page.wait_for_url(re.compile(r".*/notes/[0-9a-f-]{36}$"), timeout=TIMEOUT)
    note_id = ada.page.url.rsplit("/", 1)[1]
    # Share it with Bob the way the frontend's access dialog does (Open WebUI 0.12's `access_grants`).
    shared = ada.page.evaluate(
        """async ([id, bob]) => (await fetch(`/api/v1/notes/${id}/access/update`, {method: 'POST',
            headers: {'Content-Type': 'application/json', Authorization: `Bearer ${localStorage.token}`},
            body: JSON.stringify({access_grants: [{principal_type: 'user', principal_id: bob, permission: 'write'}]})
        })).json()""",
        [note_id, people.bob["id"]],
    )
    assert [(g["principal_id"], g["permission"]) for g in shared["access_grants"]] == [
        (people.bob["id"], "write")
    ]

    bob = open_tab(people.bob)
    bob.page.goto(f"{deployment.url}/notes/{note_id}")
    editor_a = ada.page.locator(".ProseMirror").first
    editor_b = bob.page.locator(".ProseMirror").first
    editor_b.wait_for(timeout=TIMEOUT)
    editor_a.click()
    ada.page.keyboard.type("Ship on Friday.", delay=15)
    bob.page.locator(".ProseMirror", has_text="Ship on Friday.").wait_for(timeout=TIMEOUT)
    editor_b.click()
    bob.page.keyboard.press("End")
    bob.page.keyboard.type(" Bob agrees.", delay=15)
    ada.page.locator(".ProseMirror", has_text="Ship on Friday. Bob agrees.").wait_for(timeout=TIMEOUT)
    ada.shot("note-ada")
    bob.shot("note-bob")

    deadline = time.monotonic() + 15
    md = ""
    while time.monotonic() < deadline:  # the frontend saves a snapshot of the content shortly after edits
        with deployment.api(people.admin["token"]) as c:
            md = ((c.get(f"/api/v1/notes/{note_id}").json().get("data") or {}).get("content") or {}).get(
                "md", ""
            )
        if "Bob agrees." in md:
            break
        time.sleep(0.5)
    assert "Ship on Friday. Bob agrees." in md
    # Bob's notes page lists it (`/notes/search`), as shared with him
    bob.page.goto(f"{deployment.url}/notes")
    bob.page.get_by_text("Launch-plan").first.wait_for(timeout=TIMEOUT)
    assert crashes(ada) == [] and crashes(bob) == [], ada.errors + bob.errors


# chats (completions in the 0.12 shape, stop by chat: issue 14)


def _answer_text(tab: Tab) -> str:
    """The last answer's text as shown, without the citation chip the demo model's source adds ("1 Source")."""
    texts = tab.page.locator(".chat-assistant #response-content-container").all_inner_texts()
    return re.sub(r"\s*\d+ Sources?$", "", " ".join(texts[-1].split())) if texts else ""


def _stored_answer(deployment: Deployment, token: str, chat_id: str) -> dict[str, Any] | None:
    with deployment.api(token) as c:
        r = c.get(f"/api/v1/chats/{chat_id}")
    if r.status_code != 200:
        return None
    messages = list(r.json()["chat"]["history"]["messages"].values())
    answers = [m for m in messages if m.get("role") == "assistant"]
    return answers[-1] if answers else None


def _ask(deployment: Deployment, tab: Tab, token: str, prompt: str) -> str:
    """Send `prompt` from the chat page as a user does and return the id of the chat the server created."""
    with deployment.api(token) as c:
        before = {chat["id"] for chat in c.get("/api/v1/chats/").json()}
    tab.page.locator("#chat-input").click()
    tab.page.keyboard.type(prompt)
    tab.page.keyboard.press("Enter")
    deadline = time.monotonic() + TIMEOUT / 1000
    while time.monotonic() < deadline:
        with deployment.api(token) as c:
            new = [chat["id"] for chat in c.get("/api/v1/chats/").json() if chat["id"] not in before]
        if new:
            return new[0]
        time.sleep(0.2)
    raise AssertionError("the frontend's question created no chat")


def _wait_done(deployment: Deployment, token: str, chat_id: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = _stored_answer(deployment, token, chat_id)
        if answer is not None and answer.get("done"):
            return answer
        time.sleep(0.3)
    raise AssertionError("the answer was never stored as done")


def _shows(tab: Tab, text: str) -> None:
    """Wait until the tab's last answer reads exactly `text` (whitespace normalised)."""
    want = " ".join(text.split())
    deadline = time.monotonic() + TIMEOUT / 1000
    while time.monotonic() < deadline:
        if _answer_text(tab) == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"the tab shows {_answer_text(tab)[-120:]!r}, stored ends {want[-120:]!r}")


def test_a_saved_chat_streams_a_second_tab_follows_and_a_reload_converges(
    deployment: Deployment, people: People, open_tab: Callable[..., Tab]
) -> None:
    ada = open_tab(people.admin)
    token = people.admin["token"]
    chat_id = _ask(deployment, ada, token, "Explain how chat streaming works in 400 words")
    ada.page.locator(".chat-assistant #response-content-container").first.wait_for(timeout=TIMEOUT)
    # A second tab opens the chat mid-answer and follows it; a third reloads mid-answer.
    follower, reloader = second_tab(ada), second_tab(ada)
    for tab in (follower, reloader):
        tab.page.goto(f"{deployment.url}/c/{chat_id}")
        tab.page.locator(".chat-assistant").first.wait_for(timeout=TIMEOUT)
    partial = _stored_answer(deployment, token, chat_id)
    assert partial is not None and not partial.get("done"), "the answer should still be streaming"
    reloader.page.reload()
    answer = _wait_done(deployment, token, chat_id)
    assert len(answer["content"].split()) == 400
    assert ("POST", "/api/chat/completions", 200) in deployment.proxy.forwarded
    for tab in (ada, follower, reloader):
        _shows(tab, answer["content"])
    follower.shot("chat-follower")
    assert all(crashes(t) == [] for t in (ada, follower, reloader)), ada.errors + follower.errors


def test_stop_stops_the_answer(deployment: Deployment, people: People, open_tab: Callable[..., Tab]) -> None:
    bob = open_tab(people.bob)
    token = people.bob["token"]
    chat_id = _ask(deployment, bob, token, "Write a very long essay about event servers in 3000 words")
    bob.page.locator(".chat-assistant #response-content-container").first.wait_for(timeout=TIMEOUT)
    time.sleep(1)
    bob.page.locator("button[aria-label='Stop']").click()
    answer = _wait_done(deployment, token, chat_id, seconds=15)
    words = len(answer["content"].split())
    assert 0 < words < 3000
    assert ("POST", f"/api/tasks/chat/{chat_id}/stop", 200) in deployment.proxy.forwarded
    time.sleep(1.5)  # nothing more arrives after the stop
    assert len(_stored_answer(deployment, token, chat_id)["content"].split()) == words  # type: ignore[index]
    _shows(bob, answer["content"])
    bob.shot("chat-stopped")
    assert crashes(bob) == [], bob.errors


def test_every_call_the_frontend_made_was_served(deployment: Deployment) -> None:
    """After the scenarios above: nothing fell outside both chatwire and the proxy's static list, and chatwire
    refused nothing the frontend sent (a 4xx here is a shape the reference client needs and chatwire lacks)."""
    assert deployment.proxy.unserved == []
    refused = sorted({(m, p, s) for m, p, s in deployment.proxy.forwarded if s >= 400})
    assert [r for r in refused if r[2] >= 500] == []
    assert refused == []  # anything refused is a shape the reference client needs and chatwire lacks
