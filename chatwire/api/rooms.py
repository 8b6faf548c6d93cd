"""Presence and history for any client: who is in a channel or a note now, a channel's events by offset."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from chatwire.api.deps import ServicesDep, UserDep

router = APIRouter(tags=["rooms"])

Since = Query(None, max_length=128)
Limit = Query(100, ge=1, le=1000)


@router.get("/api/v1/channels/{channel_id}/presence")
async def channel_presence(channel_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    """Members with a live session anywhere in the fleet (members only)."""
    return await services.room_presence.channel(channel_id, user)


@router.get("/api/v1/notes/{note_id}/presence")
async def note_presence(note_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    """Users editing the note's document now (read access)."""
    return await services.room_presence.note(note_id, user)


@router.get("/api/v1/channels/{channel_id}/events")
async def channel_events(
    channel_id: str, user: UserDep, services: ServicesDep, since: str | None = Since, limit: int = Limit
) -> dict[str, Any]:
    """The channel's events after offset `since` (members only), paged by `limit`."""
    return await services.history.channel(channel_id, user, since, limit)
