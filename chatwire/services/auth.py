"""Accounts and tokens: argon2 password hashes, HS256 JWTs with expiry, revocation by token id."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from chatwire.backends.attempts import AttemptLog
from chatwire.backends.attempts_memory import MemoryAttemptLog
from chatwire.db.models import User
from chatwire.db.repos.users import NewUser, UserRepo
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.services.auth_cache import MembershipCache, RevocationSet, TokenCache, UserCache
from chatwire.services.external_auth import (
    DEFAULT_NAMESPACE,
    RESERVED_USER_IDS,
    ExternalClaims,
    ExternalVerifier,
    external_user_id,
)
from chatwire.services.singleflight import BatchLoader, KeyedBatcher
from chatwire.util import new_id, now_ms, now_s, text_problem

ROLES = ("admin", "user", "pending")
# Roles that may use the service; any other (`pending`) may only sign in and hear its own `user:` room.
ACCESS_ROLES = frozenset({"admin", "user"})


def has_access(user: User) -> bool:
    """Whether `user`'s role lets it read or do anything beyond its own account (not `pending`)."""
    return user.role in ACCESS_ROLES


log = logging.getLogger("chatwire.auth")

# A membership notice to the fleet names at most this many users; a larger change drops every process's cache.
MEMBERSHIP_NOTICE_IDS = 500


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the user and the token that proved it."""

    user: User
    jti: str | None
    expires_at: int | None

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "role": user.role,
        "profile_image_url": user.profile_image_url,
        "last_active_at": user.last_active_at,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _permissions(flags: dict[str, tuple[str, ...]], on: set[str]) -> dict[str, dict[str, bool]]:
    return {group: {name: f"{group}.{name}" in on for name in names} for group, names in flags.items()}


# The permission flags Open WebUI's frontend reads from the session user (`permissions`), by group.
_PERMISSION_FLAGS: dict[str, tuple[str, ...]] = {
    "workspace": ("models", "knowledge", "prompts", "tools", "skills"),
    "sharing": (
        "notes",
        "public_notes",
        "public_chats",
        "open_chats",
        "models",
        "knowledge",
        "prompts",
        "tools",
    ),
    "access_grants": ("allow_users", "allow_groups"),
    "chat": (
        "controls",
        "valves",
        "system_prompt",
        "params",
        "file_upload",
        "web_upload",
        "delete",
        "delete_message",
        "continue_response",
        "regenerate_response",
        "rate_response",
        "edit",
        "share",
        "export",
        "import",
        "stt",
        "tts",
        "call",
        "multiple_models",
        "temporary",
        "temporary_enforced",
    ),
    "features": (
        "api_keys",
        "notes",
        "folders",
        "channels",
        "encrypted_channels",
        "direct_tool_servers",
        "web_search",
        "image_generation",
        "code_interpreter",
        "memories",
        "automations",
        "calendar",
        "webhooks",
    ),
    "settings": ("interface",),
}
# What chatwire itself provides to every user: chats (edit, delete, regenerate, temporary), channels, notes shared
# with single users. Workspaces, tools, groups and the rest belong to the deployment around chatwire.
_CHATWIRE_PERMISSIONS = {
    "access_grants.allow_users",
    "sharing.notes",
    "chat.controls",
    "chat.params",
    "chat.delete",
    "chat.delete_message",
    "chat.continue_response",
    "chat.regenerate_response",
    "chat.edit",
    "chat.multiple_models",
    "chat.temporary",
    "features.notes",
    "features.channels",
    "settings.interface",
}


def user_permissions(user: User) -> dict[str, dict[str, bool]]:
    """The session user's `permissions` in Open WebUI's shape (its chat and notes pages need them): what chatwire
    serves is allowed, what lies outside it is off. The same for every role; admins pass checks by role anyway."""
    return _permissions(_PERMISSION_FLAGS, _CHATWIRE_PERMISSIONS)


class Throttled(ChatwireError):
    """`rate_limited` with the seconds after which a retry may succeed (HTTP `Retry-After`)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message)
        self.retry_after = max(1, int(retry_after + 0.999))


def _issued_ms(claims: dict[str, Any]) -> int:
    """When a token of ours was issued, in Unix ms (0 when it carries no usable `iat`: refused by any cut-off)."""
    for name, scale in (("iat_ms", 1), ("iat", 1000)):
        value = claims.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value * scale)
    return 0


class SigninThrottle:
    """Sign-in guessing limits: failed attempts per account (email) and per client IP in a sliding window.

    Checked before the password hash is computed, so a refused attempt costs a look-up, not argon2. The counts
    live in an AttemptLog: in the process when embedded, in Redis for a fleet (one limit across its processes)."""

    def __init__(self, accounts: AttemptLog, ips: AttemptLog) -> None:
        self.accounts = accounts
        self.ips = ips

    @classmethod
    def in_memory(cls, account_limit: int, ip_limit: int, window: float) -> SigninThrottle:
        return cls(MemoryAttemptLog(account_limit, window), MemoryAttemptLog(ip_limit, window))

    async def check(self, email: str, ip: str | None) -> None:
        wait = await self.accounts.retry_after(email.lower())
        if wait is not None:
            raise Throttled("too many failed sign-ins for this account; retry later", wait)
        wait = await self.ips.retry_after(ip) if ip else None
        if wait is not None:
            raise Throttled("too many failed sign-ins from this address; retry later", wait)

    async def failed(self, email: str, ip: str | None) -> None:
        await self.accounts.add(email.lower())
        if ip:
            await self.ips.add(ip)

    async def succeeded(self, email: str) -> None:
        await self.accounts.clear(email.lower())


class AuthService:
    def __init__(
        self,
        users: UserRepo,
        *,
        secret: str,
        token_ttl: int,
        default_role: str = "user",
        external: ExternalVerifier | None = None,
        external_default_role: str = "user",
        throttle: SigninThrottle | None = None,
        external_namespace: str | None = None,
    ) -> None:
        self.users = users
        # External users' ids live in this namespace (the configured issuer): `external_user_id`.
        self.external_namespace = external_namespace or (
            external.namespace if external is not None else DEFAULT_NAMESPACE
        )
        self.throttle = throttle or SigninThrottle.in_memory(10, 50, 300.0)
        self.external = external
        self.external_default_role = external_default_role
        # Run once for each batch of users created from external identities (e.g. join the open channels).
        self.provisioned_hooks: list[Callable[[list[User]], Awaitable[None]]] = []
        self.secret = secret
        self.token_ttl = token_ttl
        self.default_role = default_role
        self._hasher = PasswordHasher()
        # The connect path's memory (see auth_cache.py): revocations mirrored from the database, verified claims,
        # user rows. Socket connects and joins use the cached rows; REST reads the row every time.
        self.revocations = RevocationSet(users.revoked_tokens, users.is_revoked)
        self.tokens = TokenCache()
        self.user_cache = UserCache()
        # Misses of the user cache on the connect path: read in batches, each user once (singleflight.py).
        self.user_loader: BatchLoader[User] = BatchLoader(self._read_users)
        # First sights of external users: their pre-namespace rows read, and their new rows written, in batches.
        self.legacy_loader: BatchLoader[User] = BatchLoader(self._read_legacy)
        self.provisioner: KeyedBatcher[NewUser, tuple[User, bool]] = KeyedBatcher(
            self._provision_batch, max_batch=200
        )
        # Each user's channel ids (the rooms of a user-join); ChannelService reads it, ChannelRepo's writes and
        # the fleet's notices drop entries (see forget_memberships).
        self.memberships = MembershipCache()
        users.changed_hooks.append(self.forget_user)
        # Fleet mode: announce a revocation or user change to the other processes (set by the fleet wiring).
        self.fleet_notify: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self._background: set[asyncio.Future[None]] = set()

    # tokens

    def issue_token(self, user: User) -> tuple[str, int]:
        """A signed token for `user` and its expiry (epoch seconds)."""
        ms = now_ms()
        exp = ms // 1000 + self.token_ttl
        # `iat_ms`: the issue time to the millisecond, compared with the user's `tokens_valid_after` cut-off
        # (`iat` stays whole seconds, rounded down, so no verifier sees it in the future).
        claims = {"id": user.id, "jti": new_id(), "iat": ms // 1000, "iat_ms": ms, "exp": exp}
        return jwt.encode(claims, self.secret, algorithm="HS256"), exp

    def decode(self, token: str) -> dict[str, Any]:
        cached = self.tokens.get(token)
        if cached is not None:
            return cached
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp", "id"]})
        except jwt.ExpiredSignatureError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "token expired") from exc
        except jwt.PyJWTError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token") from exc
        if not isinstance(claims.get("id"), str):
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token")
        self.tokens.put(token, claims)
        return claims

    async def authenticate(self, token: Any, *, recent_user: bool = False) -> Identity:
        """The identity a token proves; raises `unauthorized` for a bad, expired, revoked or orphan token.

        `recent_user`: the user row may come from the user cache (socket connects and joins); revocation is
        answered by the revocation set, which every sign-out in the fleet updates before it returns."""
        if not isinstance(token, str) or not token:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "missing token")
        if self.external is not None and not (token in self.tokens or self._is_own(token, self.external)):
            return await self._authenticate_external(self.external, token, recent_user)
        claims = self.decode(token)
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        if jti is not None and await self.revocations.is_revoked(jti):
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "token revoked")
        user = await self._user(claims["id"], recent_user)
        if user is None:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "unknown user")
        if user.tokens_valid_after and _issued_ms(claims) < user.tokens_valid_after:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "token revoked (signed out everywhere)")
        return Identity(user=user, jti=jti, expires_at=claims.get("exp"))

    async def _user(self, user_id: str, recent: bool) -> User | None:
        if recent:
            hit = self.user_cache.get(user_id)
            if hit is not None:
                return hit
            return await self.user_loader.load(user_id)
        generation = self.user_cache.generation(user_id)
        user = await self.users.get(user_id)
        if user is not None:
            self.user_cache.put(user_id, user, generation)
        return user

    async def _read_users(self, user_ids: list[str]) -> dict[str, User]:
        """One query for a batch of cache misses; each row is cached unless its user changed during the read."""
        generations = {uid: self.user_cache.generation(uid) for uid in user_ids}
        rows = {u.id: u for u in await self.users.get_many(user_ids)}
        for uid, user in rows.items():
            self.user_cache.put(uid, user, generations[uid])
        return rows

    def forget_user(self, user_id: str) -> None:
        """Drop a cached row after a change to the user (rename, role, deletion), here and on every other
        process of a fleet (UserRepo calls this for every change it writes)."""
        self.user_cache.forget(user_id)
        self.memberships.forget(user_id)
        if self.fleet_notify is not None:
            self._spawn(self.fleet_notify("user_changed", {"user_id": user_id}))

    def forget_memberships(self, user_ids: list[str]) -> None:
        """Drop the cached channel ids of users whose memberships changed, here and on every other process of a
        fleet (ChannelRepo calls this after every membership write it commits). Past `MEMBERSHIP_NOTICE_IDS`
        users (a standard channel made for everyone) the notice tells the others to drop all of them."""
        for user_id in user_ids:
            self.memberships.forget(user_id)
        if self.fleet_notify is not None:
            notice: dict[str, Any] = (
                {"memberships": list(user_ids)}
                if len(user_ids) <= MEMBERSHIP_NOTICE_IDS
                else {"memberships": "all"}
            )
            self._spawn(self.fleet_notify("user_changed", notice))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:  # the other processes' rows then expire by the cache's TTL
                log.warning("user change notice not sent", exc_info=True)

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # fleet messages (see FleetBackends.wire_auth)

    def fleet_revoked(self, payload: dict[str, Any]) -> None:
        """Another process revoked a token."""
        jti, exp = payload.get("jti"), payload.get("expires_at")
        if isinstance(jti, str) and isinstance(exp, int):
            self.revocations.add(jti, exp)

    def fleet_user_changed(self, payload: dict[str, Any]) -> None:
        """Another process changed a user row (`user_id`) or users' channel memberships (`memberships`: ids, or
        "all")."""
        user_id = payload.get("user_id")
        if isinstance(user_id, str):
            self.user_cache.forget(user_id)
            self.memberships.forget(user_id)
        changed = payload.get("memberships")
        if changed == "all":
            self.memberships.clear()
        elif isinstance(changed, list):
            for member in changed:
                if isinstance(member, str):
                    self.memberships.forget(member)

    def fleet_gap(self) -> None:
        """The bus lost messages: nothing learnt from it is trusted until read again."""
        self.revocations.invalidate()
        self.user_cache.clear()
        self.memberships.clear()

    def _is_own(self, token: str, external: ExternalVerifier) -> bool:
        """Whether a token is chatwire's own: HS256, no issuer (or not the external one), our signature,
        and our claims (`id`, `jti`). Everything else goes to the external verifier."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return True  # malformed: our decoder names the error
        if external.issuer is not None and unverified.get("iss") == external.issuer:
            return False
        if header.get("alg") != "HS256" or "iss" in unverified:
            return False
        if not ("id" in unverified and "jti" in unverified):
            return False
        try:
            jwt.decode(token, self.secret, algorithms=["HS256"], options={"verify_exp": False})
        except jwt.PyJWTError:
            return False
        return True

    def external_id(self, subject: str) -> str:
        """chatwire's id of the app's user `subject` (see `external_user_id`)."""
        return external_user_id(subject, self.external_namespace)

    async def _external_row(self, subject: str) -> User | None:
        """The row of an external user: its namespaced id, or a row provisioned before ids were namespaced (id
        equal to the subject, no password: never a native account, never a reserved id)."""
        user = await self.users.get(self.external_id(subject))
        return user if user is not None else await self._legacy_external_row(subject)

    async def _legacy_external_row(self, subject: str) -> User | None:
        """A row provisioned before ids were namespaced, if `subject` names one (read in batches: every first
        sight asks)."""
        return await self.legacy_loader.load(subject)

    async def _read_legacy(self, subjects: list[str]) -> dict[str, User]:
        rows = await self.users.get_many(subjects)
        return {u.id: u for u in rows if not u.password_hash and u.id not in RESERVED_USER_IDS}

    async def _authenticate_external(
        self, external: ExternalVerifier, token: str, recent_user: bool = False
    ) -> Identity:
        """Verify an external token and return its user, provisioning it on first sight. `recent_user`: a known
        user's row may come from the user cache (as for chatwire's own tokens), so a reconnect reads nothing."""
        claims = external.verify(token)
        if claims.jti is not None and await self.revocations.is_revoked(claims.jti):
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "token revoked")
        if (
            recent_user
        ):  # a miss reads the namespaced row once (in the loader's batch), then only the legacy one
            user = await self._user(self.external_id(claims.user_id), True)
            user = user or await self._legacy_external_row(claims.user_id)
        else:
            user = await self._external_row(claims.user_id)
        if user is None:
            user = await self._provision(claims)
        else:
            changes: dict[str, Any] = {}
            if claims.name is not None and claims.name != user.name:
                changes["name"] = claims.name
            if claims.role is not None and claims.role != user.role:
                changes["role"] = claims.role
            if changes:
                self.forget_user(user.id)
                user = await self.users.update_profile(user.id, **changes) or user
        return Identity(user=user, jti=claims.jti, expires_at=claims.expires_at)

    async def _provision(self, claims: ExternalClaims) -> User:
        """Create the user row of an external identity, in the external namespace; its email only if no other
        account has it. The first sights of one loop turn (a reconnecting fleet of new users) are written in one
        transaction, and the tabs of one user racing to be first share that write."""
        user_id = self.external_id(claims.user_id)
        if user_id in RESERVED_USER_IDS:  # cannot happen (namespaced ids hold "@" or "x-"); kept as a guard
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "reserved user id")
        placeholder = f"ext-{hashlib.sha256(user_id.encode()).hexdigest()[:24]}@external.invalid"
        new = NewUser(
            user_id=user_id,
            name=claims.name or claims.user_id,
            email=claims.email,
            fallback_email=placeholder,
            role=claims.role or self.external_default_role,
        )
        found = await self.provisioner.submit(user_id, new)
        if found is None:  # provision_many answers for every id it is given
            raise RuntimeError(f"could not provision external user {user_id!r}")
        return found[0]

    async def _provision_batch(self, new: dict[str, NewUser]) -> dict[str, tuple[User, bool]]:
        """One transaction for a batch of first sights; the users it created go to the provisioned hooks."""
        out = await self.users.provision_many(list(new.values()))
        created = [user for user, was_created in out.values() if was_created]
        if created:
            log.info(
                "external users provisioned",
                extra={"count": len(created), "user_ids": [u.id for u in created[:20]]},
            )
            for hook in self.provisioned_hooks:
                await hook(created)
        return out

    async def ensure_external_user(self, user_id: str, name: str | None, email: str | None) -> User:
        """The user of the app's id `user_id`, created as its first login would (server API: add members before
        they ever connect); an existing user gets the new name. Its chatwire id is `external_id(user_id)`."""
        if text_problem(user_id) is not None:
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, "user id must be encodable text")
        claims = ExternalClaims(user_id=user_id, name=name, email=email, role=None, jti=None, expires_at=None)
        user = await self._external_row(user_id)
        if user is None:
            return await self._provision(claims)
        if name is not None and name != user.name:
            self.forget_user(user.id)
            user = await self.users.update_profile(user.id, name=name) or user
        return user

    async def revoke(self, identity: Identity) -> None:
        """Revoke the token: in the database, in this process's set, then on every other process of a fleet (the
        call returns once the message is on the bus, so the token is refused everywhere from then on)."""
        if identity.jti is None:
            return
        expires_at = identity.expires_at or now_s() + self.token_ttl
        await self.users.revoke(identity.jti, identity.user.id, expires_at)
        self.revocations.add(identity.jti, expires_at)
        if self.fleet_notify is not None:
            await self.fleet_notify("revoked", {"jti": identity.jti, "expires_at": expires_at})

    # accounts

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def signup(self, name: str, email: str, password: str) -> User:
        """Create an account; the very first one becomes admin."""
        if await self.users.get_by_email(email) is not None:
            raise ChatwireError(ErrorCode.CONFLICT, "email already registered")
        return await self.users.create(
            name=name,
            email=email,
            password_hash=await self._hash(password),
            role=self.default_role,
            first_is_admin=True,
        )

    async def admin_update(
        self,
        actor: User,
        user_id: str,
        *,
        role: str | None = None,
        name: str | None = None,
        email: str | None = None,
        profile_image_url: str | None = None,
        password: str | None = None,
    ) -> tuple[User, bool]:
        """An admin's edit of a user: only the given fields change. The first account (the primary admin) is
        edited only by itself and stays an admin. Returns the fresh row and whether the user's live sessions must
        end (its role or password changed: its tabs reconnect with what the new row allows)."""
        user, primary = await self._managed(actor, user_id)
        if primary and role is not None and role != "admin":
            raise ChatwireError(ErrorCode.FORBIDDEN, "the primary admin stays an admin")
        changes: dict[str, Any] = {}
        if role is not None and role != user.role:
            changes["role"] = role
        if name is not None and name != user.name:
            changes["name"] = name
        if profile_image_url is not None and profile_image_url != user.profile_image_url:
            changes["profile_image_url"] = profile_image_url
        if email is not None and email.lower() != user.email:
            taken = await self.users.get_by_email(email)
            if taken is not None and taken.id != user_id:
                raise ChatwireError(ErrorCode.CONFLICT, "email already registered")
            changes["email"] = email.lower()
        if password is not None:  # whoever had the old password is signed out too
            changes["password_hash"] = await self._hash(password)
            changes["tokens_valid_after"] = now_ms()
        if not changes:
            return user, False
        try:
            fresh = await self.users.update_profile(user_id, **changes)
        except IntegrityError as exc:  # the email was taken meanwhile
            raise ChatwireError(ErrorCode.CONFLICT, "email already registered") from exc
        if fresh is None:
            raise ChatwireError(ErrorCode.NOT_FOUND, "user not found")
        log.info(
            "user updated by an admin",
            extra={
                "user_id": user_id,
                "actor": actor.id,
                "fields": sorted(k for k in changes if k != "password_hash"),
            },
        )
        return fresh, "role" in changes or "password_hash" in changes

    async def _managed(self, actor: User, user_id: str) -> tuple[User, bool]:
        """The user an admin acts on, and whether it is the primary admin (the first account), which only itself
        may change."""
        if actor.role != "admin":
            raise ChatwireError(ErrorCode.FORBIDDEN, "admin only")
        user = await self.users.get(user_id)
        if user is None:
            raise ChatwireError(ErrorCode.NOT_FOUND, "user not found")
        first = await self.users.list(0, 1)
        primary = bool(first) and first[0].id == user_id
        if primary and actor.id != user_id:
            raise ChatwireError(ErrorCode.FORBIDDEN, "only the primary admin may change the primary admin")
        return user, primary

    async def sign_out_everywhere(self, actor: User, user_id: str) -> None:
        """Refuse every token of ours issued to `user_id` until now, on every process (the row's cut-off; the
        user cache is dropped fleet-wide)."""
        await self._managed(actor, user_id)
        await self.users.update_profile(user_id, tokens_valid_after=now_ms())
        log.info("user signed out everywhere", extra={"user_id": user_id, "actor": actor.id})

    async def add_user(self, name: str, email: str, password: str, role: str) -> User:
        if role not in ROLES:
            raise ChatwireError(ErrorCode.INVALID_PAYLOAD, f"role must be one of {', '.join(ROLES)}")
        if await self.users.get_by_email(email) is not None:
            raise ChatwireError(ErrorCode.CONFLICT, "email already registered")
        return await self.users.create(
            name=name, email=email, password_hash=await self._hash(password), role=role
        )

    async def signin(self, email: str, password: str, ip: str | None = None) -> User:
        """The account of `email` if `password` is right; failures count against the account and `ip`, and
        past their limits the attempt is refused with `rate_limited` before any hashing."""
        await self.throttle.check(email, ip)
        user = await self.users.get_by_email(email)
        bad = ChatwireError(ErrorCode.UNAUTHORIZED, "wrong email or password")
        if user is None or not user.password_hash:
            await self.throttle.failed(email, ip)
            raise bad
        try:
            await asyncio.to_thread(self._hasher.verify, user.password_hash, password)
        except (VerificationError, InvalidHashError) as exc:
            await self.throttle.failed(email, ip)
            raise bad from exc
        await self.throttle.succeeded(email)
        return user
