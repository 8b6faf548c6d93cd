"""Builds the fleet-mode backends (Redis session store, lock, bus, event log, roster; one Redis, Sentinel or
Cluster, by the settings) and the fleet Broker that routes over them (fleet_broker.py)."""

from __future__ import annotations

import contextlib
from typing import Any

from redis.exceptions import RedisError

from chatwire.backends.attempts_redis import RedisAttemptLog
from chatwire.backends.blobs_redis import RedisBlobStore
from chatwire.backends.bus_redis import RedisBus
from chatwire.backends.docstore_redis import RedisDocStore
from chatwire.backends.eventlog_redis import RedisEventLog
from chatwire.backends.lock_redis import RedisLock
from chatwire.backends.redis_client import RedisTarget
from chatwire.backends.roster_redis import RedisRoster
from chatwire.backends.sessions_redis import RedisSessionStore
from chatwire.config import Settings
from chatwire.transport.fleet_broker import FleetBroker
from chatwire.transport.hub import Hub


class FleetBackends:
    def __init__(self, settings: Settings, host_id: str, hub: Hub) -> None:
        self.target = target = RedisTarget.from_settings(settings)
        self.client = target.client()
        self.prefix = prefix = settings.redis_prefix
        cluster = target.cluster
        self.sessions = RedisSessionStore(
            self.client, prefix, settings.presence_ttl_seconds, settings.usage_ttl_seconds, cluster=cluster
        )
        self.lock = RedisLock(self.client, prefix)
        self.eventlog = RedisEventLog(
            self.client,
            prefix,
            settings.recovery_history_size,
            settings.recovery_history_seconds,
            cluster=cluster,
            primary_id=self._primary_id,
        )
        self.bus = RedisBus(target, prefix + "bus:")
        self.docstore = (
            RedisDocStore(self.client, prefix, cluster=cluster) if settings.doc_store == "redis" else None
        )
        self.roster = RedisRoster(self.client, prefix, self._alive)
        self.manager = FleetBroker(
            hub,
            self.bus,
            host_id,
            self._locate,
            settings.fleet_max_payload_bytes,
            settings.event_call_timeout,
        )
        self.manager.blobs = RedisBlobStore(self.client, prefix, chunk_bytes=settings.fleet_max_payload_bytes)

    def attempt_log(self, name: str, limit: int, window: float) -> RedisAttemptLog:
        """Sign-in failure counts shared by the fleet (an AttemptLogFactory)."""
        return RedisAttemptLog(self.client, self.prefix, name, limit, window)

    async def _primary_id(self) -> str:
        return await self.target.primary_id(self.client, self.eventlog.p + "epoch")

    async def _alive(self, sid: str) -> bool:
        return await self.sessions.get(sid) is not None

    def wire_tasks(self, tasks: Any) -> None:
        """Route a stop for a generation this process does not run to the process that does."""

        async def remote_stop(task_id: str, user_id: str | None, admin: bool) -> bool:
            return await self.manager.ask_others(
                "stop_task", {"task_id": task_id, "user_id": user_id, "admin": admin}, timeout=8.0
            )

        async def stop_here(p: dict[str, Any]) -> bool:
            # Like stop_chat_here: the cancel is issued at once and the answer comes within 2 s, well inside the
            # asker's 8 s, even when the generation is slow to emit its last events (a loaded process).
            info = tasks.get(p.get("task_id", ""))
            if info is None or (not p.get("admin") and p.get("user_id") and info.user_id != p["user_id"]):
                return False
            return bool(await tasks.stop_local(info.task_id, 2.0))

        async def remote_stop_chat(chat_id: str, user_id: str | None, admin: bool) -> bool:
            return await self.manager.ask_others(
                "stop_chat", {"chat_id": chat_id, "user_id": user_id, "admin": admin}, timeout=8.0
            )

        async def stop_chat_here(p: dict[str, Any]) -> bool:
            # Answer well within the asker's 5 s: the cancel is issued at once, its last events follow.
            ids = await tasks.stop_chat_local(
                str(p.get("chat_id", "")), 2.0, user_id=p.get("user_id"), admin=bool(p.get("admin"))
            )
            return bool(ids)

        tasks.remote_stop = remote_stop
        tasks.remote_stop_chat = remote_stop_chat
        self.manager.request_handlers["stop_task"] = stop_here
        self.manager.request_handlers["stop_chat"] = stop_chat_here

    def wire_auth(self, auth: Any) -> None:
        """Keep every process's revocation set and user cache current: sign-outs and user changes are announced on
        the bus; while the bus cannot deliver, or after it lost messages, the database answers."""
        auth.fleet_notify = self.manager.notify_others
        auth.revocations.trusted = lambda: self.bus.healthy
        self.manager.notice_handlers["revoked"] = auth.fleet_revoked
        self.manager.notice_handlers["user_changed"] = auth.fleet_user_changed
        self.manager.gap_hooks.append(auth.fleet_gap)

    async def _locate(self, sid: str) -> str | None:
        info = await self.sessions.get(sid)
        return info.host if info is not None and info.host else None

    async def start(self) -> None:
        self.manager.roster = self.roster
        await self.manager.start()
        with contextlib.suppress(RedisError, OSError):
            await self.eventlog.primary_changed()  # learn the primary's id (new epochs are tagged with it)

    async def stop(self) -> None:
        await self.manager.stop()
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False
