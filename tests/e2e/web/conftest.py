"""Browser tests of the web client: a real chatwire process serving web/dist, driven through Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.health import wait_healthy_sync

ROOT = Path(__file__).resolve().parents[3]
WEB_DIST = ROOT / "web" / "dist"
# The browser tests take the README's screenshots. They land in docs/screenshots/ when
# CHATWIRE_UPDATE_SCREENSHOTS=1 (to refresh the committed ones), else in tests/artifacts/ so a test run leaves the
# work tree clean.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("CHATWIRE_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "tests" / "artifacts" / "screenshots"
)
CHROMIUM = Path(os.environ.get("CHATWIRE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"


def _missing(reason: str) -> None:
    """A missing browser or build is a skip locally, a failure in CI (CHATWIRE_TEST_REQUIRE_SERVICES=1)."""
    if os.environ.get("CHATWIRE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class WebServer:
    """A running chatwire process; `api()` is a REST client, `signup()` makes a user."""

    url: str
    admin: dict[str, Any]
    log: Path | None = None

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def signup(self, name: str) -> dict[str, Any]:
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        with self.api() as c:
            r = c.post("/api/v1/auths/signup", json={"name": name, "email": email, "password": PASSWORD})
            r.raise_for_status()
            return r.json()  # type: ignore[no-any-return]


def _admin(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=10) as c:
        body = {"name": "Ada Admin", "email": "admin@example.com", "password": PASSWORD}
        r = c.post("/api/v1/auths/signup", json=body)
        if r.status_code >= 400:  # an existing server (CHATWIRE_WEB_E2E_URL) that has it already
            r = c.post("/api/v1/auths/signin", json={"email": body["email"], "password": PASSWORD})
        r.raise_for_status()
        admin: dict[str, Any] = r.json()
    assert admin["role"] == "admin", "admin@example.com must be the first user of the server"
    return admin


@contextlib.contextmanager
def launch_server(data: Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A `chatwire serve` process on a free port serving web/dist, with its data in `data`; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "CHATWIRE_HOST": "127.0.0.1",
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(data),
        "CHATWIRE_DATABASE_URL": "",
        "CHATWIRE_REDIS_URL": "",
        "CHATWIRE_JWT_SECRET": "web-e2e-" + uuid.uuid4().hex,
        "CHATWIRE_WEB_DIR": str(WEB_DIST),
        "CHATWIRE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from chatwire.cli import main; main()", "serve"],
        env=env,
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy_sync(url, proc.poll, log=(data / "server.log").read_text)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A chatwire process on a free port serving web/dist; CHATWIRE_WEB_E2E_URL targets a running server instead."""
    external = os.environ.get("CHATWIRE_WEB_E2E_URL")
    if external:
        yield WebServer(url=external.rstrip("/"), admin=_admin(external))
        return
    if not (WEB_DIST / "index.html").exists():
        _missing("web/dist is not built: run `make web`")
    data = tmp_path_factory.mktemp("web-e2e")
    with launch_server(data) as url:
        yield WebServer(url=url, admin=_admin(url), log=data / "server.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: Playwright's sync API runs an event loop in this thread while it is open, so it
    must be closed before the async tests of other modules run."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e .[test])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the test, so that a fixture can tell in its teardown that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def new_page(browser: Any, web_server: WebServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Opens a page in a fresh browser context (a separate person, or a separate tab with `context=`).

    When the test fails, each page's console, page errors, the start of its socket.io frames and what it shows
    are printed with the tail of the server's log, so that a failure seen once in CI can be understood from its
    output."""
    contexts: list[Any] = []
    journals: list[tuple[Any, list[str]]] = []

    def make(context: Any = None) -> Any:
        if context is None:
            context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web_server.url)
            context.set_default_timeout(15_000)
            contexts.append(context)
        page = context.new_page()
        journal: list[str] = []
        journals.append((page, journal))
        page.on("console", lambda m: journal.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: journal.append(f"page error: {e}"))
        page.on("websocket", lambda ws: _watch_socket(ws, journal))
        return page

    yield make
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for i, (page, journal) in enumerate(journals):
            url = "(closed)" if page.is_closed() else page.url
            print(f"--- page {i} at {url}: {len(journal)} entries", file=sys.stderr)
            if not page.is_closed():
                with contextlib.suppress(Exception):
                    text = " ".join(page.inner_text("body", timeout=2000).split())
                    print(f"  shows: {text[:400]}", file=sys.stderr)
            for line in journal[-80:]:
                print("  " + line, file=sys.stderr)
        if web_server.log is not None and web_server.log.exists():
            print("--- server log (tail)", file=sys.stderr)
            print("\n".join(web_server.log.read_text(errors="replace").splitlines()[-60:]), file=sys.stderr)
    for c in contexts:
        c.close()


def _watch_socket(ws: Any, journal: list[str]) -> None:
    """Notes the first bytes of each socket.io frame the page sends or receives (not engine.io pings)."""

    def note(direction: str, payload: Any) -> None:
        text = payload if isinstance(payload, str) else "<binary>"
        if text in ("2", "3"):
            return  # engine.io ping/pong
        journal.append(f"ws {direction} {text[:120]}")

    ws.on("framesent", lambda p: note("->", p))
    ws.on("framereceived", lambda p: note("<-", p))
    ws.on("close", lambda _ws: journal.append("ws closed"))


def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    """Signs in through the UI and waits for the app shell and a live connection."""
    page.goto("/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-testid="connection"][data-state="connected"]').wait_for()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
