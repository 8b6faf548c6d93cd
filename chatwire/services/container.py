"""Builds every repository, backend and service once, from the settings; transports receive this object."""

from __future__ import annotations

from dataclasses import dataclass

from chatwire.backends.attempts import AttemptLogFactory
from chatwire.backends.attempts_memory import memory_attempt_log
from chatwire.backends.broker import Broker
from chatwire.backends.bus import Bus
from chatwire.backends.docstore import DocStore
from chatwire.backends.docstore_sql import SqlDocStore
from chatwire.backends.eventlog import EventLog
from chatwire.backends.eventlog_memory import MemoryEventLog
from chatwire.backends.lock import Lock
from chatwire.backends.sessions import SessionStore
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.api_keys import ApiKeyRepo
from chatwire.db.repos.channels import ChannelRepo
from chatwire.db.repos.chats import ChatRepo, MessageStore
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import UserRepo
from chatwire.db.repos.webhooks import WebhookRepo
from chatwire.metrics import Metrics
from chatwire.services.api_keys import ApiKeyService
from chatwire.services.auth import AuthService, SigninThrottle
from chatwire.services.channels import ChannelService
from chatwire.services.chats import ChatService
from chatwire.services.collab import CollabService
from chatwire.services.completions import CompletionService
from chatwire.services.directory import UserDirectory
from chatwire.services.events import ChatEvents
from chatwire.services.external_auth import ExternalVerifier
from chatwire.services.history import RoomHistory
from chatwire.services.models import DemoModel, OpenAIUpstream
from chatwire.services.notes import NoteService
from chatwire.services.persistence import MessageWriter
from chatwire.services.presence import PresenceService
from chatwire.services.room_presence import RoomPresence
from chatwire.services.rooms import Rooms
from chatwire.services.server_api import ServerApiService
from chatwire.services.tasks import TaskRegistry
from chatwire.services.webhooks import ChannelWebhooks, DispatchSettings, WebhookDispatcher, WebhookService
from chatwire.util import now_s


@dataclass
class Services:
    settings: Settings
    db: Database
    broker: Broker
    sessions: SessionStore
    users: UserRepo
    rooms: Rooms
    auth: AuthService
    channels: ChannelService
    chats: ChatService
    notes: NoteService
    presence: PresenceService
    directory: UserDirectory
    api_keys: ApiKeyService
    server_api: ServerApiService
    metrics: Metrics
    collab: CollabService
    eventlog: EventLog
    writer: MessageWriter
    events: ChatEvents
    tasks: TaskRegistry
    completions: CompletionService
    host_id: str
    lock: Lock
    webhooks: WebhookService
    channel_webhooks: ChannelWebhooks
    dispatcher: WebhookDispatcher | None
    room_presence: RoomPresence
    history: RoomHistory
    bus: Bus | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        broker: Broker,
        sessions: SessionStore,
        *,
        host_id: str,
        lock: Lock,
        bus: Bus | None = None,
        metrics: Metrics | None = None,
        eventlog: EventLog | None = None,
        docstore: DocStore | None = None,
        attempt_logs: AttemptLogFactory | None = None,
    ) -> Services:
        """All services over the given backends; `attempt_logs` makes the sign-in guessing counters (in
        memory when None; a fleet passes Redis-backed ones, so its processes share one limit)."""
        attempt_log: AttemptLogFactory = attempt_logs or memory_attempt_log
        users = UserRepo(db)
        if eventlog is None:
            eventlog = MemoryEventLog(
                settings.recovery_history_size,
                settings.recovery_history_seconds,
                max_bytes=settings.recovery_history_bytes,
            )
        rooms = Rooms(broker, sessions)
        channels = ChannelService(ChannelRepo(db), users, broker, rooms)
        auth = AuthService(
            users,
            secret=settings.resolved_jwt_secret,
            token_ttl=settings.token_ttl_seconds,
            external=ExternalVerifier.from_settings(settings),
            external_default_role=settings.external_default_role,
            external_namespace=settings.external_issuer or None,
            throttle=SigninThrottle(
                attempt_log(
                    "signin-account", settings.signin_account_attempts, settings.signin_window_seconds
                ),
                attempt_log("signin-ip", settings.signin_ip_attempts, settings.signin_window_seconds),
            ),
        )
        auth.provisioned_hooks.append(channels.join_public_channels)
        # One membership cache, kept current across a fleet by the auth service's notices.
        channels.memberships = auth.memberships
        channels.repo.changed_hooks.append(auth.forget_memberships)
        notes = NoteService(NoteRepo(db), broker, rooms, users)
        docs: DocStore = docstore if docstore is not None else SqlDocStore(db)
        chat_repo = ChatRepo(db)
        writer = MessageWriter(
            MessageStore(db),
            flush_interval=settings.persist_flush_interval,
            database_answers=db.answers,
        )
        chat_repo.answer_hooks.append(writer.prime)
        events = ChatEvents(broker, sessions, writer, settings.event_call_timeout)
        tasks = TaskRegistry()
        upstream = (
            OpenAIUpstream(settings.openai_base_url, settings.openai_api_key)
            if settings.openai_base_url
            else None
        )
        completions = CompletionService(
            events,
            tasks,
            chat_repo,
            sessions,
            writer,
            DemoModel(settings.demo_tokens_per_second, settings.demo_max_tokens),
            upstream,
            snapshot_seconds=settings.completion_snapshot_seconds,
            coalesce_seconds=settings.completion_coalesce_ms / 1000,
        )
        chats = ChatService(chat_repo, broker, eventlog)
        chats.pipeline = events
        metrics = metrics or Metrics()
        webhook_repo = WebhookRepo(db)
        webhooks = WebhookService(webhook_repo, cache_seconds=settings.webhook_endpoint_cache_seconds)
        dispatcher = (
            WebhookDispatcher(
                webhook_repo,
                host_id,
                DispatchSettings(
                    timeout=settings.webhook_timeout_seconds,
                    concurrency=settings.webhook_concurrency,
                    max_attempts=settings.webhook_max_attempts,
                    backoff_base=settings.webhook_backoff_base_seconds,
                    backoff_max=settings.webhook_backoff_max_seconds,
                    poll_interval=settings.webhook_poll_seconds,
                    idle_poll_interval=settings.webhook_idle_poll_seconds,
                    retention=settings.webhook_retention_seconds,
                ),
                observer=metrics.webhook_attempt,
            )
            if settings.webhooks_enabled
            else None
        )
        if dispatcher is not None:
            webhooks.wake = dispatcher.wake
        channels.notify = webhooks.notify
        notes.notify = webhooks.notify
        writer.finished = webhooks.completion_finished_notifier(chat_repo.get)
        return cls(
            settings=settings,
            db=db,
            broker=broker,
            sessions=sessions,
            users=users,
            rooms=rooms,
            auth=auth,
            channels=channels,
            chats=chats,
            notes=notes,
            presence=PresenceService(sessions, users, channels),
            directory=UserDirectory(users, sessions),
            host_id=host_id,
            lock=lock,
            bus=bus,
            api_keys=ApiKeyService(ApiKeyRepo(db)),
            server_api=ServerApiService(broker, sessions, users, channels, chat_repo, events),
            metrics=metrics,
            webhooks=webhooks,
            channel_webhooks=ChannelWebhooks(webhook_repo, channels),
            dispatcher=dispatcher,
            room_presence=RoomPresence(sessions, users, broker, channels, notes, webhooks.notify),
            history=RoomHistory(eventlog, channels),
            collab=CollabService(
                docs,
                notes,
                broker,
                compact_every=settings.doc_compact_every,
                save_debounce=settings.doc_save_debounce_seconds,
                max_doc_bytes=settings.doc_max_bytes,
                shared=bool(settings.redis_url),
            ),
            eventlog=eventlog,
            writer=writer,
            events=events,
            tasks=tasks,
            completions=completions,
        )

    async def start_pipeline(self) -> None:
        """At start: answers left unfinished by a stop or crash are marked `interrupted`. One process (no Redis)
        owns every answer, so all of them; in a fleet another process may be streaming one, so only answers not
        written for `CHATWIRE_INTERRUPT_GRACE_SECONDS`."""
        grace = self.settings.interrupt_grace_seconds if self.settings.redis_url else None
        await self.completions.mark_interrupted(None if grace is None else now_s() - grace)

    async def close_pipeline(self) -> None:
        """Stop running generations, then flush every queued chat event to the database (shutdown)."""
        await self.completions.close()
        await self.writer.close()

    async def disconnect_user(self, user_id: str) -> None:
        """End every live session of a user, on every process (its tabs reconnect with the changed row)."""
        for sid in await self.sessions.sids_of(user_id):
            await self.broker.disconnect(sid)

    async def disconnect_token(self, user_id: str, jti: str | None) -> None:
        """End the live sessions that authenticated with a revoked token."""
        if jti is None:
            return
        for sid in await self.sessions.sids_of(user_id):
            info = await self.sessions.get(sid)
            if info is not None and info.jti == jti:
                await self.broker.disconnect(sid)
