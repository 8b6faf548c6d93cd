"""Serving the web client: find its build (bundled, or the repository's web/dist), route unknown pages to it, and
send the browser security headers with every file of it."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Paths that belong to the server, never to the single-page app.
SERVER_PREFIXES = ("api/", "ws/", "health", "openapi.json", "docs", "redoc")

# The app loads only its own scripts and talks only to its own origin (REST, and Socket.IO over websocket or
# polling: 'self' covers ws:/wss: of the same host). Svelte sets inline style attributes, hence 'unsafe-inline'
# for styles only; 'unsafe-eval' is there for `execute` event calls, which run server-sent code in the page as
# Open WebUI's client does. No inline script, no plugin, no framing, no <base> or form posts elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or path.startswith(SERVER_PREFIXES) or "." in last:
                raise
            response = await super().get_response("index.html", scope)
        response.headers.update(SECURITY_HEADERS)
        return response
