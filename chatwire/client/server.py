"""Server-side SDK: drive chatwire from your backend.

`ServerClient` calls the server API over HTTP with a scoped API key (publish, channels, presence). A fleet
member that shares chatwire's Redis can instead publish straight to the fleet's room topics with
`RedisEmitter`, without HTTP (delivery only: events sent that way are not persisted and skip the API's audit).
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

import httpx
import orjson


class ServerApiError(Exception):
    """A refused server API call: the HTTP status and chatwire's stable error code."""

    def __init__(self, status: int, code: str | None, detail: Any) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ServerClient:
    """Async client of chatwire's server API, authenticated by an API key (`cwk_...`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        response = await self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {"detail": response.text}
            raise ServerApiError(response.status_code, payload.get("code"), payload.get("detail"))
        return response.json()

    # publish

    async def publish(self, room: str, event: str, data: Any) -> dict[str, Any]:
        """Send `event` with `data` to a room: `user:{id}`, `channel:{id}`, `note:{id}` or `doc_{id}`."""
        result: dict[str, Any] = await self._call(
            "POST", "/api/v1/events/publish", {"room": room, "event": event, "data": data}
        )
        return result

    async def publish_many(self, events: list[tuple[str, str, Any]]) -> dict[str, Any]:
        """Send up to 1,000 `(room, event, data)` in order in one call; one bad item refuses them all."""
        body = {"events": [{"room": room, "event": event, "data": data} for room, event, data in events]}
        result: dict[str, Any] = await self._call("POST", "/api/v1/events/publish/batch", body)
        return result

    async def chat_event(
        self, user_id: str, chat_id: str, message_id: str, type: str, data: Any
    ) -> dict[str, Any]:
        """One chat generation event (`events` to the user's room), persisted on the message."""
        return await self.publish(
            f"user:{user_id}",
            "events",
            {"chat_id": chat_id, "message_id": message_id, "data": {"type": type, "data": data}},
        )

    # users and channels

    async def ensure_user(
        self, user_id: str, *, name: str | None = None, email: str | None = None
    ) -> dict[str, Any]:
        """Create your app's user in chatwire as its first login would (or rename it), e.g. before adding it to
        a channel."""
        body = {k: v for k, v in {"name": name, "email": email}.items() if v is not None}
        result: dict[str, Any] = await self._call("PUT", f"/api/v1/server/users/{user_id}", body)
        return result

    async def create_channel(
        self,
        name: str,
        *,
        user_ids: list[str] | None = None,
        type: str | None = None,
        is_private: bool = False,
        description: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST",
            "/api/v1/server/channels",
            {
                "name": name,
                "user_ids": user_ids or [],
                "type": type,
                "is_private": is_private,
                "description": description,
            },
        )
        return result

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/api/v1/server/channels/{channel_id}")
        return result

    async def add_members(self, channel_id: str, user_ids: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/server/channels/{channel_id}/members/add", {"user_ids": user_ids}
        )
        return result

    async def remove_members(self, channel_id: str, user_ids: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/server/channels/{channel_id}/members/remove", {"user_ids": user_ids}
        )
        return result

    async def delete_channel(self, channel_id: str) -> None:
        await self._call("DELETE", f"/api/v1/server/channels/{channel_id}")

    # presence

    async def presence(self, user_id: str | None = None) -> dict[str, Any]:
        """Online users, their sessions and each session's rooms."""
        params = {"user_id": user_id} if user_id else None
        result: dict[str, Any] = await self._call("GET", "/api/v1/presence", params=params)
        return result

    async def disconnect_user(self, user_id: str) -> int:
        """End every live session of a user; returns how many were ended."""
        result = await self._call("POST", f"/api/v1/presence/users/{user_id}/disconnect")
        return int(result["disconnected"])

    async def room_presence(self, room: str) -> dict[str, Any]:
        """Who is in `channel:{id}` (online members) or `note:{id}` (editors) now."""
        result: dict[str, Any] = await self._call("GET", f"/api/v1/presence/rooms/{room}")
        return result

    async def room_events(self, room: str, since: str | None = None, limit: int = 100) -> dict[str, Any]:
        """One page of a recoverable room's history after offset `since` (scope `publish`)."""
        params: dict[str, Any] = {"limit": limit, **({"since": since} if since else {})}
        result: dict[str, Any] = await self._call("GET", f"/api/v1/server/rooms/{room}/events", params=params)
        return result

    # outgoing webhooks (scope `webhooks`; verify deliveries with chatwire.client.webhooks.verify)

    async def create_webhook(self, url: str, events: list[str], description: str = "") -> dict[str, Any]:
        """Register an endpoint; the answer's `secret` (whsec_...) signs its deliveries (shown only here)."""
        result: dict[str, Any] = await self._call(
            "POST", "/api/v1/server/webhooks", {"url": url, "events": events, "description": description}
        )
        return result

    async def webhooks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/api/v1/server/webhooks")
        return result

    async def webhook(self, endpoint_id: str) -> dict[str, Any]:
        """One endpoint with its `stats`: last status and error, failures, delivered and pending counts."""
        result: dict[str, Any] = await self._call("GET", f"/api/v1/server/webhooks/{endpoint_id}")
        return result

    async def update_webhook(self, endpoint_id: str, **changes: Any) -> dict[str, Any]:
        """Change `url`, `events`, `description`, `active`, or `rotate_secret=True`."""
        result: dict[str, Any] = await self._call("PATCH", f"/api/v1/server/webhooks/{endpoint_id}", changes)
        return result

    async def delete_webhook(self, endpoint_id: str) -> None:
        await self._call("DELETE", f"/api/v1/server/webhooks/{endpoint_id}")

    async def webhook_deliveries(
        self, endpoint_id: str, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        result: list[dict[str, Any]] = await self._call(
            "GET", f"/api/v1/server/webhooks/{endpoint_id}/deliveries", params=params
        )
        return result

    async def retry_delivery(self, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/server/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"
        )
        return result


def room_message(emitter_id: str, room: str, event: str, data: Any) -> bytes:
    """The fleet bus message of a room emit, as the fleet Broker (transport/fleet_broker.py) reads it (orjson bytes)."""
    return orjson.dumps(
        {"t": "emit", "h": emitter_id, "room": room, "e": event, "d": data, "m": False, "s": None, "ns": "/"}
    )


class RedisEmitter:
    """Publishes room events straight to a chatwire fleet's Redis bus (topic `{prefix}bus:room:{room}`).

    Every chatwire process with members in the room delivers the event locally. Delivery only: not persisted,
    not audited; use `ServerClient.publish` for chat events that must be stored. `redis_url` may be a plain URL or
    a `RedisTarget` (chatwire.backends.redis_client) for a fleet behind Redis Sentinel or on a Redis Cluster; on a
    cluster the event goes out with SPUBLISH on the room's hash-tagged channel, as the fleet subscribes to it.
    """

    def __init__(self, redis_url: Any, prefix: str = "chatwire:") -> None:
        from chatwire.backends.redis_client import RedisTarget

        self.prefix = prefix
        self.emitter_id = f"emitter-{uuid.uuid4().hex[:12]}"
        self.target = redis_url if isinstance(redis_url, RedisTarget) else RedisTarget(str(redis_url))
        self._redis: Any = self.target.client()

    async def __aenter__(self) -> RedisEmitter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def topic(self, room: str) -> str:
        from chatwire.backends.bus_redis import bus_channel

        return bus_channel(f"{self.prefix}bus:", f"room:{room}", self.target.cluster)

    async def emit(self, room: str, event: str, data: Any) -> int:
        """Publish; returns how many subscribers (chatwire processes) Redis handed it to."""
        message = room_message(self.emitter_id, room, event, data)
        if self.target.cluster:
            return int(await self._redis.spublish(self.topic(room), message))
        return int(await self._redis.publish(self.topic(room), message))

    async def close(self) -> None:
        await self._redis.aclose()
