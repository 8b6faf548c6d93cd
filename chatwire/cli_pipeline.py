"""`chatwire demo` and `chatwire tail`: watch the chat event pipeline from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer

from chatwire.client import ChannelEvent, ChatEvent, ChatwireClient, ChatwireHTTP

_COLOURS = {
    "chat:message:delta": typer.colors.WHITE,
    "message": typer.colors.WHITE,
    "status": typer.colors.CYAN,
    "source": typer.colors.MAGENTA,
    "citation": typer.colors.MAGENTA,
    "chat:completion": typer.colors.GREEN,
    "chat:active": typer.colors.BLUE,
    "chat:message:error": typer.colors.RED,
    "chat:tasks:cancel": typer.colors.YELLOW,
}


def event_line(event: ChatEvent | ChannelEvent, *, colour: bool = True, width: int = 160) -> str:
    """One line for one event: time, where it belongs, its type (coloured) and its data."""
    stamp = time.strftime("%H:%M:%S")
    if isinstance(event, ChatEvent):
        where = f"chat {str(event.chat_id)[:8]} msg {str(event.message_id)[:8]}"
    else:
        where = f"channel {event.channel_id[:8]} msg {str(event.message_id)[:8]}"
    data = orjson.dumps(event.data, default=str).decode()
    if len(data) > width:
        data = data[: width - 1] + "…"
    kind = event.type
    if colour:
        kind = typer.style(
            kind, fg=_COLOURS.get(kind, typer.colors.BRIGHT_BLACK), bold=kind.startswith("chat:")
        )
    return f"{stamp} {where} {kind} {data}"


async def tail(url: str, token: str, colour: bool, until: float | None = None) -> None:
    """Print every `events` and `events:channel` item of the token's user until interrupted."""
    client = ChatwireClient(url, token)
    client.on_event(lambda e: typer.echo(event_line(e, colour=colour)))
    client.on_channel_event(lambda e: typer.echo(event_line(e, colour=colour)))
    await client.connect()
    who = client.user or {}
    typer.echo(f"connected as {who.get('name', '?')} ({who.get('id', '?')}); waiting for events", err=True)
    try:
        if until is None:
            await client.sio.wait()
        else:
            await asyncio.sleep(until)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _server_at(url: str) -> AsyncIterator[str]:
    """`url` if a chatwire server answers there, else an embedded one on a free port (temporary data)."""
    try:
        async with httpx.AsyncClient() as http:
            (await http.get(f"{url.rstrip('/')}/health", timeout=2)).raise_for_status()
        yield url
        return
    except httpx.HTTPError:
        pass
    import socket

    import uvicorn

    from chatwire.app import create_app
    from chatwire.config import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="chatwire-demo-") as tmp:
        settings = Settings(data_dir=Path(tmp), port=port, log_level="WARNING", _env_file=None)  # type: ignore[call-arg]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        typer.echo(f"no server at {url}; started an embedded one at http://127.0.0.1:{port}", err=True)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


async def demo(url: str, prompt: str, model: str, yes: bool | None) -> int:
    """Create a user and a chat, run one generation, print it as it streams; 0 if stored == streamed."""
    async with _server_at(url) as base:
        async with ChatwireHTTP(base) as http:
            email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
            user = await http.signup("Demo", email, uuid.uuid4().hex)
            chat = await http.new_chat("chatwire demo")
            typer.echo(f"user {email} ({user['id']}), chat {chat['id']}", err=True)
            client = ChatwireClient(base, user["token"], reconnection=False)

            async def confirm(event: ChatEvent) -> Any:
                data = event.data if isinstance(event.data, dict) else {}
                question = f"{data.get('title', '')}: {data.get('message', '')}"
                if yes is not None:
                    typer.echo(f"\n? {question} -> {'yes' if yes else 'no'}", err=True)
                    return yes
                return await asyncio.to_thread(typer.confirm, f"\n? {question}", default=True)

            async def ask(event: ChatEvent) -> Any:
                data = event.data if isinstance(event.data, dict) else {}
                if yes is not None:
                    return "Demo"
                return await asyncio.to_thread(typer.prompt, f"\n? {data.get('message', 'input')}")

            def show(event: ChatEvent) -> None:
                if event.type in ("chat:message:delta", "message"):
                    sys.stdout.write(str((event.data or {}).get("content", "")))
                    sys.stdout.flush()
                elif event.type == "status":
                    mark = "✓" if event.data.get("done") else "…"
                    typer.echo(
                        typer.style(f"[{mark} {event.data.get('description')}]", fg=typer.colors.CYAN),
                        err=True,
                    )
                elif event.type in ("source", "citation"):
                    name = (event.data.get("source") or {}).get("name")
                    typer.echo(typer.style(f"[source: {name}]", fg=typer.colors.MAGENTA), err=True)

            client.on_call("confirmation", confirm)
            client.on_call("input", ask)
            client.on_event(show)
            client.track(chat["id"])
            await client.connect()
            started = time.monotonic()
            try:
                out = await http.complete(
                    model, [{"role": "user", "content": prompt}], chat_id=chat["id"], session_id=client.sid
                )
                message = await client.wait_done(chat["id"], out["message_id"], timeout=600)
            finally:
                await client.close()
            elapsed = time.monotonic() - started
            tokens = (message.get("usage") or {}).get("completion_tokens") or len(message["content"].split())
            typer.echo("", err=False)
            await asyncio.sleep(0.5)  # the writer's timer has flushed by now; done flushes at once anyway
            stored = (await http.get_chat(chat["id"]))["chat"]["history"]["messages"][out["message_id"]]
            same = stored["content"] == message["content"] and stored.get("done") == message.get("done")
            typer.echo(
                f"{tokens} tokens in {elapsed:.2f} s ({tokens / max(elapsed, 1e-9):.0f}/s); stored "
                f"{len(stored['content'])} chars, {'identical to' if same else 'DIFFERENT from'} the stream",
                err=True,
            )
            return 0 if same else 1
