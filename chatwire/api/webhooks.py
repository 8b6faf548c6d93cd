"""Incoming channel webhooks on Open WebUI's routes: managed by a channel's creator or an admin, used by anyone
who holds the URL (`POST /api/v1/channels/webhooks/{webhook_id}/{token}`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from chatwire.api.deps import ServicesDep, UserDep
from chatwire.protocol import ChannelWebhookForm, WebhookMessageForm

router = APIRouter(prefix="/api/v1/channels", tags=["channel webhooks"])


@router.post("/webhooks/{webhook_id}/{token}")
async def post_webhook_message(
    webhook_id: str, token: str, form: WebhookMessageForm, services: ServicesDep
) -> dict[str, Any]:
    """No login: the id and token are the credential. Wrong ones get 401 and post nothing."""
    return await services.channel_webhooks.post(webhook_id, token, form.content)


@router.get("/{channel_id}/webhooks")
async def list_webhooks(channel_id: str, user: UserDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.channel_webhooks.list_for(channel_id, user)


@router.post("/{channel_id}/webhooks/create")
async def create_webhook(
    channel_id: str, form: ChannelWebhookForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channel_webhooks.create(channel_id, user, form.name, form.profile_image_url)


@router.post("/{channel_id}/webhooks/{webhook_id}/update")
async def update_webhook(
    channel_id: str, webhook_id: str, form: ChannelWebhookForm, user: UserDep, services: ServicesDep
) -> dict[str, Any]:
    return await services.channel_webhooks.update(
        channel_id, webhook_id, user, form.name, form.profile_image_url
    )


@router.delete("/{channel_id}/webhooks/{webhook_id}/delete")
async def delete_webhook(channel_id: str, webhook_id: str, user: UserDep, services: ServicesDep) -> bool:
    return await services.channel_webhooks.delete(channel_id, webhook_id, user)
