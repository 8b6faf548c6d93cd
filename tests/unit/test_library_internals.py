"""The library internals chatwire/transport relies on exist, with the signatures it calls them with, on the
installed versions of python-socketio, python-engineio and uvicorn.

chatwire overrides private methods of python-socketio's server and manager, replaces python-engineio's websocket
handler, ping task and packet queue, and subclasses uvicorn's sans-I/O websocket protocol with slots. A release
that renames or reshapes one of these would not fail at import: the override would silently never run (the fast
path falling back to the stock one, pings back in a task per connection) or fail per connection. This test names
every such internal so that an upgrade (a new lock file, the lowest allowed versions) fails here first.
`make test` runs it in the locked virtualenv and in the one built from the lowest allowed versions.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import engineio
import pytest
import socketio
from engineio.async_socket import AsyncSocket

from chatwire.transport import uvicorn_ws


def params(func: Any) -> list[str]:
    """The parameter names of `func` (self included for plain functions read from a class)."""
    return list(inspect.signature(func).parameters)


# python-socketio's AsyncServer: methods chatwire's server overrides or calls (sio_server.py, recovery.py).
SOCKETIO_SERVER_METHODS = {
    "_handle_event": ["self", "eio_sid", "namespace", "id", "data"],
    "_handle_eio_message": ["self", "eio_sid", "data"],
    "_send_packet": ["self", "eio_sid", "pkt"],
    "_send_eio_packet": ["self", "eio_sid", "eio_pkt"],
    "_handle_connect": ["self", "eio_sid", "namespace", "data"],
    "_engineio_server_class": ["self"],
}

# python-socketio's AsyncManager / BaseManager: overridden by recovery.py and fleet.py, read by fastpath.py.
SOCKETIO_MANAGER_METHODS = {
    "pre_connect": ["self", "eio_sid", "namespace"],
    "basic_enter_room": ["self", "sid", "namespace", "room"],
    "basic_leave_room": ["self", "sid", "namespace", "room"],
    "basic_disconnect": ["self", "sid", "namespace"],
    "eio_sid_from_sid": ["self", "sid", "namespace"],
    "sid_from_eio_sid": ["self", "eio_sid", "namespace"],
    "is_connected": ["self", "sid", "namespace"],
    "emit": ["self", "event", "data", "namespace", "room", "skip_sid", "callback"],
}


@pytest.mark.parametrize("name", sorted(SOCKETIO_SERVER_METHODS))
def test_socketio_server_private_methods(name: str) -> None:
    method = getattr(socketio.AsyncServer, name, None)
    assert method is not None, f"python-socketio {socketio.__version__}: AsyncServer.{name} is gone"
    assert params(method)[: len(SOCKETIO_SERVER_METHODS[name])] == SOCKETIO_SERVER_METHODS[name]


def test_socketio_server_disconnect_takes_a_reason() -> None:
    # chatwire passes Engine.IO's disconnect reason through (python-socketio 5.12 / engineio 4.11 and later).
    assert params(socketio.AsyncServer._handle_eio_disconnect)[:3] == ["self", "eio_sid", "reason"]


@pytest.mark.parametrize("name", sorted(SOCKETIO_MANAGER_METHODS))
def test_socketio_manager_methods(name: str) -> None:
    method = getattr(socketio.AsyncManager, name, None)
    assert method is not None, f"python-socketio: AsyncManager.{name} is gone"
    expected = SOCKETIO_MANAGER_METHODS[name]
    assert params(method)[: len(expected)] == expected


def test_socketio_server_instance_state() -> None:
    """Attributes read off a live server: the Engine.IO drivers table (the websocket driver is wrapped), the
    per-session environ, the half-received binary packets, and the manager's rooms table {ns: {room: {sid:
    eio_sid}}} that the fast broadcast walks."""
    sio = socketio.AsyncServer(async_mode="asgi")
    assert isinstance(sio.eio._async, dict) and sio.eio._async.get("websocket") is not None
    assert isinstance(sio.environ, dict)
    assert isinstance(sio._binary_packet, dict)
    assert isinstance(sio.eio.sockets, dict)
    assert sio.packet_class is not None
    sio.manager.basic_enter_room("sid-1", "/", None, eio_sid="eio-1")
    sio.manager.basic_enter_room("sid-1", "/", "room-1", eio_sid="eio-1")
    rooms = sio.manager.rooms
    assert isinstance(rooms, dict) and isinstance(rooms["/"], dict)
    assert dict(rooms["/"]["room-1"]) == {"sid-1": "eio-1"}, "rooms must map sid -> eio_sid"
    assert sio.manager.eio_sid_from_sid("sid-1", "/") == "eio-1"


def test_engineio_socket_internals() -> None:
    """LeanWebSocket (eio_ws.py) stands in for AsyncSocket._websocket_handler; the ping wheel replaces the task
    that runs AsyncSocket._send_ping; both drive the socket through these attributes and methods."""
    assert params(AsyncSocket._websocket_handler) == ["self", "ws"]
    assert params(AsyncSocket._send_ping) == ["self"]
    assert params(AsyncSocket.receive)[:2] == ["self", "pkt"]
    assert {"wait", "abort", "reason"} <= set(params(AsyncSocket.close))
    server = engineio.AsyncServer(async_mode="asgi")
    sock = AsyncSocket(server, "sid-1")
    for attr in ("server", "queue", "closing", "closed", "connected", "upgraded", "upgrading", "last_ping"):
        assert hasattr(sock, attr), f"python-engineio: AsyncSocket.{attr} is gone"
    for attr in ("max_http_buffer_size", "ping_interval", "ping_timeout", "sockets"):
        assert hasattr(server, attr), f"python-engineio: AsyncServer.{attr} is gone"
    assert server.reason.TRANSPORT_CLOSE
    assert params(engineio.AsyncServer.create_queue)[:1] == ["self"]
    assert params(engineio.AsyncServer.start_background_task)[:2] == ["self", "target"]


def test_engineio_socket_uses_the_server_queue_factory() -> None:
    # LeanQueue only takes effect if sockets get their queue from the server's create_queue.
    from chatwire.transport.sio_server import LeanEngineIO, LeanQueue

    server = LeanEngineIO(async_mode="asgi")
    assert isinstance(AsyncSocket(server, "sid-1").queue, LeanQueue)


def _assigned_attributes(cls: type) -> set[str]:
    """Every `self.X = ...` in the source of `cls` and its uvicorn bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("uvicorn"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if (
                        isinstance(leaf, ast.Attribute)
                        and isinstance(leaf.value, ast.Name)
                        and leaf.value.id == "self"
                    ):
                        names.add(leaf.attr)
    return names


def test_uvicorn_sansio_protocol_attributes_all_have_slots() -> None:
    """LeanWebSocketProtocol declares slots for uvicorn's protocol attributes (uvicorn_ws.py); one uvicorn adds
    later lands in a per-connection __dict__ again, the memory the lean protocol exists to save (uvicorn before
    0.50 assigns `self.bytes`). Every attribute it assigns must be listed."""
    base = uvicorn_ws.WebSocketsSansIOProtocol
    assert base is not None, "uvicorn has no websockets-sansio protocol: the lean websocket path is off"
    assigned = _assigned_attributes(base)
    missing = (
        assigned - set(uvicorn_ws._PROTOCOL_ATTRIBUTES) - {n for n in dir(base) if not n.startswith("__")}
    )
    assert not missing, f"uvicorn's protocol assigns attributes chatwire has no slot for: {sorted(missing)}"
    # Read by the fast path (fastpath.py Sink) and by the handshake clean-up; a slot uvicorn never fills raises
    # AttributeError on read (uvicorn before 0.53 never sets `disconnected`: every refused connect then broke).
    read = (
        "handshake_complete",
        "request",
        "response",
        "conn",
        "transport",
        "close_sent",
        "disconnected",
        "queue",
    )
    for attr in read:
        assert attr in assigned, f"uvicorn's protocol no longer sets {attr}"
    assert params(base.send)[:2] == ["self", "message"]
    assert uvicorn_ws.ws_protocol() is uvicorn_ws.LeanWebSocketProtocol
