"""Connection state recovery for python-socketio's AsyncClient, the way the official JS client does it.

The client asks for offsets (`auth.offsets = true`), remembers the `pid` of the CONNECT reply and the offset that
ends each event (and hands its handlers the event without it), and reconnects with `{pid, offset}` merged into its
auth. After each connect, `recovered` says whether the missed events were replayed (True) or the state must be
reloaded (False).
"""

from __future__ import annotations

import inspect
from typing import Any

import socketio

# The largest single event chatwire's Python clients accept from the server (one websocket message): an answer
# with its sources can be tens of megabytes, and chatwire delivers every event whole.
MAX_EVENT_BYTES = 256 << 20


class RecoveryMixin:
    """Mix into a python-socketio AsyncClient subclass (before it in the bases) to recover like the JS client."""

    recovered: bool = False
    _cw_pid: str | None = None
    _cw_offset: str | None = None
    _cw_auth: Any = None

    @property
    def stream_offset(self) -> str | None:
        """The offset of the last event this client processed."""
        return self._cw_offset

    async def connect(self, url: str, *args: Any, auth: Any = None, **kwargs: Any) -> None:
        if auth != self._cw_connect_auth:  # python-socketio's reconnect passes our own callable back
            self._cw_auth = auth
        await super().connect(url, *args, auth=self._cw_connect_auth, **kwargs)  # type: ignore[misc]

    async def disconnect(self) -> None:
        """A deliberate disconnect: the next connect starts fresh (as the server would not recover it anyway)."""
        self._cw_pid = None
        self._cw_offset = None
        await super().disconnect()  # type: ignore[misc]

    async def _cw_connect_auth(self) -> dict[str, Any]:
        user = self._cw_auth
        if callable(user):
            user = user()
            if inspect.isawaitable(user):
                user = await user
        auth: dict[str, Any] = {"offsets": True}
        if self._cw_pid is not None:
            auth["pid"] = self._cw_pid
            if self._cw_offset is not None:
                auth["offset"] = self._cw_offset
        if isinstance(user, dict):
            auth.update(user)
        return auth

    async def _handle_connect(self, namespace: str | None, data: Any) -> None:
        if (namespace or "/") == "/":
            pid = data.get("pid") if isinstance(data, dict) else None
            self.recovered = isinstance(pid, str) and pid == self._cw_pid
            self._cw_pid = pid if isinstance(pid, str) else None
        await super()._handle_connect(namespace, data)  # type: ignore[misc]

    async def _handle_event(self, namespace: str | None, id: Any, data: list[Any]) -> None:
        offset = None
        if (
            self._cw_pid is not None
            and id is None
            and (namespace or "/") == "/"
            and len(data) > 1
            and isinstance(data[-1], str)
        ):
            offset, data = data[-1], data[:-1]
        await super()._handle_event(namespace, id, data)  # type: ignore[misc]
        if offset is not None:
            self._cw_offset = offset


class RecoveringClient(RecoveryMixin, socketio.AsyncClient):
    """python-socketio's AsyncClient with chatwire's connection state recovery; it also accepts events up to
    `MAX_EVENT_BYTES` (aiohttp's default refuses websocket messages over 4 MiB)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = {"max_msg_size": MAX_EVENT_BYTES, **kwargs.pop("websocket_extra_options", {})}
        super().__init__(*args, websocket_extra_options=options, **kwargs)
