"""Conversations in Chromium, as a user has them: the question stays after the answer (both tabs, after a reload),
stop from either tab (button and Esc), regenerate and edit as branches with < n/m > navigation, an answer cut by
SIGKILL shown as interrupted after the restart, an unreachable model server shown as an error, and a 20-turn
conversation whose stored transcript equals what both tabs show."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.web.conftest import PASSWORD, WEB_DIST, WebServer, shot, sign_in
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.browser

DONE = '[data-testid="assistant-message"][data-done="true"]'


def open_tabs(new_page: Any, user: dict[str, Any], chat_id: str | None = None, n: int = 2) -> list[Any]:
    first = new_page()
    sign_in(first, user["email"])
    tabs = [first] + [new_page(first.context) for _ in range(n - 1)]
    for tab in tabs:
        tab.goto(f"/chats/{chat_id}" if chat_id else "/chats")
        tab.locator('[data-testid="connection"][data-state="connected"]').wait_for()
    return tabs


def new_chat(server: WebServer, token: str, title: str) -> str:
    with server.api(token) as c:
        return str(c.post("/api/v1/chats/new", json={"chat": {"title": title}}).json()["id"])


def stored_chat(server_url: str, token: str, chat_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        return c.get(f"/api/v1/chats/{chat_id}").json()["chat"]  # type: ignore[no-any-return]


def ask(tab: Any, text: str) -> None:
    tab.get_by_test_id("prompt").fill(text)
    tab.get_by_test_id("prompt").press("Enter")


def thread(tab: Any) -> list[tuple[str, str]]:
    """The shown thread: (role, text) of each message, in order (answers are rendered markdown: compared without
    the whitespace at their ends)."""
    return [  # type: ignore[no-any-return]
        tuple(x)
        for x in tab.evaluate(
            """() => [...document.querySelectorAll('[data-testid=user-message],[data-testid=assistant-message]')]
                .map(e => e.dataset.testid === 'user-message'
                    ? ['user', e.querySelector('[data-testid=user-content]').textContent]
                    : ['assistant', e.querySelector('[data-testid=answer]').textContent.trim()])"""
        )
    ]


def wait_answers_done(tab: Any, count: int) -> None:
    tab.wait_for_function(
        f"""() => {{ const a = [...document.querySelectorAll('[data-testid=assistant-message]')];
            return a.length === {count} && a.every(e => e.dataset.done === 'true'); }}""",
        timeout=60_000,
    )


def stored_thread(chat: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (m["role"], m["content"] if m["role"] == "user" else m["content"].strip()) for m in chat["messages"]
    ]


def test_question_stays_after_the_answer_in_both_tabs_and_after_reload(
    new_page: Any, web_server: WebServer
) -> None:
    user = web_server.signup("Keeper")
    chat_id = new_chat(web_server, user["token"], "Keeps")
    first, second = open_tabs(new_page, user, chat_id)
    first.get_by_test_id("model").select_option("demo")
    ask(first, "What does chatwire keep? 12 tokens")
    for tab in (first, second):
        wait_answers_done(tab, 1)
        tab.get_by_test_id("user-content").filter(has_text="What does chatwire keep?").wait_for()
        tab.get_by_test_id("answer-model").filter(has_text="demo").wait_for()
    first.reload()
    wait_answers_done(first, 1)
    assert (
        thread(first) == thread(second) == stored_thread(stored_chat(web_server.url, user["token"], chat_id))
    )
    assert thread(first)[0] == ("user", "What does chatwire keep? 12 tokens")
    assert first.get_by_test_id("answer-model").inner_text() == "demo"
    assert first.locator('[data-testid="assistant-message"]').get_attribute("data-outcome") == "done"


def test_a_tab_opened_mid_answer_converges(new_page: Any, web_server: WebServer) -> None:
    user = web_server.signup("Latecomer")
    chat_id = new_chat(web_server, user["token"], "Late")
    (first,) = open_tabs(new_page, user, chat_id, n=1)
    first.get_by_test_id("model").select_option("demo")
    ask(first, "Something long, 240 tokens")
    first.wait_for_function("() => document.querySelector('[data-testid=answer]')?.textContent.length > 100")
    late = new_page(first.context)
    late.goto(f"/chats/{chat_id}")
    late.get_by_test_id("user-content").filter(has_text="Something long").wait_for()
    late.get_by_test_id("stop").wait_for()  # it sees the answer streaming and can stop it
    for tab in (first, late):
        wait_answers_done(tab, 1)
    assert thread(first) == thread(late) == stored_thread(stored_chat(web_server.url, user["token"], chat_id))


def test_stop_from_the_starting_tab_and_from_another_tab(new_page: Any, web_server: WebServer) -> None:
    user = web_server.signup("Stopper")
    chat_id = new_chat(web_server, user["token"], "Stops")
    first, second = open_tabs(new_page, user, chat_id)
    first.get_by_test_id("model").select_option("demo")

    # 1. The tab that started it stops it with the button.
    ask(first, "Tell me everything, 600 tokens")
    for tab in (first, second):
        tab.get_by_test_id("stop").wait_for()
        assert tab.get_by_test_id("stop").is_enabled()
    first.wait_for_function("() => document.querySelector('[data-testid=answer]').textContent.length > 40")
    first.get_by_test_id("stop").click()
    for tab in (first, second):
        tab.locator('[data-outcome="stopped"]').wait_for()
        tab.get_by_test_id("outcome").filter(has_text="Stopped").wait_for()

    # 2. The other tab stops the next one with Esc.
    ask(first, "And more, 600 tokens")
    second.wait_for_function(
        "() => { const a = [...document.querySelectorAll('[data-testid=assistant-message]')];"
        " return a.length === 2 && a[1].dataset.done === 'false'"
        " && a[1].querySelector('[data-testid=answer]').textContent.length > 40; }"
    )
    second.get_by_test_id("stop").wait_for()
    second.keyboard.press("Escape")
    for tab in (first, second):
        tab.wait_for_function("() => document.querySelectorAll('[data-outcome=stopped]').length === 2")
    shot(second, "chat-stopped")
    chat = stored_chat(web_server.url, user["token"], chat_id)
    answers = [m for m in chat["messages"] if m["role"] == "assistant"]
    assert [a["outcome"] for a in answers] == ["stopped", "stopped"]
    assert 0 < len(answers[1]["content"].split()) < 600
    # What the tabs show is what was stored (the stop kept the prefix).
    first.wait_for_timeout(300)
    assert thread(first) == thread(second) == stored_thread(chat)


def test_regenerate_edit_and_move_between_siblings(new_page: Any, web_server: WebServer) -> None:
    user = web_server.signup("Brancher")
    chat_id = new_chat(web_server, user["token"], "Branches")
    (tab,) = open_tabs(new_page, user, chat_id, n=1)
    tab.get_by_test_id("model").select_option("demo")
    ask(tab, "First question, 5 tokens")
    wait_answers_done(tab, 1)
    ask(tab, "Second question, 8 tokens")
    wait_answers_done(tab, 2)
    original = thread(tab)[3][1]

    tab.get_by_test_id("regenerate").last.click()
    wait_answers_done(tab, 2)
    tab.get_by_test_id("sibling-index").filter(has_text="2/2").wait_for()
    assert thread(tab)[3][1] == original  # the demo model answers a prompt the same way
    tab.get_by_test_id("prev").last.click()
    tab.get_by_test_id("sibling-index").filter(has_text="1/2").wait_for()

    # Edit the second question: a sibling question with its own answer, under the same first answer.
    tab.get_by_test_id("user-message").last.hover()
    tab.get_by_test_id("edit-message").last.click()
    tab.get_by_test_id("edit-input").fill("Second question, edited, 6 tokens")
    tab.get_by_test_id("edit-input").press("Enter")
    wait_answers_done(tab, 2)
    tab.get_by_test_id("user-content").filter(has_text="edited").wait_for()
    assert thread(tab)[3][1].startswith("You asked about: Second question, edited")
    shot(tab, "chat-branches")
    chat = stored_chat(web_server.url, user["token"], chat_id)
    history = chat["history"]["messages"]
    first_answer = chat["messages"][1]["id"]
    assert len(history[first_answer]["childrenIds"]) == 2  # the question and its edit
    # Back to the original question: its branch (with both answers) comes back, also after a reload.
    tab.locator('[data-testid="user-message"]').last.locator('[data-testid="prev"]').click()
    tab.get_by_test_id("user-content").filter(has_text="Second question, 8 tokens").wait_for()
    tab.wait_for_timeout(300)  # the chosen branch is saved (POST /api/v1/chats/{id})
    tab.reload()
    tab.get_by_test_id("user-content").filter(has_text="Second question, 8 tokens").wait_for()
    tab.locator('[data-testid="user-message"]').last.get_by_test_id("sibling-index").filter(
        has_text="1/2"
    ).wait_for()


def test_twenty_turns_stored_transcript_equals_what_the_tabs_show(
    new_page: Any, web_server: WebServer
) -> None:
    user = web_server.signup("Talker")
    chat_id = new_chat(web_server, user["token"], "Twenty")
    first, second = open_tabs(new_page, user, chat_id)
    first.get_by_test_id("model").select_option("demo")
    for i in range(1, 21):
        ask(first if i % 2 else second, f"Turn {i}: 4 tokens")
        for tab in (first, second):
            wait_answers_done(tab, i)
    chat = stored_chat(web_server.url, user["token"], chat_id)
    stored = stored_thread(chat)
    assert len(stored) == 40
    assert [c for r, c in stored if r == "user"] == [f"Turn {i}: 4 tokens" for i in range(1, 21)]
    first.wait_for_timeout(300)
    assert thread(first) == stored
    assert thread(second) == stored


# Own server processes: SIGKILL and an unreachable model server.


class ServerProcess:
    """`python -m chatwire serve` on a fixed port and data dir, so that it can be killed and started again."""

    def __init__(self, data: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self.env = {
            **os.environ,
            "CHATWIRE_HOST": "127.0.0.1",
            "CHATWIRE_PORT": str(self.port),
            "CHATWIRE_DATA_DIR": str(data),
            "CHATWIRE_DATABASE_URL": "",
            "CHATWIRE_REDIS_URL": "",
            "CHATWIRE_JWT_SECRET": "conv-e2e-" + uuid.uuid4().hex,
            "CHATWIRE_WEB_DIR": str(WEB_DIST),
            "CHATWIRE_LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.data / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from chatwire.cli import main; main()", "serve"],
            env=self.env,
            cwd=self.data,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError((self.data / "server.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def signup(self, name: str) -> dict[str, Any]:
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        r = httpx.post(
            f"{self.url}/api/v1/auths/signup", json={"name": name, "email": email, "password": PASSWORD}
        )
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Any]:
    if not (WEB_DIST / "index.html").exists():
        pytest.skip("web/dist is not built: run `make web`")
    made: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"s{len(made)}", **env)
        server.data.mkdir()
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


def test_sigkill_mid_answer_shows_interrupted_after_restart(browser: Any, own_server: Any) -> None:
    server = own_server()
    user = server.signup("Crash")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.url)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        sign_in(page, user["email"])
        page.goto("/chats")
        page.get_by_test_id("model").select_option("demo")
        ask(page, "A long story, 2000 tokens")
        page.wait_for_function(
            "() => { const a = document.querySelector('[data-testid=answer]'); return a && a.textContent.length > 200; }"
        )
        chat_id = page.url.rsplit("/", 1)[-1]
        time.sleep(0.5)  # a write of the stream reaches the database (every 0.25 s)
        server.kill()
        server.start()
        page.reload()
        page.locator('[data-outcome="interrupted"]').wait_for()
        page.get_by_test_id("outcome").filter(has_text="Interrupted").wait_for()
        shot(page, "chat-interrupted")
        chat = stored_chat(server.url, user["token"], chat_id)
        answer = chat["messages"][-1]
        assert answer["outcome"] == "interrupted" and answer["done"] is True and answer["content"]
        assert chat["messages"][0]["content"] == "A long story, 2000 tokens"
        assert page.get_by_test_id("answer").inner_text().strip() == answer["content"].strip()
        assert page.get_by_test_id("stop").count() == 0
    finally:
        context.close()


def test_unreachable_model_server_shows_an_error_and_unavailable(browser: Any, own_server: Any) -> None:
    with FakeOpenAI() as fake:
        server = own_server(CHATWIRE_OPENAI_BASE_URL=fake.base_url)
        user = server.signup("Offline")
        context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.url)
        context.set_default_timeout(15_000)
        try:
            page = context.new_page()
            sign_in(page, user["email"])
            page.goto("/chats")
            page.get_by_test_id("model").select_option("tiny")
            ask(page, "Hello model")
            wait_answers_done(page, 1)
            assert page.get_by_test_id("answer").inner_text().strip() == "Answer 1 to: Hello model"
            fake.__exit__()  # the model server goes away
            page.reload()
            page.locator('[data-testid="model"] option', has_text="tiny (unavailable)").wait_for(
                state="attached"
            )
            assert page.get_by_test_id("model").input_value() == "tiny"  # no silent switch to demo
            ask(page, "Are you there?")
            page.locator('[data-outcome="failed"]').wait_for()
            error = page.locator('[data-outcome="failed"] [data-testid="outcome"]').inner_text()
            assert error == f"The model server at 127.0.0.1:{fake.port} could not be reached."
            shot(page, "chat-unreachable")
        finally:
            context.close()
            fake.__enter__()
