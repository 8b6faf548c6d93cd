"""Open WebUI's own frontend against chatwire: the pinned wheel from PyPI, a chatwire process, the proxy, Chromium.

The wheel is downloaded once (`pip download --no-deps open-webui==<pinned>`, about 100 MB) into a cache directory
(`CHATWIRE_OWUI_CACHE`, default `.venv/owui-cache`) and only its `open_webui/frontend/` and `open_webui/static/` are extracted (source maps
left out). `CHATWIRE_OWUI_VERSION` checks another version (see docs/OPENWEBUI.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.owui.proxy import OWUI_VERSION, OwuiProxy
from tests.health import wait_healthy_sync

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("CHATWIRE_OWUI_CACHE", ROOT / ".venv" / "owui-cache"))
CHROMIUM = Path(os.environ.get("CHATWIRE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic"]
PASSWORD = "correct horse battery"
ARTIFACTS = ROOT / "tests" / "artifacts" / "owui"


def _missing(reason: str) -> None:
    """Missing prerequisites skip locally and fail in CI (CHATWIRE_TEST_REQUIRE_SERVICES=1)."""
    if os.environ.get("CHATWIRE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def frontend_dir(version: str = OWUI_VERSION) -> Path:
    """Open WebUI's compiled frontend of `version` (with its `static/` beside it: loader script, favicons),
    downloaded from PyPI and extracted on first use."""
    target = CACHE / f"frontend-{version}"
    if (target / ".complete").exists():
        return target / "open_webui" / "frontend"
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / f"open_webui-{version}-py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                f"open-webui=={version}",
                "-d",
                str(CACHE),
            ],
            check=True,
            timeout=900,
        )
    with zipfile.ZipFile(wheel) as zf:
        names = [
            n
            for n in zf.namelist()
            if n.startswith(("open_webui/frontend/", "open_webui/static/")) and not n.endswith(".map")
        ]
        zf.extractall(target, names)
    (target / ".complete").touch()
    return target / "open_webui" / "frontend"


@dataclass
class Deployment:
    """chatwire behind the proxy; `url` is what the browser opens, `api()` talks to chatwire directly."""

    url: str
    chatwire: str
    proxy: OwuiProxy
    admin: dict[str, Any]
    log: Path

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.chatwire, headers=headers, timeout=10)

    def add_user(self, name: str) -> dict[str, Any]:
        """A plain user created by the admin, with its password (the frontend signs in with it)."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        with self.api(self.admin["token"]) as c:
            r = c.post(
                "/api/v1/auths/add", json={"name": name, "email": email, "password": PASSWORD, "role": "user"}
            )
            r.raise_for_status()
            return {**r.json(), "password": PASSWORD}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One chatwire process (SQLite, demo model at a slow token rate so a test can act mid-answer) behind the proxy."""
    try:
        frontend = frontend_dir()
    except (subprocess.SubprocessError, OSError) as exc:
        _missing(f"could not fetch open-webui=={OWUI_VERSION} from PyPI: {exc}")
    port = free_port()
    data = tmp_path_factory.mktemp("owui-e2e")
    env = {
        **os.environ,
        "CHATWIRE_HOST": "127.0.0.1",
        "CHATWIRE_PORT": str(port),
        "CHATWIRE_DATA_DIR": str(data),
        "CHATWIRE_DATABASE_URL": "",
        "CHATWIRE_REDIS_URL": "",
        "CHATWIRE_JWT_SECRET": "owui-e2e-" + uuid.uuid4().hex,
        "CHATWIRE_WEB_DIR": "",
        "CHATWIRE_LOG_LEVEL": "WARNING",
        "CHATWIRE_DEMO_TOKENS_PER_SECOND": "20",
    }
    log = data / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from chatwire.cli import main; main()", "serve"],
            env=env,
            cwd=data,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    proxy: OwuiProxy | None = None
    try:
        wait_healthy_sync(url, proc.poll, log=log.read_text)
        with httpx.Client(base_url=url, timeout=10) as c:
            body = {"name": "Ada Admin", "email": "admin@example.com", "password": PASSWORD}
            r = c.post("/api/v1/auths/signup", json=body)
            r.raise_for_status()
            admin = {**r.json(), "password": PASSWORD}
        proxy = OwuiProxy(frontend, url).start()
        yield Deployment(url=proxy.url, chatwire=url, proxy=proxy, admin=admin, log=log)
    finally:
        if proxy is not None:
            proxy.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for the module (Playwright's sync API; closed before other modules' async tests run)."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
