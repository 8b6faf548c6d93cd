"""Serving the web client: find its build (bundled, or the repository's web/dist) and route unknown pages to it."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Paths that belong to the server, never to the single-page app.
SERVER_PREFIXES = ("api/", "ws/", "health", "openapi.json", "docs", "redoc")


def default_web_dir() -> Path | None:
    """The bundled build (chatwire/static) if present, else the repository's web/dist (after `make run`)."""
    package = Path(__file__).parent
    for candidate in (package / "static", package.parent / "web" / "dist"):
        if (candidate / "index.html").exists():
            return candidate
    return None


class SpaStaticFiles(StaticFiles):
    """Static files where an unknown page path (no file extension, not a server path) serves index.html."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or path.startswith(SERVER_PREFIXES) or "." in last:
                raise
            return await super().get_response("index.html", scope)
