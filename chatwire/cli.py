"""Command line: `chatwire serve` (more commands join as the product grows)."""

from __future__ import annotations

from typing import Annotated

import typer

from chatwire.config import Settings

app = typer.Typer(help="chatwire: a real-time event server for AI chat applications.", no_args_is_help=True)


def _settings_help() -> str:
    lines = ["Settings (environment variables, also read from .env):", ""]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        lines.append(f"CHATWIRE_{name.upper()}  (default: {default!s})  {field.description or ''}")
        lines.append("")
    return "\n\n".join(lines)


@app.command(help="Run the server.\n\n" + _settings_help())
def serve(
    host: Annotated[str | None, typer.Option(help="Override CHATWIRE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override CHATWIRE_PORT.")] = None,
) -> None:
    import uvicorn

    from chatwire.app import create_app
    from chatwire.logs import setup_logging

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_per_message_deflate=False,
        lifespan="on",
    )


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
