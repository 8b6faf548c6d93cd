"""/api/v1/notes: notes with read/write grants; updates are emitted to the note's room."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from chatwire.api.deps import ServicesDep, UserDep
from chatwire.protocol import NoteAccessForm, NoteForm, NoteUpdateForm

router = APIRouter(prefix="/api/v1/notes", tags=["notes"])


@router.post("/create")
async def create_note(form: NoteForm, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    access = form.access_control.model_dump() if form.access_control else None
    return await services.notes.create(user, form.title, form.data, form.meta, access)


@router.get("/")
async def list_notes(user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.notes.list_for(user)


@router.get("/{note_id}")
async def get_note(note_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.notes.get(note_id, user)


@router.post("/{note_id}/update")
async def update_note(
    note_id: str, form: NoteUpdateForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.notes.update(note_id, user, form.model_dump(exclude_unset=True, exclude_none=True))


@router.post("/{note_id}/access/update")
async def update_access(
    note_id: str, form: NoteAccessForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    access = form.access_control.model_dump() if form.access_control else None
    return await services.notes.update_access(note_id, user, access)


@router.delete("/{note_id}/delete")
async def delete_note(note_id: str, user: UserDep, services: ServicesDep) -> bool:
    await services.notes.delete(note_id, user)
    return True
