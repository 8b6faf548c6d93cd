"""Builds every repository, backend and service once, from the settings; transports receive this object."""

from __future__ import annotations

from dataclasses import dataclass

from chatwire.backends.broker import Broker
from chatwire.backends.eventlog import EventLog
from chatwire.backends.eventlog_memory import MemoryEventLog
from chatwire.backends.sessions import SessionStore
from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.channels import ChannelRepo
from chatwire.db.repos.chats import ChatRepo
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import UserRepo
from chatwire.services.auth import AuthService
from chatwire.services.channels import ChannelService
from chatwire.services.chats import ChatService
from chatwire.services.notes import NoteService
from chatwire.services.presence import PresenceService
from chatwire.services.rooms import Rooms


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
    eventlog: EventLog

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        broker: Broker,
        sessions: SessionStore,
        eventlog: EventLog | None = None,
    ) -> Services:
        users = UserRepo(db)
        if eventlog is None:
            eventlog = MemoryEventLog(settings.recovery_history_size, settings.recovery_history_seconds)
        rooms = Rooms(broker, sessions)
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
            chats=ChatService(ChatRepo(db), broker, eventlog),
            notes=NoteService(NoteRepo(db), broker, rooms),
            presence=PresenceService(sessions, users),
            eventlog=eventlog,
        )

    async def disconnect_token(self, user_id: str, jti: str | None) -> None:
        """End the live sessions that authenticated with a revoked token."""
        if jti is None:
            return
        for sid in await self.sessions.sids_of(user_id):
            info = await self.sessions.get(sid)
            if info is not None and info.jti == jti:
                await self.broker.disconnect(sid)
