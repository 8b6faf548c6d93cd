"""Room presence changes from the connection lifecycle: when the session store decides that a user came online
(the first session authenticated, at connect or with `user-join`) or went offline (the last one went away or
expired), `services.room_presence` announces it (see services/room_presence.py).

The work (the user's channel rooms, the outgoing webhook) runs in a task of its own, so a connect is never
answered later because of it; one user's changes run one after the other in the order the store decided them,
so a quick connect and disconnect announce `join` before `leave`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from chatwire.transport.context import Context

log = logging.getLogger("chatwire.presence")


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

    def changed(user_id: str, name: str, online: bool) -> None:
        queues.run(user_id, lambda: presence.changed(user_id, name, online=online))

    ctx.presence_hooks.append(changed)
