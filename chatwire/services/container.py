"""Builds every repository, backend and service once, from the settings; transports receive this object."""

from __future__ import annotations

from dataclasses import dataclass

from chatwire.backends.broker import Broker
from chatwire.backends.sessions import SessionStore
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.channels import ChannelRepo
from chatwire.db.repos.chats import ChatRepo, MessageStore
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import UserRepo
from chatwire.services.auth import AuthService
from chatwire.services.channels import ChannelService
from chatwire.services.chats import ChatService
from chatwire.services.completions import CompletionService
from chatwire.services.events import ChatEvents
from chatwire.services.models import DemoModel, OpenAIUpstream
from chatwire.services.notes import NoteService
from chatwire.services.persistence import MessageWriter
from chatwire.services.presence import PresenceService
from chatwire.services.rooms import Rooms
from chatwire.services.tasks import TaskRegistry


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
    writer: MessageWriter
    events: ChatEvents
    tasks: TaskRegistry
    completions: CompletionService

    @classmethod
    def build(cls, settings: Settings, db: Database, broker: Broker, sessions: SessionStore) -> Services:
        users = UserRepo(db)
        rooms = Rooms(broker, sessions)
        chat_repo = ChatRepo(db)
        writer = MessageWriter(MessageStore(db), flush_interval=settings.persist_flush_interval)
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
        )
        return cls(
            settings=settings,
            db=db,
            broker=broker,
            sessions=sessions,
            users=users,
            rooms=rooms,
            auth=AuthService(
                users, secret=settings.resolved_jwt_secret, token_ttl=settings.token_ttl_seconds
            ),
            channels=ChannelService(ChannelRepo(db), users, broker, rooms),
            chats=ChatService(chat_repo, broker),
            notes=NoteService(NoteRepo(db), broker, rooms),
            presence=PresenceService(sessions, users),
            writer=writer,
            events=events,
            tasks=tasks,
            completions=completions,
        )

    async def close_pipeline(self) -> None:
        """Stop running generations, then flush every queued chat event to the database (shutdown)."""
        await self.completions.close()
        await self.writer.close()

    async def disconnect_token(self, user_id: str, jti: str | None) -> None:
        """End the live sessions that authenticated with a revoked token."""
        if jti is None:
            return
        for sid in await self.sessions.sids_of(user_id):
            info = await self.sessions.get(sid)
            if info is not None and info.jti == jti:
                await self.broker.disconnect(sid)
