"""Yjs interop for real: npm `yjs` clients on the official socket.io-client edit one note concurrently through a
chatwire server process; everyone (and the server's pycrdt document) ends with the same text, also after a
restart of the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, XmlElement, XmlFragment

from chatwire.backends.docstore_sql import SqlDocStore
from chatwire.db.engine import Database
from tests.conftest import RunningServer, free_port, requirement_missing
from tests.sio import RecordingClient

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVER = NODE_DIR / "ydoc_client.mjs"
AWARENESS_DRIVER = NODE_DIR / "awareness_client.mjs"
EDITS = 150


def _node_ready() -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").exists():
        requirement_missing("node or tests/node/node_modules missing (run `make node`)")


class ServerProcess:
    """`python -m chatwire serve` on a fixed data directory and port, restartable."""

    def __init__(self, data_dir: Path, port: int, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "CHATWIRE_DATA_DIR": str(data_dir),
            "CHATWIRE_PORT": str(port),
            "CHATWIRE_HOST": "127.0.0.1",
            "CHATWIRE_JWT_SECRET": "interop-secret-0123456789abcdef-0123456789",
            "CHATWIRE_LOG_FORMAT": "text",
            "CHATWIRE_LOG_LEVEL": "WARNING",
            "CHATWIRE_DATABASE_URL": "",
            "CHATWIRE_REDIS_URL": "",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "server.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "chatwire", "serve"], env=self.env, stdout=log, stderr=log
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
                try:
                    if (await http.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 20)
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()


@asynccontextmanager
async def server_process(tmp_path: Path, **env: str) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", free_port(), **env)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def signup(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await http.post(
        "/api/v1/auths/signup",
        json={"name": name, "email": f"{name.lower()}@example.com", "password": "pw-xxxxxxxx"},
    )
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


class NodeClient:
    """One ydoc_client.mjs process; JSON lines in, `go` out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *, driver: Path = DRIVER, **options: Any) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(driver),
            json.dumps(options),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def line(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise AssertionError(f"node client ended without output: {err.decode()[-2000:]}")
        message: dict[str, Any] = json.loads(raw)
        assert message["event"] != "error", message
        return message

    async def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def xml_of(state: bytes) -> tuple[str, str]:
    """(fragment XML, paragraph text) of a Yjs state decoded by pycrdt."""
    doc: Doc = Doc()
    doc.apply_update(state)
    fragment = doc.get("prosemirror", type=XmlFragment)
    children = list(fragment.children)
    text = ""
    if children and isinstance(children[0], XmlElement):
        inner = list(children[0].children)
        text = str(inner[0]) if inner else ""
    return str(fragment), text


async def read_via_node(url: str, token: str, document_id: str) -> dict[str, Any]:
    reader = await NodeClient.start(url=url, token=token, documentId=document_id, mode="read")
    try:
        return await reader.line()
    finally:
        await reader.wait()


async def server_state(url: str, token: str, document_id: str) -> bytes:
    """The server's pycrdt document, as the state it sends to a joining python-socketio client."""
    client = await RecordingClient(url).connect(token)
    try:
        ack = await client.call("ydoc:document:join", {"document_id": document_id})
        assert "error" not in ack, ack
        state = await client.wait_for("ydoc:document:state", lambda p: p["document_id"] == document_id)
        await client.call("ydoc:document:leave", {"document_id": document_id})
        return bytes(state["state"])
    finally:
        await client.close()


async def test_three_node_yjs_clients_converge_and_survive_restart(tmp_path: Path) -> None:
    _node_ready()
    async with server_process(tmp_path, CHATWIRE_DOC_COMPACT_EVERY="64") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            owner = await signup(http, "Owner")
            writers = [await signup(http, "Wendy"), await signup(http, "Walt")]
            r = await http.post(
                "/api/v1/notes/create",
                headers={"Authorization": f"Bearer {owner['token']}"},
                json={
                    "title": "interop",
                    "access_control": {"write": {"user_ids": [w["id"] for w in writers]}},
                },
            )
            r.raise_for_status()
            note_id = r.json()["id"]
        document_id = f"note:{note_id}"
        tokens = [owner["token"], *(w["token"] for w in writers)]

        common: dict[str, Any] = {
            "url": server.url,
            "documentId": document_id,
            "mode": "edit",
            "edits": EDITS,
            "peers": 2,
        }
        first = await NodeClient.start(token=tokens[0], init=True, seed=11, **common)
        clients = [first]
        try:
            assert (await first.line())["event"] == "ready"
            for i, token in enumerate(tokens[1:], start=2):
                clients.append(await NodeClient.start(token=token, seed=11 * i, **common))
            for client in clients[1:]:
                assert (await client.line())["event"] == "ready"
            for client in clients:
                await client.go()
            finals = [await client.line(timeout=120) for client in clients]
        finally:
            for client in clients:
                await client.wait()

        for final in finals:
            assert final["errors"] == [] and final["received"] == 2 * EDITS, final
        texts = {final["text"] for final in finals}
        xmls = {final["xml"] for final in finals}
        assert len(texts) == 1 and len(xmls) == 1, finals
        [text], [xml] = texts, xmls
        assert text and xml == f"<paragraph>{text}</paragraph>"

        server_xml, server_text = xml_of(await server_state(server.url, owner["token"], document_id))
        assert (server_xml, server_text) == (xml, text)

        fourth = await read_via_node(server.url, writers[0]["token"], document_id)
        assert (fourth["xml"], fourth["text"]) == (xml, text)

        # The content the clients sent along (debounced save, flushed on leave) is the note's content.
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            note = (
                await http.get(
                    f"/api/v1/notes/{note_id}", headers={"Authorization": f"Bearer {owner['token']}"}
                )
            ).json()
        assert note["data"]["content"]["md"] == text

        await server.stop()
        # The log on disk was compacted (3 x 150 updates with a snapshot every 64) and rebuilds the same text.
        db = Database(f"sqlite+aiosqlite:///{server.data_dir / 'chatwire.db'}")
        try:
            stored = await SqlDocStore(db).load(document_id)
        finally:
            await db.close()
        assert any(stored.snapshot_flags) and stored.tail < 64 + 3
        doc: Doc = Doc()
        for update in stored.updates:
            doc.apply_update(update)
        assert xml_of(doc.get_update()) == (xml, text)

        await server.start()
        fifth = await read_via_node(server.url, writers[1]["token"], document_id)
        assert (fifth["xml"], fifth["text"]) == (xml, text)


async def test_y_protocols_awareness_of_a_vanished_client_is_cleared(server: RunningServer) -> None:
    """A real y-protocols Awareness sees a peer's cursor, and loses it when the peer's process dies."""
    _node_ready()
    ada, bob = await server.signup("Ada"), await server.signup("Bob")
    async with server.http(ada["token"]) as http:
        r = await http.post(
            "/api/v1/notes/create",
            json={"title": "aware", "access_control": {"write": {"user_ids": [bob["id"]]}}},
        )
        r.raise_for_status()
        document_id = f"note:{r.json()['id']}"
    common: dict[str, Any] = {"url": server.url, "documentId": document_id}
    watcher = await NodeClient.start(
        token=bob["token"], mode="watch", name="Bob", driver=AWARENESS_DRIVER, **common
    )
    announcer = None
    try:
        assert (await watcher.line())["event"] == "ready"
        announcer = await NodeClient.start(
            token=ada["token"], mode="announce", name="Ada", driver=AWARENESS_DRIVER, **common
        )
        ready = await announcer.line()
        assert ready["event"] == "ready" and ready["ack"] == {"ok": True}
        seen = await watcher.line()
        assert seen["event"] == "seen" and seen["clientID"] == ready["clientID"]
        assert seen["state"]["user"]["name"] == "Ada" and seen["user_id"] == ada["id"]
        assert announcer.proc.stdin is not None
        announcer.proc.stdin.write(b"vanish\n")
        await announcer.proc.stdin.drain()
        cleared = await watcher.line(timeout=30)
        assert cleared["event"] == "cleared" and cleared["clientID"] == ready["clientID"]
        assert {"document_id": document_id, "user_id": ada["id"]} in cleared["left"]
    finally:
        for client in (watcher, announcer):
            if client is not None:
                with contextlib.suppress(ProcessLookupError):
                    client.proc.kill()
                await client.wait()
