"""Command line: `chatwire serve` (more commands join as the product grows)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chatwire.config import Settings

app = typer.Typer(help="chatwire: a real-time event server for AI chat applications.", no_args_is_help=True)


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
) -> None:
    import uvicorn

    from chatwire.app import create_app
    from chatwire.logs import setup_logging
    from chatwire.transport.uvicorn_ws import ws_protocol

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws=ws_protocol(),
        ws_per_message_deflate=settings.ws_per_message_deflate,
        lifespan="on",
    )


keys_app = typer.Typer(help="Server API keys: create (printed once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _with_keys(work: Any) -> Any:
    """Run `work(ApiKeyService)` against the configured database (migrated first)."""
    import asyncio

    from chatwire.db.engine import Database
    from chatwire.db.repos.api_keys import ApiKeyRepo
    from chatwire.services.api_keys import ApiKeyService

    async def run() -> Any:
        db = Database(Settings().resolved_database_url)
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

    try:
        record, key = _with_keys(lambda svc: svc.create(name, scope))
    except ChatwireError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
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
    import asyncio

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
    import asyncio
    import contextlib

    from chatwire.cli_pipeline import tail

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(url, token, colour, seconds))


@app.command()
def version() -> None:
    """Print the version."""
    from chatwire import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
