"""The engine alone, with the handlers and settings the Socket.IO protocol's compliance suite expects.

Run `python -m chatwire.engine.reference --port 3000`, then the official `test-suite/` of socketio/socket.io-protocol
(which connects to localhost:3000) can be pointed at it.
"""

from __future__ import annotations

import argparse
from typing import Any

from chatwire.engine.eio import EngineConfig
from chatwire.engine.server import Socket, SocketServer

REFERENCE_CONFIG = EngineConfig(
    ping_interval_ms=300, ping_timeout_ms=200, max_payload=1_000_000, cors_allowed_origins="*"
)


def build(config: EngineConfig = REFERENCE_CONFIG, connect_timeout_ms: int = 1000) -> SocketServer:
    """A server configured like the suite's reference: ping 300 ms / 200 ms, 1 s connect timeout, `/` and `/custom`."""
    server = SocketServer(config, connect_timeout_ms=connect_timeout_ms)
    main = server.of("/")

    @main.on("connect")
    def greet(socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("auth", auth)

    @main.on("message")
    def echo(socket: Socket, *args: Any) -> None:
        socket.emit("message-back", *args)

    @main.on("message-with-ack")
    def echo_ack(socket: Socket, *args: Any) -> tuple[Any, ...]:
        return args

    custom = server.of("/custom")

    @custom.on("connect")
    def greet_custom(socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("auth", auth)

    return server


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m chatwire.engine.reference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--ws",
        default="chatwire",
        help="WebSocket protocol: chatwire (chatwire/engine/wsprotocol.py, the default), or one of uvicorn's own "
        "(auto, websockets, websockets-sansio, wsproto)",
    )
    args = parser.parse_args(argv)
    ws: Any = args.ws
    if ws == "chatwire":
        from chatwire.engine.wsprotocol import EngineWebSocketProtocol

        ws = EngineWebSocketProtocol
    uvicorn.run(build().asgi, host=args.host, port=args.port, ws=ws, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
