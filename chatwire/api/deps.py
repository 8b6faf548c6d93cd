"""FastAPI dependencies: the service container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chatwire.db.models import User
from chatwire.errors import ChatwireError, ErrorCode, forbidden
from chatwire.services.auth import Identity, has_access
from chatwire.services.container import Services


async def get_services(request: Request) -> Services:
    """The app's service container. `async` so FastAPI runs it on the loop: a sync dependency costs every request
    a round trip through the threadpool, for one attribute read."""
    return request.app.state.services  # type: ignore[no-any-return]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get("token")


async def get_identity(request: Request, services: Annotated[Services, Depends(get_services)]) -> Identity:
    token = bearer_token(request)
    if token is None:
        raise ChatwireError(ErrorCode.UNAUTHORIZED, "not authenticated")
    return await services.auth.authenticate(token)


async def get_user(identity: Annotated[Identity, Depends(get_identity)]) -> User:
    if not has_access(identity.user):
        raise forbidden("account pending approval")
    return identity.user


async def get_admin(user: Annotated[User, Depends(get_user)]) -> User:
    if user.role != "admin":
        raise forbidden("admin only")
    return user


# Upper bound of `skip` query parameters: larger values overflow PostgreSQL's BIGINT offset.
MAX_SKIP = 1_000_000_000

ServicesDep = Annotated[Services, Depends(get_services)]
IdentityDep = Annotated[Identity, Depends(get_identity)]
UserDep = Annotated[User, Depends(get_user)]
AdminDep = Annotated[User, Depends(get_admin)]
