"""Notes and their access control: owner, admins, and per-user read/write grants."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatwire.backends.broker import Broker
from chatwire.db.models import Note, User
from chatwire.db.repos.notes import NoteRepo, grants_from_access_control
from chatwire.db.repos.users import UserRepo
from chatwire.errors import forbidden, invalid, not_found
from chatwire.services.rooms import Rooms, doc_room, note_room

NOTE_EVENT = "events:note"

log = logging.getLogger("chatwire.notes")


# Open WebUI's notes list shows this many a page.
SEARCH_PAGE_SIZE = 60


def access_grants_of(note: Note) -> list[dict[str, Any]]:
    """The note's grants as Open WebUI 0.12's `access_grants` (one row per user and permission)."""
    return [
        {
            "id": f"{note.id}:{uid}:{perm}",
            "resource_type": "note",
            "resource_id": note.id,
            "principal_type": "user",
            "principal_id": uid,
            "permission": perm,
            "created_at": note.created_at,
        }
        for uid, perm in sorted(grants_from_access_control(note.access_control))
    ]


def access_control_from_grants(grants: list[dict[str, Any]]) -> dict[str, Any]:
    """Open WebUI 0.12's `access_grants` as the `access_control` chatwire stores. chatwire grants notes to single
    users: a group or public (`*`) grant is refused rather than silently dropped."""
    sections: dict[str, list[str]] = {"read": [], "write": []}
    for grant in grants:
        if grant.get("principal_type") != "user" or grant.get("principal_id") == "*":
            raise invalid("access_grants: only grants to single users (principal_type 'user') are supported")
        perm, uid = grant.get("permission"), grant.get("principal_id")
        if perm not in sections or not isinstance(uid, str) or not uid:
            raise invalid("access_grants: each grant needs a principal_id and permission 'read' or 'write'")
        if uid not in sections[perm]:
            sections[perm].append(uid)
    return {perm: {"user_ids": uids, "group_ids": []} for perm, uids in sections.items()}


def note_json(note: Note, **extra: Any) -> dict[str, Any]:
    return {
        "id": note.id,
        "user_id": note.user_id,
        "title": note.title,
        "data": note.data,
        "meta": note.meta,
        "access_control": note.access_control,
        "access_grants": access_grants_of(note),
        "is_pinned": False,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
        **extra,
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
    def __init__(self, repo: NoteRepo, broker: Broker, rooms: Rooms, users: UserRepo | None = None) -> None:
        self.repo = repo
        self.users = users
        self.broker = broker
        self.rooms = rooms
        # Told (note_id, user_id) when a user loses every grant, and (note_id) when a note is deleted, after
        # the rooms were updated: collaboration drops the user's editing sessions and the document.
        self.access_lost_hooks: list[Callable[[str, str], Awaitable[None]]] = []
        self.deleted_hooks: list[Callable[[str], Awaitable[None]]] = []
        # Told (note_id) after an update that replaced the note's `data` (the collaborative document resets).
        self.content_replaced_hooks: list[Callable[[str], Awaitable[None]]] = []
        # Outgoing webhooks (services/webhooks.py): told about each stored update of a note.
        self.notify: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

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
        notes = await self.repo.list_for_user(user.id, all_notes=user.role == "admin")
        return await self._with_owners(notes, user)

    async def _with_owners(self, notes: list[Note], user: User) -> list[dict[str, Any]]:
        """Notes with their owner (`user`, as Open WebUI lists them) and this user's `write_access`."""
        owners = (
            {u.id: u for u in await self.users.get_many(list({n.user_id for n in notes}))}
            if self.users
            else {}
        )
        out = []
        for n in notes:
            owner = owners.get(n.user_id)
            brief = {"id": owner.id, "name": owner.name, "role": owner.role} if owner else None
            out.append(note_json(n, user=brief, write_access=can_access(n, user, "write")))
        return out

    async def search(
        self,
        user: User,
        *,
        query: str | None,
        view_option: str | None,
        permission: str | None,
        order_by: str | None,
        descending: bool,
        page: int,
    ) -> dict[str, Any]:
        """Open WebUI's notes search: the notes this user can read, by title, own (`created`) or others'
        (`shared`), those it can write (`permission=write`), sorted and paged; `{items, total}`."""
        notes = await self.repo.list_for_user(user.id, all_notes=user.role == "admin")
        if query:
            needle = query.lower()
            notes = [n for n in notes if needle in n.title.lower()]
        if view_option == "created":
            notes = [n for n in notes if n.user_id == user.id]
        elif view_option == "shared":
            notes = [n for n in notes if n.user_id != user.id]
        if permission == "write":
            notes = [n for n in notes if can_access(n, user, "write")]
        key = order_by if order_by in ("title", "created_at", "updated_at") else "updated_at"
        notes.sort(key=lambda n: getattr(n, key), reverse=descending if order_by else True)
        start = (page - 1) * SEARCH_PAGE_SIZE
        return {
            "items": await self._with_owners(notes[start : start + SEARCH_PAGE_SIZE], user),
            "total": len(notes),
        }

    async def get(self, note_id: str, user: User) -> dict[str, Any]:
        note = await self.require(note_id, user, "read")
        return note_json(note, write_access=can_access(note, user, "write"))

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
        await self.report_updated(note, user, "rest")
        return body

    async def report_updated(self, note: Note, user: User, source: str) -> None:
        """Tell the webhooks that a note was stored: by a REST update (`rest`) or an editor's save (`editor`)."""
        if self.notify is not None:
            await self.notify(
                "note.updated",
                {"note": note_json(note), "user": {"id": user.id, "name": user.name}, "source": source},
            )

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
