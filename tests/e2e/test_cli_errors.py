"""Every bad setting and CLI misuse an operator can make ends in exactly one line on stderr, naming the variable
and the bad value, with exit status 2: no traceback, and never a server that says "ready" and then fails.
Each case runs the real `python -m chatwire` in a subprocess, in an empty folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, free_port, postgres_database
from tests.deploytools import clean_env
from tests.process import serve_process

pytestmark = pytest.mark.e2e


def chatwire(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatwire", *args],
        cwd=cwd,
        env=clean_env(**{"CHATWIRE_LOG_FORMAT": "text", **env}),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Assert exit status 2 and exactly one stderr line `chatwire: error: ...` containing every `expected`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("chatwire: error: "), line
    assert "Traceback" not in result.stderr and "ready" not in result.stdout + result.stderr
    for part in expected:
        assert part in line, (part, line)
    return line


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CHATWIRE_PORT", "abc", ["CHATWIRE_PORT='abc'", "integer"]),
        ("CHATWIRE_PORT", "70000", ["CHATWIRE_PORT='70000'", "65535"]),
        ("CHATWIRE_TRANSPORTS", "pigeon", ["CHATWIRE_TRANSPORTS", "pigeon", "websocket"]),
        ("CHATWIRE_LOG_FORMAT", "xml", ["CHATWIRE_LOG_FORMAT='xml'"]),
        ("CHATWIRE_PING_INTERVAL", "-1", ["CHATWIRE_PING_INTERVAL='-1'", "greater than 0"]),
        (
            "CHATWIRE_DATABASE_URL",
            "mysql://db/chat",
            ["CHATWIRE_DATABASE_URL='mysql://db/chat'", "postgresql"],
        ),
        ("CHATWIRE_DATABASE_URL", "postgresql+psycopg2://h/db", ["CHATWIRE_DATABASE_URL=", "psycopg2"]),
        ("CHATWIRE_DATABASE_URL", "chat.db", ["CHATWIRE_DATABASE_URL='chat.db'", "not a URL"]),
        ("CHATWIRE_REDIS_URL", "localhost:6379", ["CHATWIRE_REDIS_URL='localhost:6379'", "redis://"]),
        ("CHATWIRE_WEB_DIR", "/nonexistent/web", ["CHATWIRE_WEB_DIR='/nonexistent/web'", "index.html"]),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable_and_value(
    tmp_path: Path, variable: str, value: str, expected: list[str]
) -> None:
    one_line_error(chatwire(tmp_path, "serve", **{variable: value}), *expected)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", [["check"], ["migrate"], ["keys", "list"], ["serve", "--no-migrate"]])
def test_every_command_reports_bad_settings_the_same_way(tmp_path: Path, command: list[str]) -> None:
    one_line_error(chatwire(tmp_path, *command, CHATWIRE_PORT="abc"), "CHATWIRE_PORT='abc'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--port", "abc"], ["'--port'", "integer", "chatwire serve --help"]),
        (["serve", "--bogus"], ["--bogus"]),
        (["launch"], ["No such command 'launch'"]),
        (["tail"], ["--token"]),
        (["keys", "create"], ["--scope"]),
    ],
)
def test_cli_misuse_is_one_line(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    one_line_error(chatwire(tmp_path, *args), *expected)


def test_fleet_without_a_shared_jwt_secret_is_refused(tmp_path: Path) -> None:
    result = chatwire(tmp_path, "serve", CHATWIRE_REDIS_URL=REDIS_URL, CHATWIRE_DATABASE_URL=POSTGRES_URL)
    one_line_error(result, "CHATWIRE_JWT_SECRET", "fleet mode")


@pytest.mark.parametrize("database", ["", "sqlite+aiosqlite:///shared.db"])
def test_fleet_on_sqlite_is_refused(tmp_path: Path, database: str) -> None:
    env = {
        "CHATWIRE_REDIS_URL": REDIS_URL,
        "CHATWIRE_JWT_SECRET": "s" * 40,
        "CHATWIRE_DATABASE_URL": database,
    }
    one_line_error(chatwire(tmp_path, "serve", **env), "CHATWIRE_DATABASE_URL", "PostgreSQL")
    one_line_error(chatwire(tmp_path, "check", **env), "CHATWIRE_DATABASE_URL", "PostgreSQL")


async def test_fleet_with_unreachable_redis_fails_before_ready(tmp_path: Path) -> None:
    async with postgres_database() as url:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        env = {"CHATWIRE_REDIS_URL": dead, "CHATWIRE_JWT_SECRET": "s" * 40, "CHATWIRE_DATABASE_URL": url}
        one_line_error(chatwire(tmp_path, "serve", **env), f"CHATWIRE_REDIS_URL='{dead}'", "not reachable")
        # `check` reaches the database (not migrated yet: it would say so), then Redis.
        one_line_error(chatwire(tmp_path, "check", **env), "CHATWIRE_REDIS_URL", "not reachable")


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    dead = f"postgresql+asyncpg://postgres:secret@127.0.0.1:{free_port()}/chat"
    for command in ("serve", "check", "migrate"):
        line = one_line_error(
            chatwire(tmp_path, command, CHATWIRE_DATABASE_URL=dead), "CHATWIRE_DATABASE_URL"
        )
        assert "not reachable" in line and "secret" not in line  # the password is never printed


async def test_plain_postgresql_url_means_asyncpg_and_migrate_then_serve_without_migrating(
    tmp_path: Path,
) -> None:
    async with postgres_database() as url:
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        # A fresh database: serving without migrating and checking both say to migrate first.
        one_line_error(
            chatwire(tmp_path, "serve", "--no-migrate", CHATWIRE_DATABASE_URL=plain), "chatwire migrate"
        )
        one_line_error(chatwire(tmp_path, "check", CHATWIRE_DATABASE_URL=plain), "chatwire migrate")
        migrated = chatwire(tmp_path, "migrate", CHATWIRE_DATABASE_URL=plain)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("migrated (empty) -> ")
        again = chatwire(tmp_path, "migrate", CHATWIRE_DATABASE_URL=plain)
        assert again.returncode == 0 and "nothing to do" in again.stdout
        checked = chatwire(tmp_path, "check", CHATWIRE_DATABASE_URL=plain)
        assert checked.returncode == 0, checked.stderr
        assert "database: postgresql+asyncpg://" in checked.stdout and checked.stdout.strip().endswith("ok")
        # Fleet mode with everything in place passes the check too.
        fleet = chatwire(
            tmp_path,
            "check",
            CHATWIRE_DATABASE_URL=plain,
            CHATWIRE_REDIS_URL=REDIS_URL,
            CHATWIRE_JWT_SECRET="s" * 40,
        )
        assert fleet.returncode == 0 and f"redis: {REDIS_URL} answers" in fleet.stdout, fleet.stderr
        async with serve_process(
            tmp_path, {"CHATWIRE_DATABASE_URL": plain, "CHATWIRE_MIGRATE_ON_START": "false"}
        ) as up:
            assert "Running upgrade" not in up.log()


def test_keys_list_in_another_folder_creates_nothing(tmp_path: Path) -> None:
    for args in (["keys", "list"], ["keys", "revoke", "k1"]):
        one_line_error(chatwire(tmp_path, *args), "no database at", str(tmp_path / "data" / "chatwire.db"))
    assert list(tmp_path.iterdir()) == []
    # With the server's data directory it works (create makes the database and says so).
    created = chatwire(
        tmp_path, "keys", "create", "--scope", "publish", CHATWIRE_DATA_DIR=str(tmp_path / "srv")
    )
    assert created.returncode == 0 and "creating database" in created.stderr
    listed = chatwire(tmp_path, "keys", "list", CHATWIRE_DATA_DIR=str(tmp_path / "srv"))
    assert listed.returncode == 0 and '"scopes": ["publish"]' in listed.stdout


def test_keys_bad_scope_is_one_line(tmp_path: Path) -> None:
    result = chatwire(tmp_path, "keys", "create", "--scope", "everything", CHATWIRE_DATA_DIR=str(tmp_path))
    one_line_error(result, "scopes must be")


async def test_tail_with_a_bad_token_says_invalid_token(tmp_path: Path) -> None:
    async with serve_process(tmp_path) as up:
        one_line_error(chatwire(tmp_path, "tail", "--token", "not-a-token", "--url", up.url), "invalid token")
    one_line_error(chatwire(tmp_path, "tail", "--token", "t", "--url", up.url), "cannot reach", up.url)
