"""/api/v1/notes: notes with read/write grants; updates are emitted to the note's room.

Grants come as chatwire's `access_control` or as Open WebUI 0.12's `access_grants`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from chatwire.api.deps import ServicesDep, UserDep
from chatwire.protocol import AccessControl, AccessGrant, NoteAccessForm, NoteForm, NoteUpdateForm
from chatwire.services.notes import access_control_from_grants

router = APIRouter(prefix="/api/v1/notes", tags=["notes"])


def _access(control: AccessControl | None, grants: list[AccessGrant] | None) -> dict[str, Any] | None:
    if grants is not None:
        return access_control_from_grants([g.model_dump() for g in grants])
    return control.model_dump() if control else None


@router.post("/create")
async def create_note(form: NoteForm, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    access = _access(form.access_control, form.access_grants)
    return await services.notes.create(user, form.title, form.data, form.meta, access)


@router.get("/")
async def list_notes(user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.notes.list_for(user)


@router.get("/search")
async def search_notes(
    user: UserDep,
    services: ServicesDep,
    query: str | None = Query(None, max_length=1024),
    view_option: Literal["created", "shared"] | None = None,
    permission: Literal["read", "write"] | None = None,
    order_by: Literal["title", "created_at", "updated_at"] | None = None,
    direction: Literal["asc", "desc"] | None = None,
    page: int = Query(1, ge=1, le=100_000),
) -> dict[str, Any]:
    return await services.notes.search(
        user,
        query=query,
        view_option=view_option,
        permission=permission,
        order_by=order_by,
        descending=direction == "desc",
        page=page,
    )


@router.get("/pinned")
async def pinned_notes(_user: UserDep) -> list[dict[str, Any]]:
    """Open WebUI's pinned notes: chatwire keeps no pins, so there are none."""
    return []


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
    return await services.notes.update_access(note_id, user, _access(form.access_control, form.access_grants))


@router.delete("/{note_id}/delete")
async def delete_note(note_id: str, user: UserDep, services: ServicesDep) -> bool:
    await services.notes.delete(note_id, user)
    return True
