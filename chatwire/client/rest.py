"""The REST half of the SDK: sign in, chats, generations and the server-to-server emit, over httpx."""

from __future__ import annotations

from typing import Any

import httpx


class ChatwireHTTP:
    """A thin typed wrapper over chatwire's REST API (Open WebUI's paths); raises httpx.HTTPStatusError."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> ChatwireHTTP:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = await self._client.request(method, path, json=json, headers=headers)
        r.raise_for_status()
        return r.json()

    async def signup(self, name: str, email: str, password: str) -> dict[str, Any]:
        """Create an account and use its token from now on."""
        user = await self._request(
            "POST", "/api/v1/auths/signup", {"name": name, "email": email, "password": password}
        )
        self.token = user["token"]
        return user  # type: ignore[no-any-return]

    async def signin(self, email: str, password: str) -> dict[str, Any]:
        """Sign in and use the token from now on."""
        user = await self._request("POST", "/api/v1/auths/signin", {"email": email, "password": password})
        self.token = user["token"]
        return user  # type: ignore[no-any-return]

    async def new_chat(self, title: str, history: dict[str, Any] | None = None) -> dict[str, Any]:
        chat: dict[str, Any] = {"title": title}
        if history is not None:
            chat["history"] = history
        return await self._request("POST", "/api/v1/chats/new", {"chat": chat})  # type: ignore[no-any-return]

    async def get_chat(self, chat_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/api/v1/chats/{chat_id}")  # type: ignore[no-any-return]

    async def models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/api/models"))["data"]  # type: ignore[no-any-return]

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        chat_id: str | None = None,
        message_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Start a generation; the answer streams as `events`. Returns `{status, task_id, message_id}`."""
        body = {
            "model": model,
            "messages": messages,
            "chat_id": chat_id,
            "id": message_id,
            "session_id": session_id,
            "stream": True,
        }
        return await self._request("POST", "/api/chat/completions", body)  # type: ignore[no-any-return]

    async def stop(self, task_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/api/tasks/stop/{task_id}")  # type: ignore[no-any-return]

    async def emit_event(self, chat_id: str, message_id: str, type: str, data: Any = None) -> bool:
        """Server-to-server emit: stream one event into a message, delivered and persisted by the server."""
        return bool(
            await self._request(
                "POST", f"/api/v1/chats/{chat_id}/messages/{message_id}/event", {"type": type, "data": data}
            )
        )

    async def channel_presence(self, channel_id: str) -> dict[str, Any]:
        """The channel's members with a live session: `{room, users: [{id, name, sessions}], count}`."""
        return await self._request("GET", f"/api/v1/channels/{channel_id}/presence")  # type: ignore[no-any-return]

    async def note_presence(self, note_id: str) -> dict[str, Any]:
        """Who has the note's document open."""
        return await self._request("GET", f"/api/v1/notes/{note_id}/presence")  # type: ignore[no-any-return]

    async def channel_events(
        self, channel_id: str, since: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """One page of the channel's history after offset `since` (`{events, next, more, head, gone}`)."""
        query = f"?limit={limit}" + (f"&since={since}" if since else "")
        return await self._request("GET", f"/api/v1/channels/{channel_id}/events{query}")  # type: ignore[no-any-return]

    async def channel_history(
        self, channel_id: str, since: str, page: int = 100
    ) -> list[dict[str, Any]] | None:
        """Every event of the channel after `since`, all pages; None when that history is gone (reload)."""
        events: list[dict[str, Any]] = []
        while True:
            body = await self.channel_events(channel_id, since, page)
            if body["gone"]:
                return None
            events.extend(body["events"])
            if not body["more"]:
                return events
            since = body["next"]
