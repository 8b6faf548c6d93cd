"""The proxy the Open WebUI frontend test runs behind: Open WebUI's compiled frontend, chatwire's routes, and
static JSON for the few routes that belong to the rest of Open WebUI.

What a deployment serves from where is the list below (docs/OPENWEBUI.md repeats it): every path under
`CHATWIRE_PREFIXES` goes to chatwire unchanged (HTTP and the Socket.IO websocket); `STATIC_ROUTES` are Open WebUI's
own (its config, models' admin, tools, functions, skills, groups, user settings, avatars...) and get a fixed answer
here; anything else is a 404 the proxy records in `unserved`, so a test can tell when the frontend asks for
something neither side serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from tests.conftest import free_port

# chatwire's domain: auth and users, chats, completions and tasks, channels, notes, the socket.
CHATWIRE_PREFIXES = (
    "/api/v1/auths/",
    "/api/v1/users/",
    "/api/v1/chats/",
    "/api/v1/channels/",
    "/api/v1/notes/",
    "/api/chat/completions",
    "/api/tasks/",
    "/api/models",
    "/api/usage",
    "/ws/socket.io/",
    "/health",
)

# The verified version (docs/OPENWEBUI.md); CHATWIRE_OWUI_VERSION checks another one.
PINNED_VERSION = "0.12.4"
OWUI_VERSION = os.environ.get("CHATWIRE_OWUI_VERSION", PINNED_VERSION)

# Everything the frontend needs outside chatwire's domain, answered as a deployment without those features would.
Static = Callable[[web.Request], Any]

_FEATURES: dict[str, Any] = {
    "auth": True,
    "enable_signup": True,
    "enable_login_form": True,
    "enable_websocket": True,
    "enable_api_keys": False,
    "enable_channels": True,
    "enable_notes": True,
    "enable_folders": False,
    "enable_memories": False,
    "enable_direct_connections": False,
    "enable_web_search": False,
    "enable_code_execution": False,
    "enable_code_interpreter": False,
    "enable_image_generation": False,
    "enable_autocomplete_generation": False,
    "enable_title_generation": False,
    "enable_follow_up_generation": False,
    "enable_tags_generation": False,
    "enable_community_sharing": False,
    "enable_message_rating": False,
    "enable_user_webhooks": False,
    "enable_user_status": False,
    "enable_version_update_check": False,
    "enable_admin_export": False,
    "enable_admin_chat_access": False,
    "enable_admin_analytics": False,
    "enable_calendar": False,
    "enable_automations": False,
    "enable_apps": False,
}


def _config(request: web.Request) -> dict[str, Any]:
    """Open WebUI's `/api/config`. Its backend tells signed-in callers apart by the `token` cookie its sign-in sets;
    chatwire sets no cookie, so this answers everyone with the signed-in body (nothing in it is secret)."""
    return {
        "status": True,
        "name": "Open WebUI",
        "version": OWUI_VERSION,
        "default_locale": "en-US",
        "oauth": {"providers": {}},
        "features": _FEATURES,
        "default_models": "demo",
        "default_pinned_models": "",
        "default_prompt_suggestions": [],
        "code": {"engine": "pyodide", "interpreter_engine": "pyodide"},
        "audio": {"tts": {"engine": "", "voice": "", "split_on": "punctuation"}, "stt": {"engine": ""}},
        "file": {"max_size": None, "max_count": None, "image_compression": {"width": None, "height": None}},
        "permissions": {},
        "ui": {"default_interface_settings": {}},
    }


STATIC_ROUTES: dict[tuple[str, str], Static] = {
    ("GET", "/api/config"): _config,
    ("GET", "/api/version"): lambda r: {"version": OWUI_VERSION, "deployment_id": "chatwire-e2e"},
    ("GET", "/api/version/updates"): lambda r: {"current": OWUI_VERSION, "latest": OWUI_VERSION},
    ("GET", "/api/changelog"): lambda r: {},
    ("GET", "/api/v1/configs/banners"): lambda r: [],
    ("GET", "/api/v1/tools/"): lambda r: [],
    ("GET", "/api/v1/tools/list"): lambda r: [],
    ("GET", "/api/v1/functions/"): lambda r: [],
    ("GET", "/api/v1/functions/list"): lambda r: [],
    ("GET", "/api/v1/skills/"): lambda r: [],
    ("GET", "/api/v1/skills/list"): lambda r: [],
    ("GET", "/api/v1/groups/"): lambda r: [],
    ("GET", "/api/v1/folders/"): lambda r: [],
    ("GET", "/api/v1/prompts/"): lambda r: [],
    ("GET", "/api/v1/knowledge/"): lambda r: {"items": [], "total": 0},
    # The version the user last saw the changelog of (else the frontend opens it on every page load).
    ("GET", "/api/v1/users/user/settings"): lambda r: {"ui": {"version": OWUI_VERSION}},
    ("POST", "/api/v1/users/user/settings/update"): lambda r: {"ui": {"version": OWUI_VERSION}},
    ("POST", "/api/v1/auths/update/timezone"): lambda r: {"status": True},
    ("GET", "/api/v1/configs/models"): lambda r: {"DEFAULT_MODELS": "demo", "MODEL_ORDER_LIST": []},
    ("GET", "/api/v1/models/"): lambda r: [],
    ("GET", "/api/v1/models/list"): lambda r: {"items": [], "total": 0},
    ("GET", "/api/v1/models/base"): lambda r: [],
    ("GET", "/api/v1/auths/admin/config"): lambda r: {"SHOW_ADMIN_DETAILS": True, "ENABLE_SIGNUP": True},
    ("GET", "/api/v1/terminals/"): lambda r: [],
    ("GET", "/api/v1/memories/"): lambda r: [],
}

# Avatars and other images: Open WebUI serves generated pictures; a 1x1 PNG stands in for them.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000020001e221bc330000000049454e44ae426082"
)
_IMAGE_PATHS = re.compile(r"^/api/v1/(users/[^/]+/profile/image|models/model/profile/image)|^/static/")


class OwuiProxy:
    """Serves `frontend` (Open WebUI's compiled app) with chatwire at `upstream` behind it, in a thread of its own
    (the browser tests drive Playwright's sync API in the main thread)."""

    def __init__(self, frontend: Path, upstream: str) -> None:
        self.frontend = frontend
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.unserved: list[str] = []
        self.forwarded: list[tuple[str, str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle

    def start(self) -> OwuiProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="owui-proxy")
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("the Open WebUI proxy did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._stop())
        loop.close()

    async def _start(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)

    # routing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        answer = STATIC_ROUTES.get((request.method, path))
        if answer is not None:
            return web.json_response(answer(request))
        if _IMAGE_PATHS.match(path):
            return self._image(path)
        if path.startswith(CHATWIRE_PREFIXES) or path + "/" in CHATWIRE_PREFIXES:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request)
            return await self._forward(request)
        if path.startswith(("/api/", "/oauth/", "/ollama/", "/openai/")):
            self.unserved.append(f"{request.method} {path}")
            return web.json_response({"detail": "not served by this deployment"}, status=404)
        return self._file(path)

    def _image(self, path: str) -> web.StreamResponse:
        """Open WebUI's `static/` files (its backend serves them), else a stand-in picture (avatars)."""
        if path.startswith("/static/"):
            candidate = (self.frontend.parent / path.lstrip("/")).resolve()
            if candidate.is_file() and self.frontend.parent.resolve() in candidate.parents:
                return web.FileResponse(candidate)
        return web.Response(body=_PNG, content_type="image/png")

    def _file(self, path: str) -> web.StreamResponse:
        """The frontend's files; any other path is the single-page app's index (client-side routing)."""
        candidate = (self.frontend / path.lstrip("/")).resolve()
        if candidate.is_file() and self.frontend.resolve() in candidate.parents:
            return web.FileResponse(candidate)
        return web.FileResponse(self.frontend / "index.html")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body = await request.read()
        async with self._client.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            self.forwarded.append((request.method, request.path, upstream.status))
            response = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    response.headers[k] = v
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        down = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await down.prepare(request)
        url = "ws" + self.upstream.removeprefix("http") + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "cookie")}
        async with self._client.ws_connect(url, headers=headers, autoping=False, max_msg_size=0) as up:

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    elif msg.type == WSMsgType.PING:
                        await dst.ping(msg.data)
                    elif msg.type == WSMsgType.PONG:
                        await dst.pong(msg.data)
                    else:
                        break
                await dst.close()

            tasks = [asyncio.ensure_future(pump(down, up)), asyncio.ensure_future(pump(up, down))]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        return down
