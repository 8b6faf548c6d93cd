"""Notes with access grants (read/write per user), mirrored from `access_control` for look-ups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from chatwire.db.engine import Database
from chatwire.db.models import DocUpdate, Note, NoteGrant
from chatwire.util import new_id, now_ns


def grants_from_access_control(access_control: dict[str, Any] | None) -> set[tuple[str, str]]:
    """(user_id, permission) pairs granted by an Open WebUI `access_control` object."""
    pairs: set[tuple[str, str]] = set()
    if not access_control:
        return pairs
    for perm in ("read", "write"):
        section = access_control.get(perm) or {}
        for uid in section.get("user_ids") or []:
            if isinstance(uid, str):
                pairs.add((uid, perm))
    return pairs


class NoteRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        user_id: str,
        title: str,
        data: dict[str, Any] | None,
        meta: dict[str, Any] | None,
        access_control: dict[str, Any] | None,
    ) -> Note:
        now = now_ns()
        note = Note(
            id=new_id(),
            user_id=user_id,
            title=title,
            data=data,
            meta=meta,
            access_control=access_control,
            created_at=now,
            updated_at=now,
        )
        async with self.db.session() as s:
            s.add(note)
            await s.flush()
            for uid, perm in grants_from_access_control(access_control):
                s.add(NoteGrant(note_id=note.id, user_id=uid, permission=perm))
        return note

    async def get(self, note_id: str) -> Note | None:
        async with self.db.read() as s:
            return await s.get(Note, note_id)

    async def list_for_user(self, user_id: str, *, all_notes: bool = False) -> list[Note]:
        async with self.db.read() as s:
            q = select(Note)
            if not all_notes:
                granted = select(NoteGrant.note_id).where(NoteGrant.user_id == user_id)
                q = q.where((Note.user_id == user_id) | Note.id.in_(granted))
            return list((await s.execute(q.order_by(Note.updated_at.desc()))).scalars())

    async def update(self, note_id: str, **values: Any) -> Note | None:
        async with self.db.session() as s:
            await s.execute(update(Note).where(Note.id == note_id).values(updated_at=now_ns(), **values))
            if "access_control" in values:
                await s.execute(delete(NoteGrant).where(NoteGrant.note_id == note_id))
                for uid, perm in grants_from_access_control(values["access_control"]):
                    s.add(NoteGrant(note_id=note_id, user_id=uid, permission=perm))
            return await s.get(Note, note_id, populate_existing=True)

    async def delete(self, note_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(NoteGrant).where(NoteGrant.note_id == note_id))
            await s.execute(delete(DocUpdate).where(DocUpdate.document_id == f"note:{note_id}"))
            await s.execute(delete(Note).where(Note.id == note_id))
