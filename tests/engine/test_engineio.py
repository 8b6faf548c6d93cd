"""Engine.IO v4 server behaviour over real HTTP and WebSocket: handshake, status codes, heartbeat, upgrade, limits.

Written from the Engine.IO specification; raw clients (httpx, a Node `ws` peer) so every byte is visible.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from typing import Any

import httpx
import pytest

from chatwire.engine.eio import EngineConfig
from chatwire.engine.state import EioState
from tests.engine.harness import Engine, closed, running_engine, texts, until, ws_frames

HANDSHAKE_KEYS = {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}


@pytest.fixture
async def engine() -> Any:
    # most sessions here never send a Socket.IO CONNECT; a long connect timeout keeps it from ending them
    async with running_engine(connect_timeout_ms=10_000) as running:
        yield running


async def test_polling_handshake_advertises_sub_second_intervals_exactly() -> None:
    config = EngineConfig(ping_interval_ms=250, ping_timeout_ms=150, max_payload=4096)
    async with running_engine(config, connect_timeout_ms=10_000) as engine, engine.http() as client:
        body = await engine.handshake(client)
    assert set(body) == HANDSHAKE_KEYS
    assert body["pingInterval"] == 250 and body["pingTimeout"] == 150 and body["maxPayload"] == 4096
    assert body["upgrades"] == ["websocket"]


async def test_websocket_handshake_offers_no_upgrades(engine: Engine) -> None:
    events = await ws_frames(engine.ws(), [{"await": 1}], linger=0)
    body = json.loads(texts(events)[0][1:])
    assert set(body) == HANDSHAKE_KEYS and body["upgrades"] == [] and body["pingInterval"] == 300


@pytest.mark.parametrize(
    ("method", "query", "code"),
    [
        ("GET", "transport=polling", 5),
        ("GET", "EIO=abc&transport=polling", 5),
        ("GET", "EIO=3&transport=polling", 5),
        ("GET", "EIO=4", 0),
        ("GET", "EIO=4&transport=abc", 0),
        ("GET", "EIO=4&transport=websocket", 3),  # a plain GET that is no WebSocket upgrade
        ("POST", "EIO=4&transport=polling", 2),
        ("PUT", "EIO=4&transport=polling", 2),
        ("GET", "EIO=4&transport=polling&sid=unknown", 1),
        ("POST", "EIO=4&transport=polling&sid=unknown", 1),
    ],
)
async def test_bad_requests_get_400_with_engine_io_error_codes(
    engine: Engine, method: str, query: str, code: int
) -> None:
    async with engine.http() as client:
        r = await client.request(
            method, f"{engine.url}/socket.io/?{query}", content=b"4x" if method != "GET" else None
        )
    assert r.status_code == 400
    assert r.json()["code"] == code


async def test_bad_method_on_a_live_session_is_400(engine: Engine) -> None:
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        r = await client.put(engine.eio(sid=sid), content=b"4x")
        assert r.status_code == 400


@pytest.mark.parametrize(
    "query", ["transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc"]
)
async def test_bad_websocket_query_is_refused(engine: Engine, query: str) -> None:
    events = await ws_frames(f"ws://127.0.0.1:{engine.port}/socket.io/?{query}", [], linger=1000)
    assert events[0]["type"] in ("http", "error", "close"), events
    assert not any(e["type"] == "open" for e in events)


async def test_polling_heartbeat_and_ping_timeout() -> None:
    # sub-second interval; the pong window is wider than the suite's 200 ms so a loaded machine can keep up.
    # No Socket.IO CONNECT is sent, so the connect timeout is long enough not to end the session first.
    config = EngineConfig(ping_interval_ms=300, ping_timeout_ms=600)
    async with running_engine(config, connect_timeout_ms=10_000) as engine, engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        for _ in range(3):
            started = time.monotonic()
            r = await client.get(engine.eio(sid=sid))
            assert (r.status_code, r.text) == (200, "2")
            assert 0.25 < time.monotonic() - started < 0.9  # the poll waits for the 300 ms ping
            assert (await client.post(engine.eio(sid=sid), content=b"3")).status_code == 200
        # no pong this time: the session ends 600 ms after the ping
        r = await client.get(engine.eio(sid=sid))
        assert r.text == "2"
        await asyncio.sleep(0.7)
        assert (await client.get(engine.eio(sid=sid))).status_code == 400


async def test_websocket_heartbeat_interval_and_timeout(engine: Engine) -> None:
    answered = await ws_frames(engine.ws(), [], autopong=True, linger=1600)
    pings = [e["ms"] for e in answered if e.get("data") == "2"]
    assert len(pings) >= 3 and closed(answered) is None
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(g >= 250 for g in gaps) and sorted(gaps)[len(gaps) // 2] < 500, gaps  # never early; ~300 ms
    ignored = await ws_frames(engine.ws(), [], linger=3000)
    end = closed(ignored)
    assert end is not None and 450 <= end["ms"] <= 2000, end  # no pong: ping at 300 ms, closed 200 ms later


async def test_client_close_over_polling_releases_the_waiting_poll(engine: Engine) -> None:
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        poll = asyncio.create_task(client.get(engine.eio(sid=sid)))
        await asyncio.sleep(0.05)
        assert (await client.post(engine.eio(sid=sid), content=b"1")).status_code == 200
        r = await poll
        assert (r.status_code, r.text) == (200, "6")
        assert (await client.get(engine.eio(sid=sid))).status_code == 400


async def test_overlapping_polls_are_400_and_close_the_session(engine: Engine) -> None:
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        first = asyncio.create_task(client.get(engine.eio(sid=sid)))
        await asyncio.sleep(0.05)
        second = await client.get(engine.eio(sid=sid))
        assert second.status_code == 400
        assert (await first).status_code == 200  # released with a close packet
        assert (await client.get(engine.eio(sid=sid))).status_code == 400


async def test_polling_post_with_many_packets_delivers_every_one(engine: Engine) -> None:
    """More than 16 packets in one POST (socket.io-client batches that way): all handled, none dropped."""
    count = 40
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        assert (await client.post(engine.eio(sid=sid), content=b"40")).status_code == 200
        r = await client.get(engine.eio(sid=sid))
        assert r.text.split("\x1e")[1] == '42["auth",{}]'
        payload = "\x1e".join(f'42{i}["message-with-ack",{i}]' for i in range(count))
        assert (await client.post(engine.eio(sid=sid), content=payload.encode())).status_code == 200
        got: list[str] = []
        while len(got) < count:
            r = await client.get(engine.eio(sid=sid))
            got += [p for p in r.text.split("\x1e") if p != "2"]
    assert got == [f"43{i}[{i}]" for i in range(count)]


async def test_binary_over_polling_is_base64_both_ways(engine: Engine) -> None:
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        await client.post(engine.eio(sid=sid), content=b"40")
        await client.get(engine.eio(sid=sid))
        blob = base64.b64encode(bytes([0, 1, 255])).decode()
        payload = '451-["message",{"_placeholder":true,"num":0}]\x1eb' + blob
        assert (await client.post(engine.eio(sid=sid), content=payload.encode())).status_code == 200
        r = await client.get(engine.eio(sid=sid))
        assert r.text.split("\x1e") == ['451-["message-back",{"_placeholder":true,"num":0}]', "b" + blob]
        bad = await client.post(engine.eio(sid=sid), content=b"b!!notbase64")
        assert bad.status_code == 400
        assert (await client.get(engine.eio(sid=sid))).status_code == 400


async def test_payload_limits() -> None:
    config = EngineConfig(ping_interval_ms=5000, ping_timeout_ms=5000, max_payload=1000)
    async with running_engine(config, connect_timeout_ms=10_000) as engine, engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        r = await client.post(engine.eio(sid=sid), content=b"4" + b"x" * 2000)
        assert r.status_code == 413
        assert (await client.get(engine.eio(sid=sid))).status_code == 400
        events = await ws_frames(engine.ws(), [{"await": 1}, {"send": "4" + "x" * 2000}], linger=2000)
        end = closed(events)
        assert end is not None and end["code"] == 1009


async def test_cors() -> None:
    config = EngineConfig(cors_allowed_origins=["https://good.example"])
    async with running_engine(config, connect_timeout_ms=10_000) as engine, engine.http() as client:
        pre = await client.options(
            engine.eio(),
            headers={"Origin": "https://good.example", "Access-Control-Request-Headers": "content-type"},
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://good.example"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-allow-headers"] == "content-type"
        ok = await client.get(engine.eio(), headers={"Origin": "https://good.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-credentials"] == "true"
        bad = await client.get(engine.eio(), headers={"Origin": "https://evil.example"})
        assert bad.status_code == 403 and bad.json()["code"] == 4
        assert "access-control-allow-origin" not in bad.headers


async def test_requests_outside_the_engine_path_are_404(engine: Engine) -> None:
    async with engine.http() as client:
        assert (await client.get(f"{engine.url}/elsewhere")).status_code == 404


SLOW = EngineConfig(ping_interval_ms=5000, ping_timeout_ms=5000)  # no heartbeat gets in the way of an upgrade


@pytest.fixture
async def slow_engine() -> Any:
    async with running_engine(SLOW, connect_timeout_ms=10_000) as running:
        yield running


async def _probe_steps(upgrade: bool) -> list[dict[str, Any]]:
    """Probe, and (like a real client, once its poll has been released) complete the upgrade."""
    steps: list[dict[str, Any]] = [{"send": "2probe"}, {"await": 1}]
    if upgrade:
        steps += [{"sleep": 250}, {"send": "5"}]
    return steps


async def test_upgrade_moves_the_session_and_rejects_old_transport(slow_engine: Engine) -> None:
    engine = slow_engine
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        await client.post(engine.eio(sid=sid), content=b"40")
        poll = asyncio.create_task(client.get(engine.eio(sid=sid)))  # gets the CONNECT reply and auth event
        first = await poll
        assert first.text.startswith("40")
        waiting = asyncio.create_task(client.get(engine.eio(sid=sid)))
        ws = asyncio.create_task(
            ws_frames(
                engine.ws(sid),
                [
                    *await _probe_steps(True),
                    {"sleep": 200},
                    {"send": '42["message","over ws"]'},
                    {"await": 2},
                ],
                autopong=True,
                linger=6000,  # open until the second WebSocket below has been turned away
            )
        )
        released = await waiting
        assert (released.status_code, released.text) == (200, "6")  # the probe released the waiting poll
        await asyncio.sleep(0.5)  # the client sends "5" 250 ms after the probe
        assert (await client.get(engine.eio(sid=sid))).status_code == 400
        assert (await client.post(engine.eio(sid=sid), content=b"3")).status_code == 400
        second = await ws_frames(engine.ws(sid), [], linger=1000)
        assert closed(second) is not None and not any(e["type"] == "text" for e in second)
        events = await ws
    assert texts(events) == ["3probe", '42["message-back","over ws"]']


async def test_abandoned_upgrade_is_no_busy_loop() -> None:
    config = EngineConfig(ping_interval_ms=5000, ping_timeout_ms=5000, upgrade_timeout_ms=800)
    async with running_engine(config, connect_timeout_ms=10_000) as engine, engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        probe = asyncio.create_task(ws_frames(engine.ws(sid), await _probe_steps(False), linger=3000))
        await asyncio.sleep(0.2)  # the probe is answered; the client never sends "5" and keeps polling
        answered = 0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            r = await client.get(engine.eio(sid=sid))
            assert r.status_code == 200 and set(r.text.split("\x1e")) <= {"6"}
            answered += 1
        assert answered <= 8, answered  # at most one noop per 100 ms, not one per request
        events = await probe
        assert texts(events) == ["3probe"] and closed(events) is not None  # upgrade timeout closed the probe
        # back to plain polling: a poll now waits for data instead of returning at once
        waiting = asyncio.create_task(client.get(engine.eio(sid=sid)))
        await client.post(engine.eio(sid=sid), content=b"40")
        r = await waiting
        assert r.text.startswith("40")


async def test_second_websocket_during_upgrade_is_closed(slow_engine: Engine) -> None:
    engine = slow_engine
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        # the first stays open long enough for a second Node process to start, even on a loaded machine
        first = asyncio.create_task(ws_frames(engine.ws(sid), await _probe_steps(False), linger=6000))
        await until(lambda: engine.server.engine.sessions[sid].state is EioState.UPGRADING)
        second = await ws_frames(engine.ws(sid), [{"send": "2probe"}], linger=800)
        assert "3probe" not in texts(second) and closed(second) is not None
        assert texts(await first) == ["3probe"]


async def test_http_client_sees_upgrade_status_codes_with_httpx_only(engine: Engine) -> None:
    """Without any WebSocket: a session's sid works for GET/POST, and a closed session is 400 for both."""
    async with httpx.AsyncClient(timeout=5) as client:
        sid = (await engine.handshake(client))["sid"]
        assert (await client.post(engine.eio(sid=sid), content=b"1")).status_code == 200
        assert (await client.get(engine.eio(sid=sid))).status_code == 400
        assert (await client.post(engine.eio(sid=sid), content=b"3")).status_code == 400


async def test_websocket_origin_check() -> None:
    config = EngineConfig(cors_allowed_origins=["https://good.example"])
    async with running_engine(config, connect_timeout_ms=10_000) as engine:
        import websockets

        async with websockets.connect(engine.ws(), origin="https://good.example") as ok:  # type: ignore[arg-type]
            assert str(await ok.recv()).startswith("0")
        async with websockets.connect(engine.ws()) as no_origin:  # a non-browser client
            assert str(await no_origin.recv()).startswith("0")
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(engine.ws(), origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403


async def test_second_websocket_before_the_first_probes_is_closed(slow_engine: Engine) -> None:
    """Only one WebSocket may try to take a session over, even before it has sent its probe."""
    engine = slow_engine
    async with engine.http() as client:
        sid = (await engine.handshake(client))["sid"]
        first = asyncio.create_task(
            ws_frames(
                engine.ws(sid),
                [{"sleep": 700}, *await _probe_steps(True), {"send": "2"}, {"await": 2}],
                autopong=True,
                linger=6000,  # stays open until the second has been turned away, however slowly it starts
            )
        )
        await until(lambda: engine.server.engine.sessions[sid].upgrade_candidate)  # open, not probed yet
        second = await ws_frames(engine.ws(sid), [{"send": "2probe"}], linger=800)
        assert "3probe" not in texts(second) and closed(second) is not None
        assert texts(await first) == ["3probe", "3"]  # upgraded: its own ping is answered over this socket


async def test_an_idle_websocket_session_has_no_writer_task_one_timer_and_pongs_that_skip_the_app(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On chatwire's own WebSocket protocol (the DIRECT extension): the session writes on the connection itself
    (no writer task), its heartbeat is one timer moved for each ping and pong, and a pong is handled in the
    connection's data path without waking the app's task (issue 18: idle CPU and memory per connection)."""
    import websockets

    if os.environ.get("CHATWIRE_ENGINE_WS"):
        pytest.skip("runs on one of uvicorn's WebSocket protocols, which has no DIRECT extension")
    eio = engine.server.engine
    seen: list[Any] = []
    receive_frame = eio.receive_frame

    async def spy(session: Any, frame: Any) -> None:
        seen.append(frame)
        await receive_frame(session, frame)

    monkeypatch.setattr(eio, "receive_frame", spy)
    async with websockets.connect(engine.ws()) as ws:
        assert str(await ws.recv()).startswith("0")
        await ws.send("40")
        assert str(await ws.recv()).startswith("40")
        pings = 0
        while pings < 4:  # ping 300 ms, timeout 200 ms: the session lives only if every pong counts
            if await ws.recv() == "2":
                pings += 1
                await ws.send("3")
        session = next(iter(eio.sessions.values()))
        assert session.state is EioState.WEBSOCKET
        names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
        assert not [n for n in names if "_ws_writer" in n]
        assert names.count("EngineWebSocketProtocol.run_app") == 1
        assert len(eio.heartbeats) == 1 and len(eio.wheel) == 0  # the connect timeout went with the CONNECT
    assert seen == ["40"]
