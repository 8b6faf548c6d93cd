"""INTERIM (issue 10, until the chat event pipeline of issue 3 is merged): the few writes the server API's
`publish_chat_event` needs to persist a chat event into its message row. The lead replaces this module with the
pipeline's emitter and reducer at merge time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from chatwire.db.engine import Database
from chatwire.db.models import ChatMessage
from chatwire.db.repos.chats import ChatRepo
from chatwire.util import now_s


class InterimChatWriter:
    """Appends or sets fields of one chat message; creates the assistant message row when missing."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.chats = ChatRepo(db)

    async def ensure_message(self, chat_id: str, message_id: str) -> ChatMessage:
        message = await self.chats.get_message(chat_id, message_id)
        if message is None:
            message = await self.chats.add_message(
                chat_id, {"id": message_id, "role": "assistant", "content": "", "done": False}
            )
        return message

    async def append_content(self, chat_id: str, message_id: str, delta: str) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(ChatMessage)
                .where(ChatMessage.chat_id == chat_id, ChatMessage.id == message_id)
                .values(content=ChatMessage.content + delta, updated_at=now_s())
            )

    async def set_fields(self, chat_id: str, message_id: str, **values: Any) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(ChatMessage)
                .where(ChatMessage.chat_id == chat_id, ChatMessage.id == message_id)
                .values(updated_at=now_s(), **values)
            )
