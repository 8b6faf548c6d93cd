"""Start-up checks shared by `chatwire serve`, `chatwire check` and `chatwire migrate`: settings that cannot work
together, and whether the database and Redis answer. Every failure is a `PreflightError` with one line that
names the setting (its environment variable) and what is wrong, so an operator sees the reason, not a traceback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chatwire.config import Settings, SettingsError, env_name

# How long a reachability probe waits before calling a service unreachable.
PROBE_TIMEOUT = 5.0


class PreflightError(SettingsError):
    """A check failed; the message is one line."""


@dataclass
class SchemaState:
    """Where the database's schema is against the migrations this version ships."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _one_line(exc: BaseException) -> str:
    """An exception as one short line: its first line, or its type when it has no message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def check_combination(settings: Settings) -> None:
    """Refuse settings that cannot work together (no I/O)."""
    redis = env_name("redis_url")
    if settings.redis_url and "://" not in settings.redis_url:
        raise PreflightError(
            f"{redis}={settings.redis_url!r}: not a URL (expected redis://host:6379/0, rediss:// or unix://)"
        )
    if settings.web_dir is not None and not (settings.web_dir / "index.html").exists():
        raise PreflightError(
            f"{env_name('web_dir')}={str(settings.web_dir)!r}: no index.html there (a built web client)"
        )
    if not settings.fleet:
        return
    if not settings.jwt_secret:
        raise PreflightError(
            f"{env_name('jwt_secret')} is empty: fleet mode ({redis} is set) needs one secret shared by every "
            "process, or a token from one process is invalid on the others"
        )
    if not settings.database_url or settings.database_url.startswith("sqlite"):
        shown = settings.database_url or "(empty: SQLite under CHATWIRE_DATA_DIR)"
        raise PreflightError(
            f"{env_name('database_url')}={shown}: fleet mode ({redis} is set) needs PostgreSQL "
            "(postgresql+asyncpg://user:pass@host/db); a SQLite file cannot be shared by processes"
        )


def database_url_for_admin(settings: Settings) -> str:
    """The database URL for a command that works on existing data (keys list/revoke, serve --no-migrate):
    a SQLite file that does not exist is an error, never silently created empty."""
    path = settings.sqlite_path
    if path is not None and not path.exists():
        raise PreflightError(
            f"no database at {path} (set {env_name('data_dir')} or {env_name('database_url')} to the "
            "server's, or run `chatwire migrate` to create one)"
        )
    return settings.resolved_database_url


def _describe_database(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def schema_state(url: str) -> SchemaState:
    """Connect and read the schema revision (PreflightError when the database does not answer)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from chatwire.db.engine import Database, alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head() or ""
    db = Database(url)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with db.engine.connect() as conn:
                current = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    except TimeoutError:
        raise PreflightError(
            f"{env_name('database_url')}: database {_describe_database(url)} did not answer in {PROBE_TIMEOUT:g} s"
        ) from None
    except Exception as exc:
        raise PreflightError(
            f"{env_name('database_url')}: database {_describe_database(url)} is not reachable: {_one_line(exc)}"
        ) from None
    finally:
        await db.close()
    return SchemaState(current, head)


async def ping_redis(settings: Settings) -> None:
    """PING Redis once, through the same target the fleet uses (single, Sentinel or Cluster): PreflightError
    with the reason when it does not answer."""
    from chatwire.backends.redis_client import RedisTarget

    url = settings.redis_url
    try:
        client = RedisTarget.from_settings(settings).client(
            socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
    except Exception as exc:
        raise PreflightError(f"{env_name('redis_url')}={url!r}: {_one_line(exc)}") from None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT + 1):
            await client.ping()
    except Exception as exc:
        raise PreflightError(
            f"{env_name('redis_url')}={url!r}: Redis is not reachable: {_one_line(exc)}"
        ) from None
    finally:
        await client.aclose()


async def check_all(settings: Settings, *, need_schema: bool) -> list[str]:
    """Everything `chatwire check` verifies; returns one line per service that is fine, raises on the first
    failure. `need_schema`: an out-of-date schema is a failure (a server that will not migrate it)."""
    check_combination(settings)
    url = (
        database_url_for_admin(settings)
        if settings.sqlite_path is not None
        else settings.resolved_database_url
    )
    state = await schema_state(url)
    if settings.redis_url:
        await ping_redis(settings)
    if need_schema and not state.up_to_date:
        raise PreflightError(
            f"database {_describe_database(url)} is at schema {state.current or '(empty)'}, this version needs "
            f"{state.head}: run `chatwire migrate` first"
        )
    behind = "" if state.up_to_date else f" (needs {state.head}: `chatwire migrate`)"
    lines = [f"database: {_describe_database(url)} at schema {state.current or '(empty)'}{behind}"]
    if settings.redis_url:
        lines.append(f"redis: {settings.redis_url} answers")
    return lines


async def check_serve(settings: Settings) -> None:
    """What `chatwire serve` verifies before it starts listening: the combination, and in fleet mode that the
    database and Redis answer (and, without migrating, that the schema is current)."""
    check_combination(settings)
    if not settings.migrate_on_start:
        url = database_url_for_admin(settings) if settings.sqlite_path is not None else settings.database_url
        state = await schema_state(url)
        if not state.up_to_date:
            raise PreflightError(
                f"database {_describe_database(url)} is at schema {state.current or '(empty)'}, this version "
                f"needs {state.head}: run `chatwire migrate` (or serve without --no-migrate)"
            )
    elif settings.database_url and not settings.database_url.startswith("sqlite"):
        await schema_state(settings.database_url)
    if settings.redis_url:
        await ping_redis(settings)
