"""Command line: `chatwire serve` (more commands join as the product grows)."""

from __future__ import annotations

from typing import Annotated

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

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        lifespan="on",
    )


@app.command()
def version() -> None:
    """Print the version."""
    from chatwire import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
