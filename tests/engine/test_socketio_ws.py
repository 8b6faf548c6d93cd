"""Socket.IO v5 server behaviour, checked frame by frame with a Node `ws` client (synchronous frame delivery).

Written from the protocol specification: what the server must answer to CONNECT, events, acks and binary
packets, and that any packet the protocol does not allow closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chatwire.engine.eio import EngineConfig
from tests.engine.harness import Engine, closed, running_engine, texts, until, ws_frames

OPEN = {"await": 1}  # the Engine.IO open packet


@pytest.fixture
async def engine() -> Any:
    async with running_engine() as running:
        yield running


def connected(events: list[dict[str, Any]], nsp: str = "") -> dict[str, Any]:
    """The sid of the CONNECT reply for `nsp` (asserting its shape)."""
    prefix = "40" + (nsp + "," if nsp else "")
    reply = next(t for t in texts(events) if t.startswith(prefix))
    body = json.loads(reply[len(prefix) :])
    assert set(body) == {"sid"} and isinstance(body["sid"], str)
    return body  # type: ignore[no-any-return]


async def test_connect_to_main_namespace_then_first_emit_in_order(engine: Engine) -> None:
    events = await ws_frames(engine.ws(), [OPEN, {"send": "40"}, {"await": 3}], linger=0)
    frames = texts(events)
    assert frames[0].startswith("0")
    connected(events)
    assert frames[1].startswith("40{") and frames[2] == '42["auth",{}]'


async def test_connect_with_auth_payload_and_custom_namespace(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": '40{"token":"123"}'},
            {"await": 3},
            {"send": '40/custom,{"token":"abc"}'},
            {"await": 5},
        ],
        linger=0,
    )
    frames = texts(events)
    assert frames[2] == '42["auth",{"token":"123"}]'
    assert connected(events, "/custom")["sid"] != connected(events)["sid"]
    assert frames[4] == '42/custom,["auth",{"token":"abc"}]'


async def test_unknown_namespace_gets_invalid_namespace_error_then_connect_timeout(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(), [OPEN, {"send": "40/random"}, {"await": 2}], autopong=True, linger=3000
    )
    assert texts(events)[1] == '44/random,{"message":"Invalid namespace"}'
    end = closed(events)
    assert end is not None and end["ms"] < 2500  # nothing connected: closed by the 1 s connect timeout


async def test_no_connect_closes_after_connect_timeout_even_with_pongs() -> None:
    # long heartbeat, so only the Socket.IO connect timeout can be what closes the connection
    config = EngineConfig(ping_interval_ms=5000, ping_timeout_ms=5000)
    async with running_engine(config, connect_timeout_ms=1000) as engine:
        events = await ws_frames(engine.ws(), [OPEN], autopong=True, linger=4000)
    end = closed(events)
    assert end is not None, events
    assert 900 <= end["ms"] < 2500, end


async def test_connected_client_is_not_closed_by_connect_timeout() -> None:
    config = EngineConfig(ping_interval_ms=300, ping_timeout_ms=200)
    async with running_engine(config, connect_timeout_ms=500) as engine:
        events = await ws_frames(
            engine.ws(), [OPEN, {"send": "40"}, {"await": 3}], autopong=True, linger=1500
        )
    assert closed(events) is None and events[-1]["type"] == "linger"
    assert texts(events, pings=True).count("2") >= 3  # sub-second pings kept coming and were answered


async def test_events_and_acks(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40"},
            {"await": 3},
            {"send": '42["message",1,"2",{"3":[true]}]'},
            {"send": '42456["message-with-ack",1,"2",{"3":[false]}]'},
            {"send": '421["boom"]'},  # a crashing handler: no ack, but the connection stays
            {"send": '4399["never asked"]'},  # an ack for nothing: ignored
            {"send": '427["join","r"]'},
            {"await": 6},
        ],
        autopong=True,
        linger=300,
    )
    frames = texts(events)
    assert frames[3:6] == [
        '42["message-back",1,"2",{"3":[true]}]',
        '43456[1,"2",{"3":[false]}]',
        '437["joined"]',
    ]
    assert closed(events) is None


async def test_binary_event_and_binary_ack(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40"},
            {"await": 3},
            {"send": '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'},
            {"bytes": [1, 2, 3]},
            {"bytes": [4, 5, 6]},
            {"await": 6},
            {"send": '451-789["message-with-ack",{"nested":{"_placeholder":true,"num":0}}]'},
            {"bytes": [9]},
            {"await": 8},
        ],
        linger=0,
    )
    got = [e for e in events if e["type"] in ("text", "binary") and e.get("data") != "2"][3:]
    assert (
        got[0]["data"] == '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    assert [got[1]["data"], got[2]["data"]] == [[1, 2, 3], [4, 5, 6]]
    assert got[3]["data"] == '461-789[{"nested":{"_placeholder":true,"num":0}}]'
    assert got[4] == {"type": "binary", "data": [9], "ms": got[4]["ms"]}


async def test_server_to_client_ack_round_trip(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40"},
            {"await": 3},
            {"send": '425["ask","why?"]'},
            {"await": 4},
            {"send": '430["because"]'},
            {"await": 5},
        ],
        linger=0,
    )
    frames = texts(events)
    assert frames[3] == '420["question","why?"]'  # the server's own ack id 0
    assert frames[4] == '435["because"]'


MALFORMED: list[tuple[str, list[dict[str, Any]]]] = [
    ("unknown packet type", [{"send": "4abc"}]),
    ("event payload not an array", [{"send": "42{}"}]),
    ("event name not a string", [{"send": "42[1,2]"}]),
    ("invalid ack id", [{"send": '42abc["message-with-ack",1]'}]),
    ("payload not JSON", [{"send": '42["message",'}]),
    ("unannounced binary frame", [{"bytes": [1, 2, 3]}]),
    ("binary packet without attachment count", [{"send": '45["message"]'}]),
    (
        "text while attachments are due",
        [{"send": '451-["message",{"_placeholder":true,"num":0}]'}, {"send": '42["message"]'}],
    ),
    ("placeholder out of range", [{"send": '451-["message",{"_placeholder":true,"num":3}]'}, {"bytes": [1]}]),
    ("too many attachments", [{"send": '4511-["message"]'}]),
    ("event for a namespace never joined", [{"send": '42/custom,["message"]'}]),
    ("second CONNECT to the same namespace", [{"send": "40"}]),
    ("ACK without id", [{"send": "43[1]"}]),
    ("client-sent CONNECT_ERROR", [{"send": '44{"message":"x"}'}]),
    ("unknown engine.io packet type", [{"send": "9"}]),
    ("upgrade packet outside an upgrade", [{"send": "5"}]),
]


@pytest.mark.parametrize("steps", [s for _, s in MALFORMED], ids=[name for name, _ in MALFORMED])
async def test_malformed_packets_close_the_connection(engine: Engine, steps: list[dict[str, Any]]) -> None:
    events = await ws_frames(engine.ws(), [OPEN, {"send": "40"}, {"await": 3}, *steps], linger=2000)
    end = closed(events)
    assert end is not None, events
    assert all(not t.startswith('42["message-back') for t in texts(events))


async def test_malformed_first_packet_closes_before_connect(engine: Engine) -> None:
    events = await ws_frames(engine.ws(), [OPEN, {"send": "4abc"}], linger=2000)
    end = closed(events)
    assert end is not None and end["ms"] < 900  # at once, not by the 1 s connect timeout


async def test_disconnect_from_namespace_keeps_the_engine_connection(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40"},
            {"await": 3},
            {"send": "40/custom"},
            {"await": 5},
            {"send": "41/custom"},
            {"send": '42["message","still here"]'},
            {"await": 6},
            {"send": '42/custom,["message"]'},  # no longer joined: a protocol violation
        ],
        autopong=True,
        linger=1500,
    )
    assert texts(events)[5] == '42["message-back","still here"]'
    assert closed(events) is not None


async def test_rooms_reach_members_only() -> None:
    async with running_engine(EngineConfig(ping_interval_ms=5000, ping_timeout_ms=5000)) as engine:
        # both stay open long enough for the shouter's Node process to start, even on a loaded machine
        member = asyncio.create_task(
            ws_frames(
                engine.ws(), [OPEN, {"send": "40"}, {"await": 3}, {"send": '421["join","r"]'}], linger=6000
            )
        )
        outsider = asyncio.create_task(
            ws_frames(engine.ws(), [OPEN, {"send": "40"}, {"await": 3}], linger=6000)
        )
        main = engine.server.of("/")
        await until(lambda: len(main.sockets) == 2 and len(main.rooms.get("r", {})) == 1)
        shouter = await ws_frames(
            engine.ws(),
            [
                OPEN,
                {"send": "40"},
                {"await": 3},
                {"send": '421["join","r"]'},
                {"await": 4},
                {"send": '422["shout","r","hello"]'},
                {"await": 5},
            ],
            linger=200,
        )
        member_frames, outsider_frames = texts(await member), texts(await outsider)
    assert texts(shouter)[4] == "432[1]"  # reached one socket: the other member, not the shouter itself
    assert '42["heard","hello"]' in member_frames
    assert not any("heard" in t for t in outsider_frames)
    assert not any("heard" in t for t in texts(shouter))


@pytest.mark.parametrize("ws", ["chatwire", "websockets-sansio", "wsproto"])
async def test_same_wire_behaviour_on_each_uvicorn_websocket_protocol(ws: str) -> None:
    """The engine relies on ASGI alone: chatwire's own protocol and each of uvicorn's must give the same frames."""
    async with running_engine(ws=ws) as engine:
        events = await ws_frames(
            engine.ws(),
            [
                OPEN,
                {"send": "40"},
                {"await": 3},
                {"send": '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'},
                {"bytes": [1]},
                {"bytes": [2]},
                {"await": 6},
                {"send": "42{}"},
            ],
            autopong=True,
            linger=2000,
        )
    frames = [e for e in events if e["type"] in ("text", "binary") and e.get("data") != "2"]
    assert frames[3]["data"].startswith('452-["message-back"')
    assert [frames[4]["data"], frames[5]["data"]] == [[1], [2]]
    assert closed(events) is not None


async def test_connect_handler_may_refuse_and_nothing_it_emitted_leaks(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40/private,"},
            {"await": 2},
            {"send": '40/private,{"key":"quiet"}'},
            {"await": 3},
            {"send": '40/private,{"key":"open"}'},
            {"await": 5},
        ],
        autopong=True,
        linger=0,
    )
    frames = texts(events)
    assert frames[1] == '44/private,{"message":"nope","data":{"why":1}}'
    assert frames[2] == '44/private,{"message":"Connection refused"}'
    assert frames[3].startswith("40/private,{") and frames[4] == '42/private,["never-seen"]'  # after CONNECT
    assert frames.count('42/private,["never-seen"]') == 1


async def test_server_side_namespace_disconnect(engine: Engine) -> None:
    events = await ws_frames(
        engine.ws(),
        [
            OPEN,
            {"send": "40"},
            {"await": 3},
            {"send": '42["leave-me"]'},
            {"await": 4},
            {"send": '42["message"]'},
        ],
        autopong=True,
        linger=2000,
    )
    assert texts(events)[3] == "41"
    assert (
        closed(events) is not None
    )  # an event for the namespace it was removed from is a protocol violation


async def test_a_flooding_connection_runs_few_handlers_at_once_in_order_and_survives(engine: Engine) -> None:
    """Past `max_handlers` coroutine handlers in flight, a socket's events wait in arrival order (their handlers
    not called yet), up to `max_waiting`; the ones past that get the refusal ack, and the connection stays."""
    server = engine.server
    server.max_handlers, server.max_waiting = 2, 3
    server.event_refusal = lambda _socket, event: {"refused": event}
    gate = asyncio.Event()
    started: list[int] = []
    running = 0
    most = 0

    async def slow(_socket: Any, n: int) -> int:
        nonlocal running, most
        started.append(n)
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return n

    server.of("/").on("slow")(slow)
    flood = [{"send": f'42{n}["slow",{n}]'} for n in range(7)]
    still_here = [{"send": '4299["message-with-ack","still here"]'}, {"await": 11}]
    client = asyncio.create_task(
        ws_frames(
            engine.ws(),
            [OPEN, {"send": "40"}, {"await": 3}, *flood, {"await": 5}, {"await": 10}, *still_here],
            autopong=True,
            linger=300,
        )
    )
    socket = await _socket_when(engine, lambda s: s.handlers_in_flight == 2 and s.events_waiting == 3)
    assert started == [0, 1] and server.events_refused == 2
    gate.set()
    events = await client
    frames = texts(events)
    assert frames[3:5] == ['435[{"refused":"slow"}]', '436[{"refused":"slow"}]']
    assert sorted(frames[5:10]) == [f"43{n}[{n}]" for n in range(5)]
    assert frames[10] == '4399["still here"]'
    assert started == [0, 1, 2, 3, 4] and most == 2
    assert closed(events) is None and socket.handlers_in_flight == 0 and socket.events_waiting == 0


async def _socket_when(engine: Engine, condition: Any) -> Any:
    """The first socket of `/` for which `condition` holds, once it does."""
    found: list[Any] = []

    def check() -> bool:
        found[:] = [s for s in engine.server.of("/").sockets.values() if condition(s)]
        return bool(found)

    await until(check)
    return found[0]
