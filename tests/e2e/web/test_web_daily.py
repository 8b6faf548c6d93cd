"""The web client as a daily driver, used as a person would at 1280x800 and at 390x844: markdown and safe links,
channels with members and presence, direct messages, note sharing, loading/empty/error/offline states, the account
menu, and on every page: fits the phone screen, axe-core finds nothing serious, the CSP refuses nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.web.conftest import PASSWORD, WebServer, shot
from tests.e2e.web.ux import SIZES, check_layout, check_page, csp_violations, new_sized_context

pytestmark = pytest.mark.browser

CONNECTED = (
    '[data-testid="connection"][data-state="connected"], [data-testid="connection"][data-state="recovered"]'
)
UNSAFE_LINKS = (
    "() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
    ".filter(h => !/^(https?:|mailto:|\\/)/i.test(h))"
)


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def person(browser: Any, web_server: WebServer, size: str) -> Iterator[Any]:
    """`person(user)`: a signed-in page of its own browser context at the test's size."""
    contexts: list[Any] = []

    def make(user: dict[str, Any] | None = None) -> Any:
        context = new_sized_context(browser, web_server.url, size)
        contexts.append(context)
        page = context.new_page()
        if user is not None:
            sign_in_as(page, user)
        return page

    yield make
    for c in contexts:
        for p in c.pages:
            assert csp_violations(p) == [], f"CSP refused {csp_violations(p)}"
        c.close()


def sign_in_as(page: Any, user: dict[str, Any]) -> None:
    page.goto("/")
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.locator(CONNECTED).first.wait_for()


def show_list(page: Any, size: str) -> None:
    """On a phone the list pane opens from the header's list button; on a desktop it is always there."""
    if size == "phone":
        page.get_by_test_id("list-toggle").wait_for()
        page.locator('nav[data-state="ready"]').first.wait_for(state="attached")
        page.wait_for_timeout(200)  # a page without a selection opens its list by itself once loaded
        if not page.locator("aside.list-pane").is_visible():
            page.get_by_test_id("list-toggle").click()
        page.locator("aside.list-pane").wait_for()


def test_security_headers_on_the_app(web_server: WebServer) -> None:
    for path in ("/", "/chats/some-chat", "/notes"):
        r = httpx.get(web_server.url + path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert (
            "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        )
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    asset = re.search(r'src="(/assets/[^"]+\.js)"', httpx.get(web_server.url + "/").text)
    assert asset
    r = httpx.get(web_server.url + asset.group(1))
    assert r.headers["x-content-type-options"] == "nosniff" and "javascript" in r.headers["content-type"]


def seeded_chat(server: WebServer, token: str) -> dict[str, Any]:
    """A chat whose stored answer carries markdown, a table, code, and hostile links in the text, sources and files."""
    answer = "\n".join(
        [
            "## Plan",
            "Use **bold** and *emphasis*, then see [the docs](https://example.com/docs) or "
            "[mail us](mailto:team@example.com).",
            "",
            'Do not [click me](javascript:alert(1)) nor <a href="javascript:alert(2)">this</a> '
            '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>',
            "",
            "| step | who |",
            "|---|---|",
            "| build | Ada |",
            "",
            "```python",
            "def greet(name: str) -> str:",
            '    return f"hello {name}"  # friendly',
            "```",
        ]
    )
    history = {
        "currentId": "a1",
        "messages": {
            "u1": {"id": "u1", "parentId": None, "childrenIds": ["a1"], "role": "user", "content": "Plan?"},
            "a1": {
                "id": "a1",
                "parentId": "u1",
                "childrenIds": [],
                "role": "assistant",
                "content": answer,
                "done": True,
                "model": "demo",
                "sources": [
                    {"source": {"name": "evil source", "url": "javascript:alert(3)"}},
                    {"source": {"name": "data source", "url": "data:text/html,<script>alert(4)</script>"}},
                    {"source": {"name": "good source", "url": "https://example.com/source"}},
                ],
                "files": [
                    {"name": "evil.txt", "url": "javascript:alert(5)"},
                    {"name": "report.pdf", "url": "https://example.com/report.pdf"},
                ],
            },
        },
    }
    with server.api(token) as c:
        r = c.post("/api/v1/chats/new", json={"chat": {"title": "Markdown", "history": history}})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


def test_markdown_renders_and_only_safe_links_become_links(
    person: Any, web_server: WebServer, size: str
) -> None:
    user = web_server.signup("Mara")
    chat = seeded_chat(web_server, user["token"])
    page = person(user)
    page.goto(f"/chats/{chat['id']}")
    answer = page.get_by_test_id("answer")
    answer.locator("h2", has_text="Plan").wait_for()
    assert answer.locator("strong", has_text="bold").count() == 1
    assert answer.locator("table th", has_text="step").count() == 1
    assert answer.locator("pre code.language-python .hljs-keyword", has_text="def").count() == 1
    assert answer.get_by_role("link", name="the docs").get_attribute("href") == "https://example.com/docs"
    assert answer.get_by_role("link", name="mail us").get_attribute("href") == "mailto:team@example.com"
    # The hostile ones: their text stays, no link, nothing ran.
    answer.get_by_text("click me").wait_for()
    assert answer.get_by_role("link", name="click me").count() == 0
    assert page.get_by_role("link", name="evil source").count() == 0
    page.get_by_text("evil source").wait_for()
    assert page.get_by_role("link", name="data source").count() == 0
    assert page.get_by_role("link", name="evil.txt").count() == 0
    page.get_by_text("evil.txt").wait_for()
    assert page.get_by_role("link", name="good source").get_attribute("href") == "https://example.com/source"
    assert (
        page.get_by_role("link", name="report.pdf").get_attribute("href") == "https://example.com/report.pdf"
    )
    assert page.evaluate(UNSAFE_LINKS) == []
    assert page.evaluate("() => window.__xss") is None
    assert answer.locator("img, script").count() == 0
    check_page(page, f"chat with markdown ({size})")
    shot(page, f"markdown-{size}")

    # A channel message: markdown too, and the same rule for links.
    with web_server.api(user["token"]) as c:
        channel = c.post(
            "/api/v1/channels/create", json={"name": f"md-{uuid.uuid4().hex[:4]}", "type": "group"}
        ).json()
        c.post(
            f"/api/v1/channels/{channel['id']}/messages/post",
            json={"content": "ship **today**\n[tap](javascript:alert(6)) [site](https://example.com)"},
        ).raise_for_status()
    page.goto(f"/channels/{channel['id']}")
    content = page.get_by_test_id("message-content").first
    content.locator("strong", has_text="today").wait_for()
    assert content.get_by_role("link", name="tap").count() == 0
    assert content.get_by_role("link", name="site").get_attribute("href") == "https://example.com"
    assert page.evaluate(UNSAFE_LINKS) == []
    check_page(page, f"channel with markdown ({size})")


CODE_ANSWER = (
    "Here is a small **Python** helper, then a shell line to run it:\n\n"
    "```python\n"
    "import json\n\n"
    "def load(path: str) -> dict:\n"
    '    """Read a JSON file."""\n'
    "    with open(path) as f:\n"
    "        return json.load(f)  # parsed\n"
    "```\n\n"
    "```bash\n"
    "python -c 'import app; print(app.load(\"conf.json\"))'\n"
    "```\n\n"
    "| option | default |\n|---|---|\n| `path` | `conf.json` |\n\n"
    "1. Save it as `app.py`\n2. Run the line above\n"
)


class CodeUpstream:
    """An OpenAI-compatible server on loopback (real HTTP, real SSE) whose one model streams CODE_ANSWER slowly."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading
        import time

        answer = CODE_ANSWER

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "coder", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                pieces = [*re.findall(r"\s*\S+", answer, flags=re.S), "\n"]
                for piece in pieces:
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.03)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def coder_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A second chatwire process whose model server is CodeUpstream."""
    from tests.e2e.web.conftest import _admin, launch_server

    upstream = CodeUpstream()
    try:
        env = {"CHATWIRE_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1"}
        with launch_server(tmp_path_factory.mktemp("web-coder"), env) as url:
            yield WebServer(url=url, admin=_admin(url))
    finally:
        upstream.close()


def test_streamed_answer_with_code_renders_without_jumps(
    browser: Any, coder_server: WebServer, size: str
) -> None:
    user = coder_server.signup("Cody")
    context = new_sized_context(browser, coder_server.url, size)
    try:
        page = context.new_page()
        sign_in_as(page, user)
        page.get_by_test_id("model").select_option("coder")
        page.get_by_test_id("prompt").fill("Show me how to read a JSON file")
        page.get_by_test_id("send").click()
        answer = page.get_by_test_id("answer").last
        answer.wait_for()
        # Watch the answer while it streams: the rendered container stays the same element, and the message box
        # only ever grows (no flicker back to empty, no jump up).
        page.evaluate(
            """() => {
                const box = [...document.querySelectorAll('[data-testid=assistant-message]')].pop();
                const md = box.querySelector('[data-testid=answer]');
                window.__watch = { md, heights: [], shrank: 0, swapped: 0, frames: 0 };
                const tick = () => {
                    const w = window.__watch;
                    const now = [...document.querySelectorAll('[data-testid=assistant-message]')].pop();
                    if (!now || now.querySelector('[data-testid=answer]') !== w.md) w.swapped++;
                    const h = now ? now.getBoundingClientRect().height : 0;
                    if (w.heights.length && h < w.heights[w.heights.length - 1] - 0.5) w.shrank++;
                    w.heights.push(h);
                    w.frames++;
                    if (!now || now.dataset.done !== 'true') requestAnimationFrame(tick);
                };
                requestAnimationFrame(tick);
            }"""
        )
        page.locator("[data-testid=answer] pre code.language-python").wait_for()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=answer] pre')?.textContent.includes('open(path)')"
        )
        shot(page, f"chat-code-streaming-{size}")
        page.locator('[data-testid="assistant-message"][data-done="true"]').wait_for(timeout=60_000)
        watch = page.evaluate(
            "() => ({ shrank: window.__watch.shrank, swapped: window.__watch.swapped, frames: window.__watch.frames })"
        )
        assert watch["frames"] > 10
        assert watch["swapped"] == 0 and watch["shrank"] == 0, watch
        assert answer.locator("pre code.language-python .hljs-keyword", has_text="def").count() == 1
        assert answer.locator("pre code.language-bash").count() == 1
        assert answer.locator("table td code", has_text="conf.json").count() == 1
        assert answer.locator("ol li").count() == 2
        page.get_by_test_id("answer").last.locator("pre").first.scroll_into_view_if_needed()
        shot(page, f"chat-code-{size}")
        check_page(page, f"streamed code answer ({size})")
    finally:
        context.close()


def pick_person(scope: Any, label: str, name: str) -> None:
    """Types a name into a user picker and chooses the match."""
    scope.get_by_role("combobox", name=label).fill(name)
    scope.get_by_role("option").filter(has_text=name).first.click()


def test_channel_with_members_presence_and_management(person: Any, web_server: WebServer, size: str) -> None:
    tag = uuid.uuid4().hex[:4]
    ann, ben, cal = (web_server.signup(f"{n}{tag}") for n in ("Ann", "Ben", "Cal"))
    a = person(ann)
    b = person(ben)
    a.goto("/channels")
    show_list(a, size)
    a.get_by_test_id("new-channel").click()
    dialog = a.get_by_role("dialog", name="New channel")
    dialog.get_by_label("Name").fill(f"crew-{tag}")
    # A non-admin's channel is for the people added to it.
    dialog.get_by_text("Only the people you add can see this channel.").wait_for()
    pick_person(dialog, "Members", ben["name"])
    dialog.get_by_role("list", name="Members to add").get_by_text(ben["name"]).wait_for()
    check_page(a, f"create channel dialog ({size})")
    dialog.get_by_role("button", name="Create").click()
    a.get_by_role("heading", name=f"#crew-{tag}", exact=True).wait_for()
    channel_id = a.url.rsplit("/", 1)[-1]

    # Ben was added: the channel is in his list without a reload.
    b.goto("/channels")
    show_list(b, size)
    b.get_by_test_id("channel-link").filter(has_text=f"crew-{tag}").click()
    b.get_by_role("heading", name=f"#crew-{tag}", exact=True).wait_for()

    # Ann's member list: both online, live.
    a.get_by_test_id("members-toggle").click()
    panel = a.get_by_test_id("members-panel")
    panel.locator(f'[data-testid=member][data-user-id="{ben["id"]}"][data-online="true"]').wait_for()
    panel.locator(f'[data-testid=member][data-user-id="{ann["id"]}"][data-online="true"]').wait_for()
    check_page(a, f"members panel ({size})")
    shot(a, f"channel-members-{size}")
    b.context.close()
    panel.locator(f'[data-testid=member][data-user-id="{ben["id"]}"][data-online="false"]').wait_for()

    # The creator adds Cal, then removes him (after confirming).
    pick_person(panel, "Add a member", cal["name"])
    cal_row = panel.locator(f'[data-testid=member][data-user-id="{cal["id"]}"]')
    cal_row.wait_for()
    with web_server.api(cal["token"]) as c:
        assert c.get(f"/api/v1/channels/{channel_id}").status_code == 200
    cal_row.get_by_role("button", name=f"Remove {cal['name']}").click()
    a.get_by_role("dialog", name=f"Remove {cal['name']}?").get_by_role("button", name="Remove").click()
    cal_row.wait_for(state="detached")
    with web_server.api(cal["token"]) as c:
        assert c.get(f"/api/v1/channels/{channel_id}").status_code == 403

    # A member who did not create the channel cannot manage its members.
    b2 = person(ben)
    b2.goto(f"/channels/{channel_id}")
    b2.get_by_test_id("members-toggle").click()
    b2.get_by_test_id("members-panel").get_by_test_id("member").first.wait_for()
    assert b2.get_by_test_id("remove-member").count() == 0
    assert b2.get_by_test_id("member-picker").count() == 0


def test_an_admin_chooses_who_sees_a_new_channel(person: Any, web_server: WebServer, size: str) -> None:
    tag = uuid.uuid4().hex[:4]
    dee = web_server.signup(f"Dee{tag}")
    admin = person(web_server.admin)
    other = person(dee)
    other.goto("/channels")
    show_list(other, size)
    for name, choice in ((f"open-{tag}", "privacy-public"), (f"quiet-{tag}", "privacy-private")):
        admin.goto("/channels")
        show_list(admin, size)
        admin.get_by_test_id("new-channel").click()
        dialog = admin.get_by_role("dialog", name="New channel")
        dialog.get_by_label("Name").fill(name)
        dialog.get_by_role("group", name="Who can see it").wait_for()
        dialog.get_by_test_id(choice).check()
        if choice == "privacy-private":
            check_page(admin, f"channel privacy choice ({size})")
        dialog.get_by_role("button", name="Create").click()
        admin.get_by_role("heading", name=f"#{name}", exact=True).wait_for()
    # "Everyone": in Dee's list at once, without a reload; "Members only" with nobody added: not there, even after
    # a reload, and refused if she guesses its address.
    other.get_by_test_id("channel-link").filter(has_text=f"open-{tag}").wait_for()
    other.reload()
    show_list(other, size)
    other.get_by_test_id("channel-link").filter(has_text=f"open-{tag}").wait_for()
    assert other.get_by_test_id("channel-link").filter(has_text=f"quiet-{tag}").count() == 0
    with web_server.api(web_server.admin["token"]) as c:
        listed = {ch["name"]: ch for ch in c.get("/api/v1/channels/").json()}
    assert listed[f"open-{tag}"]["is_private"] is False and listed[f"quiet-{tag}"]["is_private"] is True
    with web_server.api(dee["token"]) as c:
        assert c.get(f"/api/v1/channels/{listed[f'quiet-{tag}']['id']}").status_code == 403


def test_direct_messages(person: Any, web_server: WebServer, size: str) -> None:
    tag = uuid.uuid4().hex[:4]
    dee, eli = web_server.signup(f"Dee{tag}"), web_server.signup(f"Eli{tag}")
    d = person(dee)
    e = person(eli)
    d.goto("/channels")
    show_list(d, size)
    d.get_by_test_id("new-dm").click()
    dialog = d.get_by_role("dialog", name="New direct message")
    check_page(d, f"dm dialog ({size})")
    pick_person(dialog, "To", eli["name"])
    d.get_by_role("heading", name=eli["name"], exact=True).wait_for()
    d.get_by_test_id("channel-input").fill(f"hello **{eli['name']}**")
    d.get_by_test_id("channel-send").click()
    d.get_by_test_id("message-content").locator("strong", has_text=eli["name"]).wait_for()

    e.goto("/channels")
    show_list(e, size)
    e.get_by_test_id("dm-link").filter(has_text=dee["name"]).click()
    e.get_by_role("heading", name=dee["name"], exact=True).wait_for()
    e.get_by_test_id("message-content").locator("strong", has_text=eli["name"]).wait_for()
    e.get_by_test_id("channel-input").fill("hi back")
    e.get_by_test_id("channel-input").press("Enter")
    d.get_by_text("hi back").wait_for()
    check_page(e, f"dm ({size})")


def test_note_sharing_by_its_owner(person: Any, web_server: WebServer, size: str) -> None:
    tag = uuid.uuid4().hex[:4]
    fay, gus = web_server.signup(f"Fay{tag}"), web_server.signup(f"Gus{tag}")
    f = person(fay)
    f.goto("/notes")
    show_list(f, size)
    f.get_by_test_id("new-note").first.click()
    f.get_by_test_id("note-title").fill("Trip")
    f.get_by_test_id("note-title").press("Enter")
    f.locator('[data-testid="sync-state"][data-synced="true"]').wait_for()
    f.get_by_test_id("note-editor").click()
    f.keyboard.type("Pack the tent and the stove.", delay=5)
    note_id = f.url.rsplit("/", 1)[-1]
    # The list's preview shows the note's text (not "Empty note").
    show_list(f, size)
    f.get_by_test_id("note-link").filter(has_text="Trip").get_by_test_id("note-preview").filter(
        has_text="Pack the tent"
    ).wait_for()
    if size == "phone":
        f.get_by_role("button", name="Close the note list").click()

    f.get_by_test_id("share").click()
    panel = f.get_by_test_id("share-panel")
    pick_person(panel, "Add a person", gus["name"])
    row = panel.get_by_test_id("grant").filter(has_text=gus["name"])
    assert row.get_by_role("combobox", name=f"Access for {gus['name']}").input_value() == "read"
    check_page(f, f"share panel ({size})")
    shot(f, f"note-share-{size}")
    panel.get_by_role("button", name="Save").click()
    f.get_by_text("Sharing updated").wait_for()

    g = person(gus)
    g.goto(f"/notes/{note_id}")
    g.wait_for_function(
        "() => document.querySelector('[data-testid=note-editor]')?.textContent.includes('tent')"
    )
    assert g.get_by_test_id("note-editor").get_attribute("contenteditable") == "false"
    assert g.get_by_test_id("share").count() == 0

    # Write access, then revoke.
    f.get_by_test_id("share").click()
    row.get_by_role("combobox", name=f"Access for {gus['name']}").select_option("write")
    panel.get_by_role("button", name="Save").click()
    f.get_by_test_id("share-panel").wait_for(state="detached")
    with web_server.api(gus["token"]) as c:
        note = c.get(f"/api/v1/notes/{note_id}").json()
        assert gus["id"] in note["access_control"]["write"]["user_ids"]
    f.get_by_test_id("share").click()
    row.get_by_role("button", name=f"Remove access for {gus['name']}").click()
    panel.get_by_role("button", name="Save").click()
    f.get_by_test_id("share-panel").wait_for(state="detached")
    with web_server.api(gus["token"]) as c:
        assert c.get(f"/api/v1/notes/{note_id}").status_code in (403, 404)
    g.goto(f"/notes/{note_id}")
    g.get_by_test_id("note-error").wait_for()


def cut_connection(page: Any) -> None:
    """Drops the live connection, as a network drop would, and keeps the client away until `restore_connection`
    (however long the test's checks take on a loaded machine)."""
    page.evaluate(
        "() => { const m = window.chatwire.conn.socket.io; m.reconnection(false); m.engine.close(); }"
    )


def restore_connection(page: Any) -> None:
    """The network is back: the client reconnects as its own reconnection would."""
    page.evaluate(
        "() => { const c = window.chatwire.conn.socket; c.io.reconnection(true); c.io.reconnectionDelay(200);"
        " c.io.reconnectionDelayMax(1000); c.connect(); }"
    )


def test_loading_empty_and_error_are_different_screens(person: Any, web_server: WebServer, size: str) -> None:
    user = web_server.signup("Hal")
    page = person(user)
    for section, api, nav in (
        ("chats", re.compile(r"/api/v1/chats/$"), "chat-list"),
        ("channels", re.compile(r"/api/v1/channels/$"), "channel-list"),
        ("notes", re.compile(r"/api/v1/notes/$"), "note-list"),
    ):
        held: list[Any] = []
        page.route(api, lambda route, *_, held=held: held.append(route))
        page.goto(f"/{section}")
        if size == "phone":
            page.get_by_test_id("list-toggle").first.click()
        listing = page.get_by_test_id(nav)
        page.locator(f'[data-testid={nav}][data-state="loading"]').wait_for()
        assert listing.get_by_role("status").count() == 1
        assert "No " not in listing.inner_text()  # never "No chats yet" while the list is loading
        while not held:
            page.wait_for_timeout(50)
        held[0].fulfill(status=500, json={"detail": "boom", "code": "internal_error"})
        page.unroute(api)
        listing.get_by_role("alert").filter(has_text="Could not load").wait_for()
        check_layout(page, f"{section} error ({size})")
        listing.get_by_role("button", name="Retry").click()
        page.locator(f'[data-testid={nav}][data-state="ready"]').wait_for()
        with web_server.api(user["token"]) as c:
            # A shared server may hold public channels, which every account joins.
            joined = c.get("/api/v1/channels/").json() if section == "channels" else []
        if joined:
            listing.get_by_test_id("channel-link").first.wait_for()
        else:
            listing.get_by_text(re.compile("No chats yet|in no channel yet|No notes yet")).wait_for()
        check_page(page, f"{section} empty ({size})")


def test_offline_sending_waits_for_the_connection(person: Any, web_server: WebServer, size: str) -> None:
    ivy = web_server.signup("Ivy")
    with web_server.api(ivy["token"]) as c:
        channel = c.post(
            "/api/v1/channels/create", json={"name": f"field-{uuid.uuid4().hex[:4]}", "type": "group"}
        ).json()
    page = person(ivy)
    page.goto(f"/channels/{channel['id']}")
    page.get_by_role("heading", name=f"#{channel['name']}", exact=True).wait_for()
    cut_connection(page)
    page.get_by_test_id("offline-banner").wait_for()
    page.get_by_test_id("channel-input").fill("written in the tunnel")
    page.get_by_test_id("channel-send").click()
    page.get_by_test_id("queued").wait_for()
    check_page(page, f"offline channel ({size})")
    with web_server.api(ivy["token"]) as c:
        assert c.get(f"/api/v1/channels/{channel['id']}/messages").json() == []
    restore_connection(page)
    page.locator(CONNECTED).first.wait_for()
    page.get_by_test_id("queued").wait_for(state="detached")
    sent: list[str] = []
    with web_server.api(ivy["token"]) as c:
        for _ in range(100):  # the send that follows the reconnect is on its way
            sent = [m["content"] for m in c.get(f"/api/v1/channels/{channel['id']}/messages").json()]
            if sent:
                break
            page.wait_for_timeout(100)
    assert sent == ["written in the tunnel"]
    page.get_by_test_id("offline-banner").wait_for(state="detached")

    # A chat question asked while offline is kept, said so, and sent when the connection is back.
    page.goto("/chats")
    page.locator(CONNECTED).first.wait_for()
    page.get_by_test_id("model").select_option("demo")
    cut_connection(page)
    page.get_by_test_id("offline-banner").wait_for()
    page.get_by_test_id("prompt").fill("Are you there?")
    page.get_by_test_id("prompt").press("Enter")
    page.get_by_test_id("queued").filter(has_text="will be sent").wait_for()
    assert page.get_by_test_id("user-message").count() == 0
    restore_connection(page)
    page.locator(CONNECTED).first.wait_for()
    page.get_by_test_id("user-message").filter(has_text="Are you there?").wait_for()
    page.locator('[data-testid="assistant-message"][data-done="true"]').wait_for(timeout=60_000)


def test_toasts_never_cover_the_composer(person: Any, web_server: WebServer, size: str) -> None:
    page = person(web_server.signup("Jo"))
    page.goto("/chats")
    page.locator(CONNECTED).first.wait_for()
    page.evaluate(
        "() => window.chatwire.toast('A long message that the server sent about something', 'error')"
    )
    toast = page.get_by_role("status").filter(has_text="A long message")
    toast.wait_for()
    t = toast.bounding_box()
    for target in ("prompt", "send"):
        c = page.get_by_test_id(target).bounding_box()
        overlap = not (
            t["x"] + t["width"] <= c["x"]
            or c["x"] + c["width"] <= t["x"]
            or t["y"] + t["height"] <= c["y"]
            or c["y"] + c["height"] <= t["y"]
        )
        assert not overlap, (target, t, c)


def test_account_menu_and_keyboard(person: Any, web_server: WebServer, size: str) -> None:
    kit = web_server.signup("Kit")
    page = person(kit)
    page.goto("/notes")
    page.locator(CONNECTED).first.wait_for()
    # The account menu opens from the keyboard, Escape closes it and gives focus back.
    menu_button = page.get_by_role("button", name=f"Account menu for {kit['name']}")
    menu_button.focus()
    page.keyboard.press("Enter")
    item = page.get_by_role("menuitem", name="Sign out…")
    item.wait_for()
    assert page.evaluate("() => document.activeElement.getAttribute('role')") == "menuitem"
    check_page(page, f"account menu ({size})")
    page.keyboard.press("Escape")
    item.wait_for(state="detached")
    assert page.evaluate("() => document.activeElement.dataset.testid") == "account-menu"
    # Focus is visible.
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    # Tab reaches the pages and the composer; Enter sends.
    page.goto("/chats")
    page.locator(CONNECTED).first.wait_for()
    page.get_by_test_id("model").select_option("demo")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "prompt":
            break
    else:
        raise AssertionError("Tab never reached the message box")
    page.keyboard.type("Hello from the keyboard")
    page.keyboard.press("Enter")
    page.get_by_test_id("user-message").filter(has_text="Hello from the keyboard").wait_for()
    # Signing out asks; Escape cancels.
    menu_button.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # the focused "Sign out…" item
    page.get_by_role("dialog", name="Sign out?").wait_for()
    check_page(page, f"sign-out dialog ({size})")
    page.keyboard.press("Escape")
    page.get_by_role("dialog", name="Sign out?").wait_for(state="hidden")
    assert page.evaluate("() => localStorage.getItem('chatwire.session')") is not None


def test_chats_can_be_renamed_and_deleted(person: Any, web_server: WebServer, size: str) -> None:
    user = web_server.signup("Lou")
    with web_server.api(user["token"]) as c:
        chat = c.post("/api/v1/chats/new", json={"chat": {"title": "Old title"}}).json()
    page = person(user)
    page.goto(f"/chats/{chat['id']}")
    show_list(page, size)
    row = page.get_by_test_id("chat-list")
    row.get_by_role("button", name="Options for Old title").click()
    page.get_by_role("menuitem", name="Rename").click()
    page.get_by_test_id("rename-input").fill("Trip planning")
    page.get_by_test_id("rename-input").press("Enter")
    row.get_by_test_id("chat-link").filter(has_text="Trip planning").wait_for()
    with web_server.api(user["token"]) as c:
        assert c.get(f"/api/v1/chats/{chat['id']}").json()["title"] == "Trip planning"
    row.get_by_role("button", name="Options for Trip planning").click()
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("dialog", name="Delete this chat?").get_by_role("button", name="Delete").click()
    row.get_by_test_id("chat-link").filter(has_text="Trip planning").wait_for(state="detached")
    with web_server.api(user["token"]) as c:
        assert c.get(f"/api/v1/chats/{chat['id']}").status_code == 404


def test_every_page_fits_and_passes_axe(person: Any, web_server: WebServer, size: str) -> None:
    page = person()
    page.goto("/")
    page.get_by_role("button", name="Sign in").wait_for()
    check_page(page, f"sign in ({size})")
    shot(page, f"signin-{size}")
    page.get_by_role("button", name="Create an account").click()
    check_page(page, f"sign up ({size})")
    user = web_server.signup("Max")
    sign_in_as(page, user)
    for path, ready in (
        ("/chats", "[data-testid=prompt]"),
        ("/channels", "[data-testid=channel-list][data-state=ready]"),
        ("/notes", "[data-testid=note-list][data-state=ready]"),
    ):
        page.goto(path)
        page.locator(ready).first.wait_for(state="attached")
        page.locator(CONNECTED).first.wait_for()
        check_page(page, f"{path} ({size})")
        if size == "phone":
            # Navigation is reachable: the bottom bar's links and the account menu are on screen.
            for name in ("Chats", "Channels", "Notes"):
                page.get_by_role("link", name=name, exact=True).first.wait_for()
