"""The server API: what a trusted backend does with a scoped API key (`Authorization: Bearer cwk_...` or
`X-API-Key`). Each call is authorized by scope and leaves one audit line on the `chatwire.audit` logger."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from chatwire.api.deps import ServicesDep
from chatwire.errors import ChatwireError, ErrorCode, forbidden
from chatwire.protocol import (
    Id,
    PublishBatchForm,
    PublishForm,
    ServerChannelForm,
    ServerUserForm,
    UserIdsForm,
    WebhookEndpointForm,
    WebhookEndpointUpdateForm,
)
from chatwire.services.api_keys import ApiCaller
from chatwire.services.auth import user_json
from chatwire.services.container import Services
from chatwire.services.external_auth import MAX_USER_ID

audit_log = logging.getLogger("chatwire.audit")

router = APIRouter(tags=["server"])


def api_key_of(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _audit(
    request: Request,
    scope: str,
    outcome: str,
    *,
    caller: ApiCaller | None,
    target: str | None,
    key: str | None,
) -> None:
    audit_log.info(
        "server api",
        extra={
            "key_id": caller.key_id if caller else None,
            "key_name": caller.name if caller else None,
            "key_prefix": key[:12] if key and caller is None else None,
            "scope": scope,
            "route": f"{request.method} {request.url.path}",
            "target": target,
            "outcome": outcome,
            "remote": request.client.host if request.client else None,
        },
    )


class ServerCall:
    """An authorized server API call; the route names its `target` for the audit line."""

    def __init__(self, services: Services, caller: ApiCaller, scope: str) -> None:
        self.services = services
        self.caller = caller
        self.scope = scope
        self.target: str | None = None


def scoped(scope: str) -> Callable[[Request, Services], AsyncIterator[ServerCall]]:
    """A dependency: the call's API key must exist, be live and carry `scope` (or `admin`). It then wraps the
    whole call (body validation included) and writes exactly one audit line with the outcome."""

    async def dependency(request: Request, services: ServicesDep) -> AsyncIterator[ServerCall]:
        key = api_key_of(request)
        try:
            caller = await services.api_keys.authenticate(key)
        except ChatwireError as exc:
            services.metrics.api_call(scope, exc.code.value)
            _audit(request, scope, exc.code.value, caller=None, target=None, key=key)
            raise
        if not caller.allows(scope):
            services.metrics.api_call(scope, ErrorCode.FORBIDDEN.value)
            _audit(request, scope, ErrorCode.FORBIDDEN.value, caller=caller, target=None, key=key)
            raise forbidden(f"this API key lacks the {scope!r} scope")
        call = ServerCall(services, caller, scope)
        outcome = "ok"
        try:
            yield call
        except ChatwireError as exc:
            outcome = exc.code.value
            raise
        except RequestValidationError:
            outcome = ErrorCode.INVALID_PAYLOAD.value
            raise
        except Exception:
            outcome = ErrorCode.INTERNAL.value
            raise
        finally:
            services.metrics.api_call(scope, outcome)
            _audit(request, scope, outcome, caller=caller, target=call.target, key=None)

    return dependency


PublishCall = Annotated[ServerCall, Depends(scoped("publish"))]
ChannelsCall = Annotated[ServerCall, Depends(scoped("channels"))]
PresenceCall = Annotated[ServerCall, Depends(scoped("presence"))]
WebhooksCall = Annotated[ServerCall, Depends(scoped("webhooks"))]


@router.post("/api/v1/events/publish")
async def publish(form: PublishForm, call: PublishCall) -> dict[str, Any]:
    """Send `{room, event, data}`; `events` with chat_id/message_id to `user:{id}` is persisted too."""
    call.target = f"{form.room} {form.event}"
    return await call.services.server_api.publish(form.room, form.event, form.data)


@router.post("/api/v1/events/publish/batch")
async def publish_batch(form: PublishBatchForm, call: PublishCall) -> dict[str, Any]:
    """Send up to 1,000 `{room, event, data}` in order; one bad item refuses the batch and nothing is sent."""
    call.target = f"{len(form.events)} events"
    items = [(e.room, e.event, e.data) for e in form.events]
    return await call.services.server_api.publish_many(items)


@router.put("/api/v1/server/users/{user_id}")
async def ensure_user(user_id: Id, form: ServerUserForm, call: ChannelsCall) -> dict[str, Any]:
    """Create a user of your app as its first login would (so it can be made a channel member before it ever
    connects); an existing user gets the new name. Roles are not set here: they come from tokens."""
    call.target = f"user:{user_id}"
    if len(user_id) > MAX_USER_ID:
        raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"user id must be 1 to {MAX_USER_ID} characters")
    email = str(form.email) if form.email is not None else None
    return user_json(await call.services.auth.ensure_external_user(user_id, form.name, email))


@router.post("/api/v1/server/channels")
async def create_channel(form: ServerChannelForm, call: ChannelsCall) -> dict[str, Any]:
    call.target = f"channel {form.name}"
    return await call.services.server_api.create_channel(
        name=form.name,
        description=form.description,
        type=form.type,
        is_private=form.is_private,
        user_ids=form.user_ids,
    )


@router.get("/api/v1/server/channels/{channel_id}")
async def get_channel(channel_id: str, call: ChannelsCall) -> dict[str, Any]:
    call.target = f"channel:{channel_id}"
    return await call.services.server_api.get_channel(channel_id)


@router.post("/api/v1/server/channels/{channel_id}/members/add")
async def add_members(channel_id: str, form: UserIdsForm, call: ChannelsCall) -> dict[str, Any]:
    call.target = f"channel:{channel_id} +{','.join(form.user_ids[:20])}"
    return await call.services.server_api.add_members(channel_id, form.user_ids)


@router.post("/api/v1/server/channels/{channel_id}/members/remove")
async def remove_members(channel_id: str, form: UserIdsForm, call: ChannelsCall) -> dict[str, Any]:
    call.target = f"channel:{channel_id} -{','.join(form.user_ids[:20])}"
    return await call.services.server_api.remove_members(channel_id, form.user_ids)


@router.delete("/api/v1/server/channels/{channel_id}")
async def delete_channel(channel_id: str, call: ChannelsCall) -> dict[str, Any]:
    call.target = f"channel:{channel_id}"
    await call.services.server_api.delete_channel(channel_id)
    return {"status": True}


@router.get("/api/v1/presence")
async def presence(call: PresenceCall, user_id: Id | None = Query(None)) -> dict[str, Any]:
    """Online users with their sessions and each session's rooms (one user with `?user_id=`)."""
    call.target = f"user:{user_id}" if user_id else "all"
    return await call.services.server_api.presence(user_id)


@router.post("/api/v1/presence/users/{user_id}/disconnect")
async def disconnect_user(user_id: str, call: PresenceCall) -> dict[str, Any]:
    call.target = f"user:{user_id}"
    return {"disconnected": await call.services.server_api.disconnect_user(user_id)}


# outgoing webhooks (services/webhooks.py)


@router.post("/api/v1/server/webhooks")
async def create_webhook(form: WebhookEndpointForm, call: WebhooksCall) -> dict[str, Any]:
    """Register an endpoint for event kinds; the answer carries its signing `secret` (shown here and on rotation
    only)."""
    call.target = f"webhook {form.url[:200]}"
    return await call.services.webhooks.create(form.url, form.events, form.description, call.caller.key_id)


@router.get("/api/v1/server/webhooks")
async def list_webhooks(call: WebhooksCall) -> list[dict[str, Any]]:
    call.target = "all"
    return await call.services.webhooks.endpoints()


@router.get("/api/v1/server/webhooks/{endpoint_id}")
async def get_webhook(endpoint_id: str, call: WebhooksCall) -> dict[str, Any]:
    call.target = f"webhook:{endpoint_id}"
    return await call.services.webhooks.get(endpoint_id)


@router.patch("/api/v1/server/webhooks/{endpoint_id}")
async def update_webhook(
    endpoint_id: str, form: WebhookEndpointUpdateForm, call: WebhooksCall
) -> dict[str, Any]:
    call.target = f"webhook:{endpoint_id}"
    return await call.services.webhooks.update(
        endpoint_id,
        url=form.url,
        events=form.events,
        description=form.description,
        active=form.active,
        rotate_secret=form.rotate_secret,
    )


@router.delete("/api/v1/server/webhooks/{endpoint_id}")
async def delete_webhook(endpoint_id: str, call: WebhooksCall) -> dict[str, Any]:
    call.target = f"webhook:{endpoint_id}"
    await call.services.webhooks.delete(endpoint_id)
    return {"status": True}


@router.get("/api/v1/server/webhooks/{endpoint_id}/deliveries")
async def webhook_deliveries(
    endpoint_id: str,
    call: WebhooksCall,
    status: str | None = Query(None, max_length=16),
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """The endpoint's newest deliveries (optionally `?status=pending|delivered|dead`)."""
    call.target = f"webhook:{endpoint_id}"
    return await call.services.webhooks.deliveries(endpoint_id, status, limit)


@router.post("/api/v1/server/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry")
async def retry_delivery(endpoint_id: str, delivery_id: str, call: WebhooksCall) -> dict[str, Any]:
    """Send a pending or dead delivery again now (same `webhook-id`)."""
    call.target = f"webhook:{endpoint_id} {delivery_id}"
    return await call.services.webhooks.redeliver(endpoint_id, delivery_id)


# presence and history of rooms (services/room_presence.py, services/history.py)


@router.get("/api/v1/presence/rooms/{room}")
async def room_presence(room: str, call: PresenceCall) -> dict[str, Any]:
    """Present users of `channel:{id}` (online members) or `note:{id}` (editors)."""
    call.target = room
    return await call.services.room_presence.room(room)


@router.get("/api/v1/server/rooms/{room}/events")
async def room_events(
    room: str,
    call: PublishCall,
    since: str | None = Query(None, max_length=128),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """A recoverable room's (`user:{id}`, `channel:{id}`) events after offset `since`, paged."""
    call.target = room
    return await call.services.history.read(room, since, limit)
