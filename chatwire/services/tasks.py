"""Running generations: task id -> asyncio task with its owner, chat and message; stop cancels it.

`stop` answers for the tasks of this process. Fleet mode routes a stop for an unknown id to the process that runs
it by replacing `remote_stop` (a callable `(task_id) -> bool`), without changing callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from chatwire.util import new_id

log = logging.getLogger("chatwire.tasks")


@dataclass
class TaskInfo:
    task_id: str
    user_id: str
    chat_id: str | None
    message_id: str | None
    task: asyncio.Task[Any]


class TaskRegistry:
    """Keeps a reference to every running generation (so none is garbage collected) until it ends."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskInfo] = {}
        # (task_id, user_id, admin) -> whether another process stopped it (fleet mode sets this)
        self.remote_stop: Callable[[str, str | None, bool], Awaitable[bool]] | None = None
        # (chat_id, user_id, admin) -> whether another process stopped generations of that chat (fleet mode)
        self.remote_stop_chat: Callable[[str, str | None, bool], Awaitable[bool]] | None = None

    def start(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        user_id: str,
        chat_id: str | None,
        message_id: str | None,
    ) -> TaskInfo:
        task_id = new_id()
        task = asyncio.create_task(coro, name=f"chatwire-generation-{task_id}")
        info = TaskInfo(task_id, user_id, chat_id, message_id, task)
        self._tasks[task_id] = info
        task.add_done_callback(lambda t: self._done(task_id, t))
        return info

    def _done(self, task_id: str, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("generation crashed", exc_info=task.exception(), extra={"task_id": task_id})

    def get(self, task_id: str) -> TaskInfo | None:
        return self._tasks.get(task_id)

    def for_chat(self, chat_id: str) -> list[TaskInfo]:
        return [t for t in self._tasks.values() if t.chat_id == chat_id]

    def for_user(self, user_id: str) -> list[TaskInfo]:
        return [t for t in self._tasks.values() if t.user_id == user_id]

    async def stop(
        self, task_id: str, timeout: float = 5.0, *, user_id: str | None = None, admin: bool = True
    ) -> bool:
        """Cancel a generation (of `user_id`, unless `admin`) and wait (bounded) until it has emitted its last
        events, here or on another process. False if unknown (or someone else's)."""
        info = self._tasks.get(task_id)
        if info is None:
            if self.remote_stop is None:
                return False
            return await self.remote_stop(task_id, user_id, admin)
        if not admin and user_id is not None and info.user_id != user_id:
            return False
        return await self.stop_local(task_id, timeout)

    async def stop_chat(
        self, chat_id: str, timeout: float = 5.0, *, user_id: str | None = None, admin: bool = True
    ) -> tuple[list[str], bool]:
        """Cancel every generation of a chat (of `user_id`, unless `admin`) here and, in a fleet, on the other
        processes; returns the task ids stopped here and whether another process stopped any."""
        stopped = await self.stop_chat_local(chat_id, timeout, user_id=user_id, admin=admin)
        remote = self.remote_stop_chat is not None and await self.remote_stop_chat(chat_id, user_id, admin)
        return stopped, remote

    async def stop_chat_local(
        self, chat_id: str, timeout: float = 5.0, *, user_id: str | None = None, admin: bool = True
    ) -> list[str]:
        """Cancel the generations of a chat that run on this process."""
        ids = [t.task_id for t in self.for_chat(chat_id) if admin or user_id is None or t.user_id == user_id]
        await asyncio.gather(*(self.stop_local(task_id, timeout) for task_id in ids))
        return ids

    async def stop_local(self, task_id: str, timeout: float = 5.0) -> bool:
        """Cancel a generation of this process. False if unknown here."""
        info = self._tasks.get(task_id)
        if info is None:
            return False
        info.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(info.task), timeout)
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every generation (lifespan shutdown)."""
        for task_id in list(self._tasks):
            await self.stop(task_id, timeout)

    def __len__(self) -> int:
        return len(self._tasks)
