"""The peer for fleet benchmarks: stock python-socketio with its stock AsyncRedisManager, the same handler shape.

Run: python -m bench.stock_sio_server PORT [REDIS_URL CHANNEL] (no Redis URL: one process, in-memory manager). A client connects with auth {"room": name} to join a
room; `typing` events {channel_id, data} are broadcast to `channel:{channel_id}` as `events:channel`.

Connect storm (env BENCH_JWT_SECRET set): a handshake auth {token} must be an HS256 JWT with `id` and `exp`, checked
with PyJWT in the connect handler (refused otherwise); the session enters `user:{id}`, and `user-join`
{auth: {token}} verifies the token again and acknowledges {id}. The same work as bench/node/server.mjs. With
BENCH_NO_AUTH=1 instead, no token is looked at: connect accepts every client and `user-join` acknowledges
{id: null} (stock python-socketio's own cost of a connect, the floor the issue compares against).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jwt
import socketio
import uvicorn


def main() -> None:
    port = int(sys.argv[1])
    manager = socketio.AsyncRedisManager(sys.argv[2], channel=sys.argv[3]) if len(sys.argv) > 3 else None
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins="*")
    secret = os.environ.get("BENCH_JWT_SECRET")
    no_auth = os.environ.get("BENCH_NO_AUTH") == "1"

    def verify(token: Any) -> dict[str, Any]:
        claims = jwt.decode(token, secret or "", algorithms=["HS256"], options={"require": ["exp", "id"]})
        if not isinstance(claims.get("id"), str):
            raise jwt.InvalidTokenError("invalid token")
        return claims

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and auth.get("room"):
            await sio.enter_room(sid, auth["room"])
        if secret:
            try:
                claims = verify(auth.get("token") if isinstance(auth, dict) else None)
            except jwt.PyJWTError:
                raise socketio.exceptions.ConnectionRefusedError("invalid token") from None
            await sio.enter_room(sid, f"user:{claims['id']}")

    @sio.on("user-join")
    async def user_join(sid: str, payload: Any) -> dict[str, Any]:
        if no_auth:
            return {"id": None}
        try:
            token = payload["auth"]["token"] if isinstance(payload, dict) else None
            return {"id": verify(token)["id"]}
        except (jwt.PyJWTError, KeyError, TypeError):
            return {"error": {"code": "unauthorized", "message": "invalid token"}}

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
