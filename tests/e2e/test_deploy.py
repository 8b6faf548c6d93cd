"""deploy/build.sh (the container recipe's one build step) builds a working installation: run into a temporary
prefix, the result migrates, passes `chatwire check`, serves the web client and answers the API. The systemd
unit and the Containerfile name that script and those commands, so what they run is what this test ran."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploytools import REPO, clean_env, running

pytestmark = pytest.mark.e2e

DEPLOY = REPO / "deploy"


def test_build_script_installs_a_server_that_runs(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "chatwire"
    built = subprocess.run(
        ["bash", str(DEPLOY / "build.sh"), str(prefix)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        env=clean_env(),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"installed in {prefix}" in built.stdout
    chatwire = prefix / "bin" / "chatwire"
    installed = subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pytest" not in installed and "playwright" not in installed  # runtime only
    lock = (REPO / "requirements.lock").read_text()
    for line in installed.splitlines():  # every installed dependency is the locked version
        name, _, version = line.partition("==")
        if name.lower() not in ("chatwire", "pip", "setuptools"):
            assert re.search(
                rf"^{re.escape(name.lower()).replace('_', '[-_]')}=={re.escape(version)}\b", lock, re.M | re.I
            ), line

    data = tmp_path / "var" / "lib" / "chatwire"
    data.mkdir(parents=True)
    port = free_port()
    env = clean_env(CHATWIRE_PORT=str(port), CHATWIRE_DATA_DIR=str(data), CHATWIRE_LOG_FORMAT="text")
    # What the systemd unit runs: migrate, then serve without migrating.
    migrated = subprocess.run(
        [str(chatwire), "migrate"], env=env, cwd=data, capture_output=True, text=True, check=False
    )
    assert migrated.returncode == 0 and "migrated" in migrated.stdout, migrated.stderr
    checked = subprocess.run(
        [str(chatwire), "check"], env=env, cwd=data, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and checked.stdout.strip().endswith("ok"), checked.stderr
    url = f"http://127.0.0.1:{port}"
    with running(
        [str(chatwire), "serve", "--no-migrate"],
        env=env,
        cwd=data,
        log=tmp_path / "serve.log",
        health_url=f"{url}/health",
    ):
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and '<div id="app">' in page.text
        assert httpx.get(f"{url}/health/ready", timeout=10).status_code == 200
        signup = httpx.post(
            f"{url}/api/v1/auths/signup",
            json={"name": "Ada", "email": "ada@example.com", "password": "pw-12345678"},
            timeout=10,
        )
        assert signup.status_code == 200 and signup.json()["role"] == "admin"


def test_nginx_timeouts_outlast_the_engineio_ping() -> None:
    """nginx must not close a healthy websocket or a held long-poll: its read and send timeouts in the Socket.IO
    location exceed ping interval + ping timeout (the longest a healthy connection stays silent)."""
    from chatwire.config import Settings

    conf = (DEPLOY / "nginx.conf").read_text()
    location = conf.split("location /ws/socket.io/ {", 1)[1].split("}", 1)[0]
    fields = Settings.model_fields
    silent = fields["ping_interval"].default + fields["ping_timeout"].default
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = int(re.search(rf"{directive} (\d+)s;", location).group(1))  # type: ignore[union-attr]
        assert seconds > silent, (directive, seconds, silent)
    for needed in (
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_buffering off;",
        "X-Forwarded-For $remote_addr",
    ):
        assert needed in location, needed


def test_unit_and_container_run_the_tested_commands() -> None:
    unit = (DEPLOY / "chatwire.service").read_text()
    assert "ExecStartPre=/opt/chatwire/bin/chatwire migrate" in unit
    assert "ExecStart=/opt/chatwire/bin/chatwire serve --no-migrate" in unit
    assert re.search(r"^LimitNOFILE=\d{5,}$", unit, re.M) and "KillSignal=SIGTERM" in unit
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    from chatwire.config import Settings

    # systemd must wait longer than chatwire's own graceful shutdown.
    assert stop > Settings.model_fields["shutdown_timeout_seconds"].default
    recipe = (DEPLOY / "Containerfile").read_text()
    runs = [line for line in recipe.splitlines() if line.startswith("RUN ")]
    assert [r for r in runs if "build.sh" in r] == ["RUN /src/deploy/build.sh /opt/chatwire"]
    assert not any("pip" in r or "npm" in r for r in runs), "build steps belong in build.sh"
