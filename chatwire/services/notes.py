"""Notes and their access control: owner, admins, and per-user read/write grants."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.backends.broker import Broker
from chatwire.db.models import Note, User
from chatwire.db.repos.notes import NoteRepo, grants_from_access_control
from chatwire.errors import forbidden, not_found
from chatwire.services.rooms import Rooms, doc_room, note_room

NOTE_EVENT = "events:note"

log = logging.getLogger("chatwire.notes")


def note_json(note: Note) -> dict[str, Any]:
    return {
        "id": note.id,
        "user_id": note.user_id,
        "title": note.title,
        "data": note.data,
        "meta": note.meta,
        "access_control": note.access_control,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
    }


def can_access(note: Note, user: User, permission: str) -> bool:
    """Owner and admins can do anything; others need a grant (write implies read)."""
    if user.role == "admin" or note.user_id == user.id:
        return True
    grants = grants_from_access_control(note.access_control)
    if (user.id, "write") in grants:
        return True
    return permission == "read" and (user.id, "read") in grants


class NoteService:
    def __init__(self, repo: NoteRepo, broker: Broker, rooms: Rooms) -> None:
        self.repo = repo
        self.broker = broker
        self.rooms = rooms
        # Told (note_id, user_id) when a user loses every grant, and (note_id) when a note is deleted, after
        # the rooms were updated: collaboration drops the user's editing sessions and the document.
        self.access_lost_hooks: list[Callable[[str, str], Awaitable[None]]] = []
        self.deleted_hooks: list[Callable[[str], Awaitable[None]]] = []
        # Told (note_id) after an update that replaced the note's `data` (the collaborative document resets).
        self.content_replaced_hooks: list[Callable[[str], Awaitable[None]]] = []

    async def require(self, note_id: str, user: User, permission: str) -> Note:
        note = await self.repo.get(note_id)
        if note is None:
            raise not_found("note")
        if not can_access(note, user, permission):
            if can_access(note, user, "read"):
                raise forbidden("write access to this note is required")
            raise not_found("note")
        return note

    async def create(
        self,
        user: User,
        title: str,
        data: dict[str, Any] | None,
        meta: dict[str, Any] | None,
        access_control: dict[str, Any] | None,
    ) -> dict[str, Any]:
        note = await self.repo.create(
            user_id=user.id, title=title, data=data, meta=meta, access_control=access_control
        )
        return note_json(note)

    async def list_for(self, user: User) -> list[dict[str, Any]]:
        return [note_json(n) for n in await self.repo.list_for_user(user.id, all_notes=user.role == "admin")]

    async def get(self, note_id: str, user: User) -> dict[str, Any]:
        return note_json(await self.require(note_id, user, "read"))

    async def update(self, note_id: str, user: User, changes: dict[str, Any]) -> dict[str, Any]:
        """Update title/data/meta (write access) and tell the note's room."""
        await self.require(note_id, user, "write")
        note = await self.repo.update(note_id, **changes)
        if note is None:
            raise not_found("note")
        if "data" in changes:
            for hook in self.content_replaced_hooks:
                try:
                    await hook(note_id)
                except Exception:
                    log.exception("content-replaced hook failed", extra={"note_id": note_id})
        body = note_json(note)
        await self.broker.emit(NOTE_EVENT, body, room=note_room(note_id))
        return body

    async def update_access(
        self, note_id: str, user: User, access_control: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Change grants (owner or admin); users who lost read access leave the note's rooms at once."""
        note = await self.require(note_id, user, "read")
        if not (user.role == "admin" or note.user_id == user.id):
            raise forbidden("only the owner or an admin may change access")
        before = {uid for uid, _ in grants_from_access_control(note.access_control)}
        updated = await self.repo.update(note_id, access_control=access_control)
        if updated is None:
            raise not_found("note")
        after = {uid for uid, _ in grants_from_access_control(access_control)}
        for uid in before - after:
            if uid != updated.user_id:
                await self.rooms.remove_user(uid, note_room(note_id))
                await self.rooms.remove_user(uid, doc_room(f"note:{note_id}"))
                for hook in self.access_lost_hooks:
                    try:
                        await hook(note_id, uid)
                    except Exception:
                        log.exception("access-lost hook failed", extra={"note_id": note_id, "user_id": uid})
        body = note_json(updated)
        await self.broker.emit(NOTE_EVENT, body, room=note_room(note_id))
        return body

    async def delete(self, note_id: str, user: User) -> None:
        note = await self.require(note_id, user, "read")
        if not (user.role == "admin" or note.user_id == user.id):
            raise forbidden("only the owner or an admin may delete this note")
        await self.repo.delete(note_id)
        await self.broker.close_room(note_room(note_id))
        await self.broker.close_room(doc_room(f"note:{note_id}"))
        for hook in self.deleted_hooks:
            try:
                await hook(note_id)
            except Exception:
                log.exception("note-deleted hook failed", extra={"note_id": note_id})
