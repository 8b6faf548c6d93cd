"""Room presence changes from the connection lifecycle: a session that authenticates (at connect or with
`user-join`) and one that goes away tell `services.room_presence` (see services/room_presence.py).

The work (a store read, the user's channel rooms, the outgoing webhook) runs in a task of its own, so a connect is
never answered later because of it; one user's changes run one after the other, so a quick connect and disconnect
announce `join` before `leave`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.db.models import User
from chatwire.transport.context import Context, SessionState

log = logging.getLogger("chatwire.presence")

ANNOUNCED = "presence_announced"


class UserQueues:
    """Runs each user's presence changes in order, in background tasks (references kept until done)."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Task[None]] = {}

    def run(self, user_id: str, work: Callable[[], Awaitable[None]]) -> None:
        previous = self._last.get(user_id)

        async def step() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await work()
            except Exception:
                log.exception("presence change failed", extra={"user_id": user_id})

        task = asyncio.create_task(step())
        self._last[user_id] = task
        task.add_done_callback(lambda t: self._last.get(user_id) is t and self._last.pop(user_id, None))


def register(ctx: Context) -> None:
    presence = ctx.services.room_presence
    queues = UserQueues()

    def started(sid: str) -> None:
        st = ctx.local.get(sid)
        if st is None or st.user is None or st.extra.get(ANNOUNCED):
            return
        st.extra[ANNOUNCED] = True
        user = st.user
        queues.run(user.id, lambda: presence.session_started(sid, user))

    async def on_connect(sid: str, _environ: dict[str, Any], _auth: Any) -> None:
        started(sid)

    async def on_join(sid: str, _user: User, _payload: Any) -> None:
        started(sid)

    async def on_disconnect(_sid: str, st: SessionState | None) -> None:
        if st is not None and st.user is not None and st.extra.get(ANNOUNCED):
            user = st.user
            queues.run(user.id, lambda: presence.session_ended(user.id, user.name))

    ctx.connect_hooks.append(on_connect)
    ctx.join_hooks.append(on_join)
    ctx.disconnect_hooks.append(on_disconnect)
