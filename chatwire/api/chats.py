"""/api/v1/chats: create, list, read, update (merge), rename and delete chats in Open WebUI's JSON shape.

Fixed paths (`/pinned`, `/all/tags`) are registered before `/{chat_id}` so that they are not taken for ids."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from chatwire.api.deps import MAX_SKIP, ServicesDep, UserDep
from chatwire.protocol import ChatEventForm, NewChatForm

router = APIRouter(prefix="/api/v1/chats", tags=["chats"])


@router.post("/new")
async def new_chat(form: NewChatForm, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.chats.create(user, form.chat)


@router.get("/")
async def list_chats(
    user: UserDep,
    services: ServicesDep,
    skip: int = Query(0, ge=0, le=MAX_SKIP),
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return await services.chats.list_for(user, skip, limit)


@router.get("/pinned")
async def pinned_chats(_user: UserDep) -> list[dict[str, Any]]:
    """Pinned chats: chatwire has no pinning, so none are."""
    return []


@router.get("/all/tags")
async def all_tags(user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.chats.tags(user)


@router.get("/{chat_id}")
async def get_chat(chat_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.chats.get(chat_id, user)


@router.get("/{chat_id}/tags")
async def chat_tags(chat_id: str, user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    """The chat's own tags (from `chat:tags` events) in Open WebUI's TagModel shape."""
    return await services.chats.chat_tags(chat_id, user)


@router.post("/{chat_id}")
async def update_chat(
    chat_id: str, form: NewChatForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    """Update (merge) the chat: title, history, other keys; `{"chat": {"title": "..."}}` renames it."""
    return await services.chats.update(chat_id, user, form.chat)


@router.delete("/{chat_id}")
async def delete_chat(chat_id: str, user: UserDep, services: ServicesDep) -> bool:
    return await services.chats.delete(chat_id, user, stop=services.completions.stop_chat)


@router.post("/{chat_id}/messages/{message_id}/event")
async def emit_event(
    chat_id: str, message_id: str, form: ChatEventForm, user: UserDep, services: ServicesDep
) -> bool:
    """Server-to-server emit: one event into a message, delivered and persisted like a generation's."""
    await services.chats.emit_event(
        chat_id, message_id, {"type": form.type, "data": form.data}, user, services.events
    )
    return True
