"""The peer for fleet benchmarks: stock python-socketio with its stock AsyncRedisManager, the same handler shape.

Run: python -m bench.stock_sio_server PORT [REDIS_URL CHANNEL] (no Redis URL: one process, in-memory manager). A client connects with auth {"room": name} to join a
room; `typing` events {channel_id, data} are broadcast to `channel:{channel_id}` as `events:channel`.
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
import uvicorn


def main() -> None:
    port = int(sys.argv[1])
    manager = socketio.AsyncRedisManager(sys.argv[2], channel=sys.argv[3]) if len(sys.argv) > 3 else None
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins="*")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and auth.get("room"):
            await sio.enter_room(sid, auth["room"])

    @sio.on("events:channel")
    async def channel_event(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        await sio.emit(
            "events:channel",
            {
                "channel_id": payload["channel_id"],
                "message_id": None,
                "data": payload["data"],
                "user": {"id": "bench", "name": "bench"},
            },
            room=f"channel:{payload['channel_id']}",
        )
        return {"ok": True}

    app = socketio.ASGIApp(sio, socketio_path="ws/socket.io")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
