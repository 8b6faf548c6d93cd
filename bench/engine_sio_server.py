"""The fan-out peer on chatwire's own engine (chatwire/engine): the same handler shape as bench/stock_sio_server.py.

Run: python -m bench.engine_sio_server PORT. A client connects with auth {"room": name} to join a room; `typing`
events {channel_id, data} are broadcast to `channel:{channel_id}` as `events:channel`, encoded once.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from chatwire.engine import EngineConfig, Socket, SocketServer
from chatwire.engine.wsprotocol import EngineWebSocketProtocol


def main() -> None:
    port = int(sys.argv[1])
    server = SocketServer(EngineConfig(path="/ws/socket.io/", cors_allowed_origins="*"))
    main_ns = server.of("/")

    @main_ns.on("connect")
    def connect(socket: Socket, auth: dict[str, Any]) -> None:
        if isinstance(auth, dict) and auth.get("room"):
            socket.join(auth["room"])

    @main_ns.on("events:channel")
    def channel_event(socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        main_ns.emit(
            "events:channel",
            {
                "channel_id": payload["channel_id"],
                "message_id": None,
                "data": payload["data"],
                "user": {"id": "bench", "name": "bench"},
            },
            to=f"channel:{payload['channel_id']}",
        )
        return {"ok": True}

    # chatwire's own WebSocket protocol: each session's frames of one loop turn leave in one write
    uvicorn.run(server.asgi, host="127.0.0.1", port=port, log_level="warning", ws=EngineWebSocketProtocol)


if __name__ == "__main__":
    main()
