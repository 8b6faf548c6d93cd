"""deploy/nginx.conf, run by Debian's nginx over TLS in front of a two-process fleet (Redis + PostgreSQL):
a websocket client and a long-polling client on different processes talk through a channel, and the per-IP
limits count the client address nginx puts in X-Forwarded-For, never the proxy's own, never one the client
claims.

Clients connect from different loopback source addresses (127.0.0.2, 127.0.0.3, ...: Linux routes all of
127/8 to lo), so nginx sees distinct client IPs. nginx runs as a non-daemon child process with a temporary
prefix; the site file is deploy/nginx.conf with only ports, certificate paths and listen addresses replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio

from tests.conftest import REDIS_URL, free_port, postgres_database, requirement_missing
from tests.deploytools import REPO, clean_env, nginx_binary, running

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

CONNECT_BURST = 3


def site_config(backends: list[int], https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx.conf with the test's ports and certificate (and IPv4 loopback listeners only)."""
    text = (REPO / "deploy" / "nginx.conf").read_text()
    text = text.replace("server 127.0.0.1:8081 ", f"server 127.0.0.1:{backends[0]} ")
    text = text.replace("server 127.0.0.1:8082 ", f"server 127.0.0.1:{backends[1]} ")
    text = re.sub(r"^\s*listen \[::\].*\n", "", text, flags=re.M)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", text)
    assert str(backends[1]) in text and str(https_port) in text and str(cert) in text
    return text


def main_config(prefix: Path, site: Path) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
user root;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


@contextlib.contextmanager
def nginx(tmp: Path, backends: list[int]) -> Iterator[str]:
    binary = nginx_binary()
    if binary is None:
        requirement_missing("nginx is not installed (.ci/run installs Debian's nginx)")
    prefix = tmp / "nginx"
    prefix.mkdir()
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    https_port, http_port = free_port(), free_port()
    site = prefix / "chatwire.conf"
    site.write_text(site_config(backends, https_port, http_port, cert, key))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    argv = [str(binary), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    tested = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stderr
    url = f"https://127.0.0.1:{https_port}"
    with running(argv, env=clean_env(), cwd=prefix, log=prefix / "stdout.log", health_url=None) as proc:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", verify=False, timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, (prefix / "error.log").read_text()
            subprocess.run(["sleep", "0.1"], check=True)
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/x", timeout=5)
        assert redirect.status_code == 301 and redirect.headers["location"].startswith("https://")
        yield url


@contextlib.asynccontextmanager
async def fleet(tmp: Path) -> AsyncIterator[tuple[list[int], list[Path]]]:
    """Two `chatwire serve --no-migrate` processes on shared Redis and a fresh PostgreSQL database, migrated
    once by `chatwire migrate` (as the systemd unit does)."""
    async with postgres_database() as db_url:
        env = clean_env(
            CHATWIRE_DATABASE_URL=db_url,
            CHATWIRE_REDIS_URL=REDIS_URL,
            CHATWIRE_REDIS_PREFIX=f"cw-nginx-{uuid.uuid4().hex[:8]}:",
            CHATWIRE_JWT_SECRET="nginx-fleet-" + "s" * 32,
            CHATWIRE_TRANSPORTS="websocket,polling",
            CHATWIRE_LOG_FORMAT="text",
            CHATWIRE_RATE_LIMIT_IP_CONNECTS="0.001",
            CHATWIRE_RATE_LIMIT_IP_CONNECT_BURST=str(CONNECT_BURST),
            FORWARDED_ALLOW_IPS="127.0.0.1",
        )
        migrated = subprocess.run(
            [sys.executable, "-m", "chatwire", "migrate"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        ports = [free_port(), free_port()]
        logs = [tmp / f"chatwire-{p}.log" for p in ports]
        with contextlib.ExitStack() as stack:
            for port, log in zip(ports, logs, strict=True):
                stack.enter_context(
                    running(
                        [sys.executable, "-m", "chatwire", "serve", "--no-migrate", "--port", str(port)],
                        env=env,
                        cwd=tmp,
                        log=log,
                        health_url=f"http://127.0.0.1:{port}/health",
                    )
                )
            yield ports, logs


class Client:
    """A python-socketio client whose connections leave from loopback address `source`."""

    def __init__(self, url: str, source: str, transport: str, headers: dict[str, str] | None = None) -> None:
        self.url, self.source, self.transport, self.headers = url, source, transport, headers or {}
        self.http: aiohttp.ClientSession | None = None
        self.sio: socketio.AsyncClient | None = None
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.connect_error: Any = None

    async def connect(self, token: str, *, join: bool = True) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.source, 0), ssl=False)
        self.http = aiohttp.ClientSession(connector=connector)
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self.http, ssl_verify=False)

        @self.sio.on("*")
        async def any_event(event: str, *args: Any) -> None:
            self.received[event].append(args[0] if len(args) == 1 else list(args))

        @self.sio.event
        async def connect_error(data: Any) -> None:
            self.connect_error = data

        await asyncio.wait_for(
            self.sio.connect(
                self.url,
                auth={"token": token},
                headers=self.headers,
                socketio_path="ws/socket.io",
                transports=[self.transport],
                wait_timeout=10,
            ),
            30,
        )
        if join:
            ack = await self.sio.call("user-join", {"auth": {"token": token}}, timeout=10)
            assert "error" not in ack, ack

    async def close(self) -> None:
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sio.disconnect(), 15)
        if self.http is not None:
            await asyncio.wait_for(self.http.close(), 15)

    async def wait_for(self, event: str, predicate: Any, timeout: float = 10) -> Any:
        for _ in range(int(timeout / 0.05)):
            for item in self.received[event]:
                if predicate(item):
                    return item
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.source} never got {event}: {dict(self.received)}")


def sessions_on(port: int) -> dict[str, int]:
    """Live sessions of one backend by transport, read from its /metrics directly (not through nginx)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        m[0]: int(float(m[1]))
        for m in re.findall(r'^chatwire_sessions\{transport="(\w+)"\} (\S+)$', text, re.M)
    }


async def test_websocket_and_polling_through_nginx_with_client_ips(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (ports, logs):
        with nginx(tmp_path, ports) as url:
            async with httpx.AsyncClient(base_url=url, verify=False, timeout=10) as http:

                async def signup(name: str) -> dict[str, Any]:
                    r = await http.post(
                        "/api/v1/auths/signup",
                        json={
                            "name": name,
                            "email": f"{name.lower()}@example.com",
                            "password": "pw-12345678",
                        },
                    )
                    assert r.status_code == 200, r.text
                    return r.json()  # type: ignore[no-any-return]

                ada, bob = await signup("Ada"), await signup("Bob")
                auth = {"Authorization": f"Bearer {ada['token']}"}
                made = await http.post(
                    "/api/v1/channels/create",
                    json={"name": "ops", "type": "group", "user_ids": [bob["id"]]},
                    headers=auth,
                )
                assert made.status_code == 200, made.text
                channel = made.json()["id"]

                # Ada on a websocket; Bob long-polling, from addresses that land on the other process.
                ada_ws = Client(url, "127.0.0.2", "websocket")
                await ada_ws.connect(ada["token"])
                ada_port = next(p for p in ports if sessions_on(p).get("websocket"))
                bob_poll: Client | None = None
                for last in range(3, 40):
                    candidate = Client(url, f"127.0.0.{last}", "polling")
                    await candidate.connect(bob["token"])
                    if any(sessions_on(p).get("polling") for p in ports if p != ada_port):
                        bob_poll = candidate
                        break
                    await candidate.close()
                assert bob_poll is not None, "no source address hashed to the second process"
                try:
                    # A REST post through nginx reaches the polling client on the other process.
                    posted = await http.post(
                        f"/api/v1/channels/{channel}/messages/post",
                        json={"content": "hello from ada"},
                        headers=auth,
                    )
                    assert posted.status_code == 200, posted.text

                    def is_message(text: str) -> Any:
                        return lambda e: (
                            e.get("data", {}).get("type") == "message"
                            and e["data"]["data"]["content"] == text
                        )

                    await bob_poll.wait_for("events:channel", is_message("hello from ada"))
                    await ada_ws.wait_for("events:channel", is_message("hello from ada"))
                    # Socket events upstream over long-polling reach the websocket client.
                    ack = await bob_poll.sio.call(  # type: ignore[union-attr]
                        "events:channel",
                        {"channel_id": channel, "data": {"type": "typing", "data": {"typing": True}}},
                    )
                    assert ack == {"ok": True}, ack
                    await ada_ws.wait_for(
                        "events:channel", lambda e: e.get("data", {}).get("type") == "typing"
                    )
                    assert sessions_on(ada_port).get("websocket") == 1
                finally:
                    await bob_poll.close()
                    await ada_ws.close()

            # Per-IP connect limit: a client at 127.0.0.50 that claims to be 203.0.113.9 gets CONNECT_BURST
            # connects, then is refused as 127.0.0.50; another address still connects. Without nginx's header
            # every client would count as 127.0.0.1 and all of them would have been refused long before.
            spoofed = {"X-Forwarded-For": "203.0.113.9"}
            for _ in range(CONNECT_BURST):
                client = Client(url, "127.0.0.50", "websocket", spoofed)
                await client.connect(ada["token"], join=False)
                await client.close()
            refused = Client(url, "127.0.0.50", "websocket", spoofed)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(ada["token"], join=False)
            await refused.close()
            assert refused.connect_error == {
                "message": "too many connections from this address",
                "data": {"code": "rate_limited"},
            }
            other = Client(url, "127.0.0.51", "websocket")
            await other.connect(ada["token"], join=False)
            await other.close()

        text = "".join(log.read_text() for log in logs)
        assert re.search(r"connect refused .*remote=127\.0\.0\.50 .*ip connect rate", text), text[-3000:]
        assert "remote=127.0.0.51" in text and "remote=127.0.0.2 " in text
        assert "203.0.113.9" not in text  # the client's own claim never reached chatwire
        assert "remote=127.0.0.1 " not in text  # nobody was counted as the proxy
