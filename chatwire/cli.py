"""Command line: `chatwire serve`, `migrate`, `check`, `keys`, `demo`, `tail`, `version`.

A user error (a bad setting, an unreachable service, a bad token, a missing database) ends the command with one
line on stderr, `chatwire: error: ...`, and exit status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from chatwire.config import Settings, SettingsError, load_settings

# Exit status of a user error (bad settings or usage, unreachable service, refused token).
USAGE_ERROR = 2


class CliError(Exception):
    """A user error: printed as one line, `chatwire: error: ...`, exit status USAGE_ERROR."""


class Commands(TyperGroup):
    """The command group: a CliError or SettingsError (bad value, unreachable service) from any command is one
    line on stderr and exit status USAGE_ERROR."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, SettingsError) as exc:
            typer.echo(f"chatwire: error: {exc}", err=True)
            raise typer.Exit(USAGE_ERROR) from None


app = typer.Typer(
    cls=Commands,
    help="chatwire: a real-time event server for AI chat applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> NoReturn:
    raise CliError(message)


def _settings_help() -> str:
    """One paragraph per setting (name, default, meaning), built from the Settings model so none is missed."""
    paragraphs = ["Settings (environment variables, also read from .env):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(str(v) for v in default)
        shown = "(empty)" if default in ("", None) else str(default)
        paragraphs.append(f"CHATWIRE_{name.upper()} (default: {shown}): {field.description or ''}")
    return "\n\n".join(paragraphs)


@app.command(help="Run the server.\n\n" + _settings_help())
def serve(
    host: Annotated[str | None, typer.Option(help="Override CHATWIRE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override CHATWIRE_PORT.")] = None,
    no_migrate: Annotated[
        bool,
        typer.Option(
            "--no-migrate",
            help="Do not migrate at start (CHATWIRE_MIGRATE_ON_START=false); refuse an old schema.",
        ),
    ] = False,
) -> None:
    import uvicorn

    from chatwire.app import create_app
    from chatwire.logs import setup_logging
    from chatwire.preflight import check_serve
    from chatwire.transport.http_guard import http_protocol
    from chatwire.transport.server import ws_protocol_for

    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if no_migrate:
        overrides["migrate_on_start"] = False
    settings = load_settings(**overrides)
    asyncio.run(check_serve(settings))
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws=ws_protocol_for(settings),
        # Slow clients: a deadline for request headers, a bound on unfinished ones per IP (http_guard.py).
        http=http_protocol(settings.http_header_timeout, settings.http_max_pending_per_ip),
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database's schema to this version's (creates the SQLite file if missing); run it once per
    upgrade before starting the new version with `serve --no-migrate`."""
    from chatwire.db.engine import Database
    from chatwire.preflight import check_combination, schema_state

    settings = load_settings()
    check_combination(settings)
    url = settings.resolved_database_url
    before = asyncio.run(schema_state(url))

    async def run() -> None:
        db = Database(url)
        try:
            await db.migrate()
        finally:
            await db.close()

    if not before.up_to_date:
        asyncio.run(run())
    after = asyncio.run(schema_state(url))
    if before.up_to_date:
        typer.echo(f"schema already at {after.current}; nothing to do")
    else:
        typer.echo(f"migrated {before.current or '(empty)'} -> {after.current}")


@app.command("check")
def check_command() -> None:
    """Validate the settings and reach the database (and Redis in fleet mode); exit 0 with one line per service,
    or non-zero with one line saying what is wrong. The schema must be current (`chatwire migrate`)."""
    from chatwire.preflight import check_all

    settings = load_settings()
    for line in asyncio.run(check_all(settings, need_schema=True)):
        typer.echo(line)
    typer.echo("ok")


keys_app = typer.Typer(help="Server API keys: create (printed once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _with_keys(work: Any, *, create: bool = False) -> Any:
    """Run `work(ApiKeyService)` against the configured database, migrated first. Only `create` may create a
    missing SQLite file (and says which); listing or revoking in the wrong folder is an error, not an empty list."""
    from chatwire.db.engine import Database
    from chatwire.db.repos.api_keys import ApiKeyRepo
    from chatwire.preflight import database_url_for_admin, schema_state
    from chatwire.services.api_keys import ApiKeyService

    settings = load_settings()
    if create:
        path = settings.sqlite_path
        if path is not None and not path.exists():
            typer.echo(f"creating database {path}", err=True)
        url = settings.resolved_database_url
    else:
        url = database_url_for_admin(settings)
    asyncio.run(schema_state(url))  # a one-line error when the database does not answer

    async def run() -> Any:
        db = Database(url)
        try:
            await db.migrate()
            return await work(ApiKeyService(ApiKeyRepo(db)))
        finally:
            await db.close()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="publish, channels, presence or admin; repeat for several.")
    ],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "",
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from chatwire.errors import ChatwireError
    from chatwire.services.api_keys import SCOPES

    unknown = [s for s in scope if s not in SCOPES]
    if unknown or not scope:
        fail(f"scopes must be one or more of {', '.join(SCOPES)}; got {unknown or scope}")
    try:
        record, key = _with_keys(lambda svc: svc.create(name, scope), create=True)
    except ChatwireError as exc:
        fail(exc.message)
    typer.echo(f"id: {record['id']}  name: {record['name']}  scopes: {','.join(record['scopes'])}", err=True)
    typer.echo("the key (shown once, store it now):", err=True)
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (id, prefix, name, scopes, created, revoked); never the keys themselves."""
    import json

    for record in _with_keys(lambda svc: svc.list()):
        typer.echo(json.dumps(record))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `chatwire keys list`).")],
) -> None:
    """Revoke a key: every process refuses it from the next call on."""
    if not _with_keys(lambda svc: svc.revoke(key_id)):
        typer.echo(f"no live key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command("demo")
def demo_command(
    url: Annotated[
        str, typer.Option(help="Server to use; an embedded one starts if none answers.")
    ] = "http://127.0.0.1:8080",
    prompt: Annotated[
        str, typer.Option(help="What to ask ('confirm' asks before a step, 'N tokens' sets the length).")
    ] = "Please confirm, then tell me about chatwire in 80 tokens",
    model: Annotated[str, typer.Option(help="Model id.")] = "demo",
    yes: Annotated[bool | None, typer.Option("--yes/--no", help="Answer event calls without asking.")] = None,
) -> None:
    """Create a user and a chat, run a demo generation and print it as it streams."""
    from chatwire.cli_pipeline import demo

    raise typer.Exit(asyncio.run(demo(url, prompt, model, yes)))


@app.command("tail")
def tail_command(
    token: Annotated[str, typer.Option(help="The user's token (JWT).")],
    url: Annotated[str, typer.Option(help="Server URL.")] = "http://127.0.0.1:8080",
    colour: Annotated[bool, typer.Option("--colour/--no-colour", help="Colourise event types.")] = True,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: never).")
    ] = None,
) -> None:
    """Print a user's live events, one line each."""
    import contextlib

    from chatwire.cli_pipeline import tail

    asyncio.run(_check_token(url, token))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(url, token, colour, seconds))


async def _check_token(url: str, token: str) -> None:
    """Ask the server who the token belongs to: a refused token or an unreachable server is a one-line error."""
    import httpx

    base = url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{base}/api/v1/auths/", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        fail(f"cannot reach a chatwire server at {base}: {type(exc).__name__} {exc}".strip())
    if response.status_code == 401:
        fail("invalid token (the server refused it: wrong, expired or revoked)")
    if response.status_code != 200:
        fail(f"{base} answered {response.status_code} to GET /api/v1/auths/ (is it a chatwire server?)")


@app.command()
def version() -> None:
    """Print the version."""
    from chatwire import __version__

    typer.echo(__version__)


def main() -> None:
    """The `chatwire` command: user errors (bad settings, bad options, unknown commands) become one line on
    stderr and exit status 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="chatwire", standalone_mode=False)
    except SettingsError as exc:  # raised outside a command (while building one): same one line
        typer.echo(f"chatwire: error: {exc}", err=True)
        sys.exit(USAGE_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # click's usage errors (bad option value, unknown command or option), whichever click typer uses.
        message = getattr(exc, "format_message", None)
        if not callable(message) or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `chatwire` alone: the help, as before
            typer.echo(message(), err=True)
            sys.exit(USAGE_ERROR)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"chatwire: error: {message()}{hint}", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
