"""/api/v1/auths: sign up, sign in, who am I, add user (admin), whom to ask for access, sign out (revokes the
token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from chatwire.api.deps import AdminDep, IdentityDep, ServicesDep
from chatwire.db.models import User
from chatwire.protocol import AddUserForm, SigninForm, SignupForm
from chatwire.services.auth import user_json, user_permissions
from chatwire.services.container import Services

router = APIRouter(prefix="/api/v1/auths", tags=["auths"])


def session_json(services: Services, user: User) -> dict[str, Any]:
    token, expires_at = services.auth.issue_token(user)
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_at": expires_at,
        **user_json(user),
        "permissions": user_permissions(user),
    }


@router.post("/signup")
async def signup(form: SignupForm, services: ServicesDep) -> dict[str, Any]:
    user = await services.auth.signup(form.name, str(form.email), form.password)
    await services.channels.join_public_channels([user])
    return session_json(services, user)


@router.post("/signin")
async def signin(form: SigninForm, request: Request, services: ServicesDep) -> dict[str, Any]:
    ip = request.client.host if request.client else None
    return session_json(services, await services.auth.signin(str(form.email), form.password, ip))


@router.get("/")
async def me(identity: IdentityDep, services: ServicesDep) -> dict[str, Any]:
    return session_json(services, identity.user)


@router.post("/add")
async def add_user(form: AddUserForm, _admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    user = await services.auth.add_user(form.name, str(form.email), form.password, form.role)
    await services.channels.join_public_channels([user])
    return session_json(services, user)


@router.get("/admin/details")
async def admin_details(_identity: IdentityDep, services: ServicesDep) -> dict[str, Any]:
    """Whom to ask for access (Open WebUI's pending-account page shows it): the primary admin's name and email."""
    first = await services.users.list(0, 1)
    return {"name": first[0].name, "email": first[0].email} if first else {"name": None, "email": None}


@router.post("/signout")
async def signout(identity: IdentityDep, services: ServicesDep) -> dict[str, Any]:
    await services.auth.revoke(identity)
    await services.disconnect_token(identity.user.id, identity.jti)
    return {"status": True}
