"""/api/v1/channels: channels, members, messages, threads and reactions; each change is emitted live."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from chatwire.api.deps import MAX_SKIP, ServicesDep, UserDep
from chatwire.protocol import ChannelForm, MessageForm, MessageUpdateForm, PinForm, ReactionForm, UserIdsForm

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])

Skip = Query(0, ge=0, le=MAX_SKIP)
Limit = Query(50, ge=1, le=1000)


@router.post("/create")
async def create_channel(form: ChannelForm, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.channels.create(
        user,
        name=form.name,
        description=form.description,
        type=form.type,
        is_private=form.is_private,
        user_ids=form.user_ids,
        data=form.data,
        meta=form.meta,
    )


@router.get("/")
async def list_channels(user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.channels.list_for(user)


@router.get("/{channel_id}")
async def get_channel(channel_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.channels.get_for(channel_id, user)


@router.get("/{channel_id}/members")
async def channel_members(channel_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.channels.members(channel_id, user, services.presence.online)


@router.post("/{channel_id}/update/members/add")
async def add_members(
    channel_id: str, form: UserIdsForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.add_members(channel_id, user, form.user_ids)


@router.post("/{channel_id}/update/members/remove")
async def remove_members(
    channel_id: str, form: UserIdsForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.remove_members(channel_id, user, form.user_ids)


@router.delete("/{channel_id}/delete")
async def delete_channel(channel_id: str, user: UserDep, services: ServicesDep) -> bool:
    await services.channels.delete(channel_id, user)
    return True


@router.get("/{channel_id}/messages")
async def list_messages(
    channel_id: str, user: UserDep, services: ServicesDep, skip: int = Skip, limit: int = Limit
) -> list[dict[str, Any]]:
    return await services.channels.list_messages(channel_id, user, skip, limit)


# Open WebUI's pinned-messages panel asks for 20 a page.
PINNED_PAGE = 20


@router.get("/{channel_id}/messages/pinned")
async def pinned_messages(
    channel_id: str,
    user: UserDep,
    services: ServicesDep,
    page: int = Query(1, ge=1, le=MAX_SKIP // PINNED_PAGE),
) -> list[dict[str, Any]]:
    return await services.channels.pinned(channel_id, user, (page - 1) * PINNED_PAGE, PINNED_PAGE)


@router.post("/{channel_id}/messages/{message_id}/pin")
async def pin_message(
    channel_id: str, message_id: str, form: PinForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.pin(channel_id, message_id, user, form.is_pinned)


@router.post("/{channel_id}/messages/post")
async def post_message(
    channel_id: str, form: MessageForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.post(
        channel_id,
        user,
        content=form.content,
        parent_id=form.parent_id,
        temp_id=form.temp_id,
        data=form.data,
        meta=form.meta,
    )


@router.get("/{channel_id}/messages/{message_id}/thread")
async def thread(
    channel_id: str,
    message_id: str,
    user: UserDep,
    services: ServicesDep,
    skip: int = Skip,
    limit: int = Limit,
) -> list[dict[str, Any]]:
    return await services.channels.thread(channel_id, message_id, user, skip, limit)


@router.post("/{channel_id}/messages/{message_id}/update")
async def update_message(
    channel_id: str, message_id: str, form: MessageUpdateForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.update_message(channel_id, message_id, user, form.content, form.data)


@router.post("/{channel_id}/messages/{message_id}/reactions/add")
async def add_reaction(
    channel_id: str, message_id: str, form: ReactionForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.react(channel_id, message_id, user, form.name, add=True)


@router.post("/{channel_id}/messages/{message_id}/reactions/remove")
async def remove_reaction(
    channel_id: str, message_id: str, form: ReactionForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channels.react(channel_id, message_id, user, form.name, add=False)


@router.delete("/{channel_id}/messages/{message_id}/delete")
async def delete_message(channel_id: str, message_id: str, user: UserDep, services: ServicesDep) -> bool:
    await services.channels.delete_message(channel_id, message_id, user)
    return True
