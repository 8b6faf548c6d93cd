"""Sign up / sign in, SPA routing, and a channel seen live by two users in two browsers."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.web.conftest import PASSWORD, WebServer, shot, sign_in

pytestmark = pytest.mark.browser


def test_spa_routes_and_api_404(web_server: WebServer) -> None:
    with httpx.Client(base_url=web_server.url) as c:
        index = c.get("/")
        assert index.status_code == 200 and '<div id="app">' in index.text
        deep = c.get("/channels/some-id")
        assert deep.status_code == 200 and deep.text == index.text
        assert c.get("/api/v1/nothing-here").status_code == 404
        assert c.get("/assets/missing.js").status_code == 404


def test_sign_up_then_sign_in(new_page: Any, web_server: WebServer) -> None:
    page = new_page()
    email = f"grace-{uuid.uuid4().hex[:6]}@example.com"
    page.goto("/")
    shot(page, "signin")
    page.get_by_role("button", name="Create an account").click()
    page.get_by_label("Name").fill("Grace Hopper")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.locator('[data-testid="connection"][data-state="connected"]').wait_for()
    assert re.search(r"/chats$", page.url)

    page.reload()  # the session survives a reload
    page.locator('[data-testid="connection"][data-state="connected"]').wait_for()
    # Signing out sits behind the account menu and asks first; cancelling keeps the session.
    page.get_by_role("button", name="Account menu for Grace Hopper").click()
    page.get_by_role("menuitem", name="Sign out…").click()
    page.get_by_role("dialog", name="Sign out?").get_by_role("button", name="Cancel").click()
    page.locator('[data-testid="connection"][data-state="connected"]').wait_for()
    assert page.evaluate("localStorage.getItem('chatwire.session')") is not None
    page.get_by_role("button", name="Account menu for Grace Hopper").click()
    page.get_by_role("menuitem", name="Sign out…").click()
    page.get_by_role("dialog", name="Sign out?").get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()

    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()

    sign_in(page, email)
    with web_server.api() as c:  # the token in the page is a real one
        token = page.evaluate("JSON.parse(localStorage.getItem('chatwire.session')).token")
        assert c.get("/api/v1/auths/", headers={"Authorization": f"Bearer {token}"}).json()["email"] == email


def test_channel_live_between_two_users(new_page: Any, web_server: WebServer) -> None:
    bob = web_server.signup("Bob")
    with web_server.api(web_server.admin["token"]) as c:
        channel = c.post(
            "/api/v1/channels/create",
            json={"name": f"launch-{uuid.uuid4().hex[:4]}", "description": "Ship it"},
        ).json()
        c.post(
            f"/api/v1/channels/{channel['id']}/messages/post", json={"content": "Morning all! Standup in 5."}
        )

    a = new_page()
    b = new_page()
    sign_in(a, "admin@example.com")
    sign_in(b, bob["email"])
    for page in (a, b):
        page.goto(f"/channels/{channel['id']}")
        page.get_by_text("Morning all! Standup in 5.").wait_for()
        page.locator('[data-testid="connection"][data-state="connected"]').wait_for()

    # A posts: B sees the message live.
    a.get_by_test_id("channel-input").fill("The release notes are up for review")
    a.keyboard.press("Enter")
    message = b.locator('[data-testid="message"]', has_text="The release notes are up for review")
    message.wait_for()

    # A edits: B sees the new text and the edited mark.
    mine = a.locator('[data-testid="message"]', has_text="The release notes are up for review")
    mine.hover()
    mine.get_by_test_id("edit").click()
    a.get_by_test_id("edit-input").fill("The release notes (v2) are up for review")
    a.get_by_test_id("edit-input").press("Enter")
    b.locator(
        '[data-testid="message-content"]', has_text="The release notes (v2) are up for review"
    ).wait_for()

    # A reacts: B sees the reaction with its count.
    mine = a.locator('[data-testid="message"]', has_text="(v2)")
    mine.hover()
    mine.get_by_test_id("react").click()
    mine.get_by_role("menuitem", name="🎉").click()
    reaction = b.locator('[data-testid="message"]', has_text="(v2)").get_by_test_id("reaction")
    reaction.wait_for()
    assert "🎉" in reaction.inner_text() and "1" in reaction.inner_text()

    # B answers; then A types: B sees "Ada Admin is typing…", which goes away by itself.
    b.get_by_test_id("channel-input").fill("Looks great, reading now 👀")
    b.keyboard.press("Enter")
    a.get_by_text("Looks great, reading now 👀").wait_for()
    a.get_by_test_id("channel-input").press_sequentially("Also, the demo is at 3", delay=20)
    typing = b.get_by_test_id("typing")
    b.wait_for_function(
        "() => document.querySelector('[data-testid=typing]').textContent.includes('Ada Admin is typing')"
    )
    b.mouse.move(5, 5)
    shot(b, "channel")
    b.wait_for_function(
        "() => document.querySelector('[data-testid=typing]').textContent.trim() === ''", timeout=12_000
    )
    assert typing.inner_text().strip() == ""

    # What B saw live is what the server stored.
    with web_server.api(bob["token"]) as c:
        stored = c.get(f"/api/v1/channels/{channel['id']}/messages").json()
    contents = [m["content"] for m in stored]
    assert "The release notes (v2) are up for review" in contents
    edited = next(m for m in stored if m["content"].startswith("The release notes (v2)"))
    assert edited["reactions"] == [
        {
            "name": "🎉",
            "user_ids": [web_server.admin["id"]],
            "users": [{"id": web_server.admin["id"], "name": web_server.admin["name"]}],
            "count": 1,
        }
    ]


def test_unread_count_for_another_channel(new_page: Any, web_server: WebServer) -> None:
    carol = web_server.signup("Carol")
    with web_server.api(web_server.admin["token"]) as c:
        first = c.post("/api/v1/channels/create", json={"name": f"aa-{uuid.uuid4().hex[:4]}"}).json()
        other = c.post("/api/v1/channels/create", json={"name": f"zz-{uuid.uuid4().hex[:4]}"}).json()
    page = new_page()
    sign_in(page, carol["email"])
    page.goto(f"/channels/{first['id']}")
    page.get_by_role("heading", name=f"#{first['name']}", exact=True).wait_for()
    with web_server.api(web_server.admin["token"]) as c:
        for text in ("one", "two"):
            c.post(f"/api/v1/channels/{other['id']}/messages/post", json={"content": text})
    link = page.locator('[data-testid="channel-link"]', has_text=other["name"])
    link.get_by_test_id("unread").filter(has_text="2").wait_for()
    link.click()
    page.get_by_text("two").wait_for()
    assert link.get_by_test_id("unread").count() == 0
    # Opening the channel sent the read marker: the server's count is 0 too, so a reload shows no badge.
    for _ in range(50):
        with web_server.api(carol["token"]) as c:
            listed = {ch["id"]: ch for ch in c.get("/api/v1/channels/").json()}
        if listed[other["id"]]["unread_count"] == 0:
            break
        time.sleep(0.1)
    assert listed[other["id"]]["unread_count"] == 0
    page.goto(f"/channels/{first['id']}")
    page.get_by_role("heading", name=f"#{first['name']}", exact=True).wait_for()
    assert link.get_by_test_id("unread").count() == 0


def test_reconnection_is_shown_and_missed_messages_appear(new_page: Any, web_server: WebServer) -> None:
    dan = web_server.signup("Dan")
    with web_server.api(web_server.admin["token"]) as c:
        channel = c.post("/api/v1/channels/create", json={"name": f"ops-{uuid.uuid4().hex[:4]}"}).json()
    page = new_page()
    sign_in(page, dan["email"])
    page.goto(f"/channels/{channel['id']}")
    page.get_by_role("heading", name=f"#{channel['name']}", exact=True).wait_for()
    page.locator('[data-testid="connection"][data-state="connected"]').wait_for()

    # Cut the transport (as a network drop would) and keep the client away for a moment.
    page.evaluate(
        "() => { const m = window.chatwire.conn.socket.io;"
        " m.reconnectionDelay(2500); m.reconnectionDelayMax(2500); m.engine.close(); }"
    )
    page.locator('[data-testid="connection"][data-state="reconnecting"]').wait_for()
    with web_server.api(web_server.admin["token"]) as c:
        c.post(
            f"/api/v1/channels/{channel['id']}/messages/post", json={"content": "Sent while you were away"}
        )
    # Back: either recovered (the missed event is replayed) or connected (the page reloads over REST).
    page.locator(
        '[data-testid="connection"][data-state="connected"], [data-testid="connection"][data-state="recovered"]'
    ).wait_for()
    page.get_by_text("Sent while you were away").wait_for()
    assert page.get_by_text("Sent while you were away").count() == 1
