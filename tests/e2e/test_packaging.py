"""The package as an operator gets it: `pip wheel .` carries the built web client; installed into a fresh
virtualenv from the lock file (runtime dependencies only), `chatwire serve` answers / with the app's HTML. An
sdist carries the build too, so a wheel built from it needs no Node.js."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploytools import REPO, UV, clean_env, running, runtime_venv

pytestmark = pytest.mark.e2e

WEB_INDEX = REPO / "web" / "dist" / "index.html"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        cwd=REPO,
    )
    (built,) = out.glob("chatwire-*.whl")
    return built


def test_wheel_carries_the_web_client(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "chatwire/static/index.html" in names
    assets = [n for n in names if n.startswith("chatwire/static/assets/")]
    assert any(n.endswith(".js") for n in assets) and any(n.endswith(".css") for n in assets), assets
    assert "chatwire/static/.stamp" not in names
    assert "chatwire/db/migrations/env.py" in names and any("versions/0001" in n for n in names)
    # The index the wheel serves is the one `make web` built from these sources.
    packaged = zipfile.ZipFile(wheel).read("chatwire/static/index.html").decode()
    assert packaged == WEB_INDEX.read_text()


def test_installed_wheel_serves_the_web_client(wheel: Path, tmp_path: Path) -> None:
    bin_dir = runtime_venv(tmp_path / "venv", str(wheel))
    # Runtime only: no test tool in the virtualenv `make run` would build.
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", "import pytest"], capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0 and "No module named 'pytest'" in probe.stderr
    site = subprocess.run(
        [str(bin_dir / "python"), "-c", "import chatwire, os; print(os.path.dirname(chatwire.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert site.startswith(str(tmp_path / "venv")), site  # the installed copy, not the checkout
    port = free_port()
    env = clean_env(
        CHATWIRE_PORT=str(port), CHATWIRE_DATA_DIR=str(tmp_path / "data"), CHATWIRE_LOG_FORMAT="text"
    )
    url = f"http://127.0.0.1:{port}"
    with running(
        [str(bin_dir / "chatwire"), "serve"],
        env=env,
        cwd=tmp_path,
        log=tmp_path / "serve.log",
        health_url=f"{url}/health",
    ):
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text == (Path(site) / "static" / "index.html").read_text()
        assert '<div id="app"' in page.text or 'id="app"' in page.text, page.text[:500]
        script = next(
            part.split('"')[0] for part in page.text.split('src="')[1:] if part.startswith("/assets/")
        )
        asset = httpx.get(f"{url}{script}", timeout=10)
        assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
        # A page path of the single-page app gets the app too; an API path does not.
        assert httpx.get(f"{url}/channels/abc", timeout=10).text == page.text
        assert httpx.get(f"{url}/api/v1/nope", timeout=10).status_code == 404


def test_sdist_carries_the_build_and_its_wheel_needs_no_node(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [str(UV), "build", "-q", "--python", sys.executable, "--sdist", "-o", str(out), str(REPO)],
        check=True,
        cwd=REPO,
    )
    (sdist,) = out.glob("chatwire-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("chatwire/static/index.html") for n in names)
    assert not any("/web/" in n or "node_modules" in n for n in names)
    # Without npm on PATH: only the Python build tools are needed.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "npm").exists())
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{path}")
    subprocess.run(
        [str(UV), "build", "-q", "--python", sys.executable, "--wheel", "-o", str(out), str(sdist)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (built,) = out.glob("chatwire-*.whl")
    assert "chatwire/static/index.html" in zipfile.ZipFile(built).namelist()
