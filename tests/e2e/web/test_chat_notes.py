"""Chat streaming into two tabs, event calls answered in a dialog, and a note edited by two users."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.web.conftest import WebServer, shot, sign_in

DONE = '[data-testid="assistant-message"][data-done="true"]'

pytestmark = pytest.mark.browser


def persisted_answer(server: WebServer, token: str, chat_id: str, message_id: str) -> dict[str, Any]:
    with server.api(token) as c:
        chat = c.get(f"/api/v1/chats/{chat_id}").json()
    return chat["chat"]["history"]["messages"][message_id]  # type: ignore[no-any-return]


# The note's text as shown, without other people's cursor labels (a remote cursor is drawn inside the text it
# sits in); null while there is no editor.
SHOWN_TEXT = """() => {
    const editor = document.querySelector('[data-testid=note-editor]');
    if (!editor) return null;
    const copy = editor.cloneNode(true);
    copy.querySelectorAll('.ProseMirror-yjs-cursor').forEach((c) => c.remove());
    return copy.textContent;
}"""
# Whether that text includes `t` (for wait_for_function).
SHOWS_TEXT = f"(t) => ({SHOWN_TEXT})()?.includes(t) ?? false"


def editor_text(page: Any) -> str:
    """The note's text as shown, without the other people's cursor labels."""
    return page.evaluate(SHOWN_TEXT)  # type: ignore[no-any-return]


def test_answer_streams_into_two_tabs(new_page: Any, web_server: WebServer) -> None:
    user = web_server.signup("Streamer")
    with web_server.api(user["token"]) as c:
        chat = c.post("/api/v1/chats/new", json={"chat": {"title": "Two tabs"}}).json()
    first = new_page()
    sign_in(first, user["email"])
    second = new_page(first.context)  # a second tab of the same browser: same user, another session
    for tab in (first, second):
        tab.goto(f"/chats/{chat['id']}")
        tab.locator('[data-testid="connection"][data-state="connected"]').wait_for()
    first.get_by_test_id("model").select_option("demo")
    first.get_by_test_id("prompt").fill("Tell me how chatwire streams answers")
    first.get_by_test_id("prompt").press("Enter")

    # Mid-stream, both tabs show part of the answer, with its status line and the stop button in the sender's tab.
    for tab in (first, second):
        tab.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=answer]')].some(e => e.textContent.trim().length > 0)"
        )
    second.get_by_test_id("status-line").first.wait_for()
    first.wait_for_function(
        "() => { const a = [...document.querySelectorAll('[data-testid=assistant-message]')].pop();"
        " return a && (a.dataset.done === 'true' || a.textContent.length > 120); }"
    )
    shot(first, "chat")

    for tab in (first, second):
        tab.locator(DONE).wait_for(timeout=60_000)
    message_id = first.locator(DONE).last.get_attribute("data-message-id")
    assert message_id
    stored = persisted_answer(web_server, user["token"], chat["id"], message_id)
    assert stored["content"]
    for tab in (first, second):
        shown = tab.locator(f'[data-message-id="{message_id}"] [data-testid="answer"]').inner_text()
        assert shown.strip() == stored["content"].strip()
    first.get_by_test_id("sources").wait_for()
    assert first.get_by_test_id("stop").count() == 0


def test_confirmation_dialog_answer_reaches_server(new_page: Any, web_server: WebServer) -> None:
    user = web_server.signup("Confirmer")
    page = new_page()
    acks: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: acks.append(str(frame))))
    sign_in(page, user["email"])
    page.goto("/chats")
    page.get_by_test_id("model").select_option("demo")
    page.get_by_test_id("prompt").fill("Please confirm before you answer")
    page.get_by_test_id("prompt").press("Enter")
    dialog = page.get_by_test_id("event-call")
    dialog.get_by_role("button", name="Confirm").wait_for()
    dialog.get_by_role("button", name="Confirm").click()
    # The answer goes back as the Socket.IO ack of the event call: packet type 3 (ACK) with [true].
    page.wait_for_function("() => !document.querySelector('[data-testid=event-call]').open")
    page.locator(DONE).wait_for(timeout=60_000)
    assert any(re.fullmatch(r"43\d+\[true\]", a) for a in acks), acks[-5:]
    chat_id = page.url.rsplit("/", 1)[-1]
    message_id = page.locator(DONE).last.get_attribute("data-message-id")
    assert message_id
    assert persisted_answer(web_server, user["token"], chat_id, message_id)["done"] is True


def share_with(page: Any, name: str, email: str, level: str) -> None:
    """Adds a person in the note's share panel through the user picker and sets their access."""
    panel = page.get_by_test_id("share-panel")
    panel.get_by_role("combobox", name="Add a person").fill(name)
    panel.get_by_role("option").filter(has_text=email).click()
    row = panel.get_by_test_id("grant").filter(has_text=name)
    row.get_by_role("combobox", name=f"Access for {name}").select_option(level)


def test_two_users_edit_one_note(new_page: Any, web_server: WebServer) -> None:
    bea = web_server.signup("Bea")
    cy = web_server.signup("Cy")
    a = new_page()
    b = new_page()
    sign_in(a, "admin@example.com")
    sign_in(b, bea["email"])

    a.goto("/notes")
    a.get_by_test_id("new-note").first.click()
    a.get_by_test_id("note-title").wait_for()
    a.get_by_test_id("note-title").fill("Launch plan")
    a.get_by_test_id("note-title").press("Enter")
    note_id = a.url.rsplit("/", 1)[-1]
    a.get_by_test_id("share").click()
    share_with(a, "Bea", bea["email"], "write")
    share_with(a, "Cy", cy["email"], "write")
    a.get_by_test_id("share-save").click()
    a.get_by_text("Sharing updated").wait_for()

    b.goto(f"/notes/{note_id}")
    for page in (a, b):
        page.locator('[data-testid="sync-state"][data-synced="true"]').wait_for()

    editor_a = a.get_by_test_id("note-editor")
    editor_b = b.get_by_test_id("note-editor")
    editor_a.click()
    a.keyboard.type("Ship the web client on Friday. ", delay=10)
    b.wait_for_function(SHOWS_TEXT, arg="on Friday.")
    editor_b.click()
    b.keyboard.press("Control+End")
    b.keyboard.type("Bea reviews the screenshots.", delay=10)
    expected = "Ship the web client on Friday. Bea reviews the screenshots."
    for page in (a, b):
        page.wait_for_function(SHOWS_TEXT, arg=expected)
    assert editor_text(a) == editor_text(b)
    assert editor_text(a).startswith(expected)

    # Each sees the other's cursor with their name.
    a.locator(".ProseMirror-yjs-cursor", has_text="Bea").wait_for()
    b.locator(".ProseMirror-yjs-cursor", has_text="Ada Admin").wait_for()
    a.get_by_test_id("peers").locator(".peer").first.wait_for()

    # A third person with read access sees the text and shows up as a second cursor for A.
    c = new_page()
    sign_in(c, cy["email"])
    c.goto(f"/notes/{note_id}")
    c.wait_for_function(SHOWS_TEXT, arg=expected)
    c.get_by_test_id("note-editor").get_by_text("Ship the web client").click()
    a.locator(".ProseMirror-yjs-cursor", has_text="Cy").wait_for()
    a.mouse.move(5, 5)
    shot(a, "note")

    # The text survives: a fresh tab joins and gets the stored state.
    d = new_page(b.context)
    d.goto(f"/notes/{note_id}")
    d.wait_for_function(SHOWS_TEXT, arg=expected)


def test_unknown_page_deep_link_after_sign_in(new_page: Any, web_server: WebServer) -> None:
    page = new_page()
    sign_in(page, "admin@example.com")
    page.goto(f"/notes/{uuid.uuid4().hex}")
    page.get_by_test_id("note-error").filter(has_text=re.compile("not found", re.I)).wait_for()
    assert httpx.get(f"{web_server.url}/notes/x").status_code == 200
