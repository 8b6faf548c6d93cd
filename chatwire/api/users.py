"""/api/v1/users: the user list (admin), as chatwire's plain list or Open WebUI's paged `{users, total}`, an admin's
edit of a user, and the directory every signed-in user may search."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from chatwire.api.deps import MAX_SKIP, AdminDep, ServicesDep, UserDep
from chatwire.errors import not_found
from chatwire.protocol import UserUpdateForm
from chatwire.services.auth import user_json

router = APIRouter(prefix="/api/v1/users", tags=["users"])

# Open WebUI's admin page shows this many users a page.
PAGE_SIZE = 30
MAX_PAGE = MAX_SKIP // PAGE_SIZE


@router.get("/search")
async def search_users(
    user: UserDep,
    services: ServicesDep,
    query: str = Query("", max_length=100),
    page: int = Query(1, ge=1, le=10_000),
) -> dict[str, Any]:
    return await services.directory.search(user, query, page)


@router.get("/{user_id}/info")
async def user_info(user_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.directory.info(user, user_id)


@router.get("/", response_model=None)
async def list_users(
    _admin: AdminDep,
    services: ServicesDep,
    skip: int = Query(0, ge=0, le=MAX_SKIP),
    limit: int = Query(1000, ge=1, le=10_000),
    page: int | None = Query(None, ge=1, le=MAX_PAGE),
    query: str | None = Query(None, max_length=255),
    order_by: Literal["name", "email", "role", "last_active_at", "created_at"] | None = None,
    direction: Literal["asc", "desc"] | None = None,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Without `page`: a bare list (`skip`/`limit`). With `page` (what Open WebUI's admin page sends): `{users,
    total}`, 30 a page, optionally filtered by `query` and sorted by `order_by`/`direction`."""
    if page is None:
        return [user_json(u) for u in await services.users.list(skip, limit)]
    users, total = await services.users.page(
        query=query,
        order_by=order_by,
        descending=direction == "desc",
        skip=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return {"users": [{**user_json(u), "group_ids": []} for u in users], "total": total}


@router.post("/{user_id}/update")
async def update_user(
    user_id: str, form: UserUpdateForm, admin: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    """Open WebUI's admin edit of a user. A new role or password ends the user's live sessions everywhere (the
    tabs reconnect with the new role: a user made `pending` keeps only its own room)."""
    user, end_sessions = await services.auth.admin_update(
        admin, user_id, **form.model_dump(exclude_none=True)
    )
    if end_sessions:
        await services.disconnect_user(user_id)
    return user_json(user)


@router.post("/{user_id}/sessions/revoke")
async def sign_out_everywhere(user_id: str, admin: AdminDep, services: ServicesDep) -> bool:
    """Open WebUI's "Sign out all devices": every token chatwire issued to the user so far is refused, on every
    process, and its live sessions end. API keys are not tokens of a user and stay valid."""
    await services.auth.sign_out_everywhere(admin, user_id)
    await services.disconnect_user(user_id)
    return True


@router.get("/{user_id}/groups")
async def user_groups(user_id: str, _admin: AdminDep, services: ServicesDep) -> list[dict[str, Any]]:
    """The user's groups (Open WebUI's edit-user dialog reads them): chatwire has no groups, so none."""
    if await services.users.get(user_id) is None:
        raise not_found("user")
    return []
