"""Shared fixtures: settings in a temp dir, databases (SQLite and real PostgreSQL), an in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from chatwire.app import create_app
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.transport.server import ws_protocol_for

POSTGRES_URL = os.environ.get(
    "CHATWIRE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CHATWIRE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("CHATWIRE_TEST_REQUIRE_SERVICES") == "1"


def requirement_missing(message: str) -> None:
    """A missing tool (Node.js, a browser, an npm package) is a skip locally and a failure in CI."""
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def service_unavailable(what: str, exc: BaseException) -> None:
    """Fail in CI (services are required there), skip on a developer machine without them."""
    message = f"{what} unavailable: {exc!r}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret="test-secret-" + uuid.uuid4().hex,
        log_format="text",
        _env_file=None,  # type: ignore[call-arg]
    )


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"chatwire_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(base, timeout=5)
    except Exception as exc:
        service_unavailable("PostgreSQL", exc)
        raise
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await database.migrate()
        yield database
        await database.close()
        return
    async with postgres_database() as url:
        database = Database(url)
        await database.migrate()
        yield database
        await database.close()


@dataclass
class RunningServer:
    """A chatwire server running in this event loop on a free loopback port."""

    url: str
    settings: Settings
    app: Any

    @property
    def services(self) -> Any:
        return self.app.state.services

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def signup(
        self, name: str, email: str | None = None, password: str = "pw-" + "x" * 8
    ) -> dict[str, Any]:
        async with self.http() as client:
            r = await client.post(
                "/api/v1/auths/signup",
                json={
                    "name": name,
                    "email": email or f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com",
                    "password": password,
                },
            )
            r.raise_for_status()
            return r.json()  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def run_server(settings: Settings) -> AsyncIterator[RunningServer]:
    port = free_port()
    settings = settings.model_copy(update={"port": port})
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ws=ws_protocol_for(settings),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield RunningServer(url=f"http://127.0.0.1:{port}", settings=settings, app=app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings) as running:
        yield running


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """In CI every test must run: a skipped test is reported and fails the run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if REQUIRE_SERVICES and skipped:
        terminalreporter.write_line(f"CI: {len(skipped)} test(s) skipped; every test must run here", red=True)
        for report in skipped:
            terminalreporter.write_line(f"  skipped: {report.nodeid}")
        terminalreporter._session.exitstatus = 1


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """The URL of a private three-node Redis Cluster on loopback, started once per test session."""
    from tests.redistopo import ClusterSet

    cluster = ClusterSet()
    try:
        yield cluster.start().url
    finally:
        cluster.stop()
