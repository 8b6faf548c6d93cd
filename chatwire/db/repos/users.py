"""Users and revoked tokens."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from chatwire.db.engine import Database
from chatwire.db.models import RevokedToken, User
from chatwire.db.sqlite_writer import RowCodec
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.util import new_ordered_id, now_s

# Key of the PostgreSQL advisory lock that serialises "is this the first user?" across sessions and processes.
FIRST_USER_LOCK = 0x63770001


# Built once with an expanding parameter (one cache entry for any number of ids) instead of per call.
_USERS_BY_ID = select(User).where(User.id.in_(bindparam("ids", expanding=True)))


def _user_row(user_id: str, name: str, email: str, password_hash: str | None, role: str, now: int) -> User:
    """A new user row, active and created `now`."""
    return User(
        id=user_id,
        name=name,
        email=email,
        password_hash=password_hash,
        role=role,
        last_active_at=now,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class NewUser:
    """A user row to create for an external identity on its first sight (`UserRepo.provision_many`). `email`:
    the identity's address, or None; the row gets `fallback_email` when there is none or it is taken."""

    user_id: str
    name: str
    email: str | None
    fallback_email: str
    role: str


class UserRepo:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called with the user id after any change to a user row (caches of rows drop it).
        self.changed_hooks: builtins.list[Callable[[str], None]] = []
        self._codec: RowCodec[User] | None = None

    def _changed(self, user_id: str) -> None:
        for hook in self.changed_hooks:
            hook(user_id)

    async def count(self) -> int:
        async with self.db.read() as s:
            return int((await s.execute(select(func.count()).select_from(User))).scalar_one())

    async def get(self, user_id: str) -> User | None:
        """The user's row, read now (every authenticated request reads it: a role change, a deletion or a new
        `tokens_valid_after` takes effect at once). On an SQLite file through the direct lane's reader: one
        event-loop round trip instead of the async adapter's several (~0.6 ms of CPU per request)."""
        lane = self.db.sqlite_writer
        if lane is not None:
            codec = self._codec
            if codec is None:
                codec = self._codec = RowCodec(User, self.db.engine.dialect)
            sql = f"{codec.select} WHERE id = ?"
            row = await lane.read(lambda conn: conn.execute(sql, (user_id,)).fetchone())
            return None if row is None else codec.load(row)
        async with self.db.read() as s:
            return await s.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        async with self.db.read() as s:
            return (await s.execute(select(User).where(User.email == email.lower()))).scalar_one_or_none()

    async def get_many(self, ids: builtins.list[str]) -> builtins.list[User]:
        if not ids:
            return []
        async with self.db.read() as s:
            return list((await s.execute(_USERS_BY_ID, {"ids": ids})).scalars())

    async def list(self, skip: int = 0, limit: int = 1000) -> list[User]:
        async with self.db.read() as s:
            q = select(User).order_by(User.created_at, User.id).offset(skip).limit(limit)
            return list((await s.execute(q)).scalars())

    async def page(
        self,
        *,
        query: str | None = None,
        order_by: str | None = None,
        descending: bool = False,
        skip: int = 0,
        limit: int = 30,
    ) -> tuple[builtins.list[User], int]:
        """A page of users matching `query` (name or email, case-insensitive) and how many match in all."""
        where = []
        if query:
            like = f"%{query.lower()}%"
            where.append(func.lower(User.name).like(like) | func.lower(User.email).like(like))
        column = {
            "name": User.name,
            "email": User.email,
            "role": User.role,
            "last_active_at": User.last_active_at,
        }.get(order_by or "", User.created_at)
        order = column.desc() if descending else column.asc()
        async with self.db.read() as s:
            total = int((await s.execute(select(func.count()).select_from(User).where(*where))).scalar_one())
            q = select(User).where(*where).order_by(order, User.id).offset(skip).limit(limit)
            return list((await s.execute(q)).scalars()), total

    async def search(
        self, query: str, *, skip: int, limit: int, by_email: bool
    ) -> tuple[builtins.list[User], int]:
        """Users whose name (and, with `by_email`, email) contains `query`, case-insensitively, ordered by name;
        with the total count of matches."""
        cond = None
        q = query.strip().lower()
        if q:
            cond = func.lower(User.name).contains(q, autoescape=True)
            if by_email:
                cond = cond | func.lower(User.email).contains(q, autoescape=True)
        async with self.db.read() as s:
            base = select(User) if cond is None else select(User).where(cond)
            total = await s.execute(select(func.count()).select_from(base.subquery()))
            page = base.order_by(func.lower(User.name), User.id).offset(skip).limit(limit)
            return list((await s.execute(page)).scalars()), int(total.scalar_one())

    async def list_ids(self) -> builtins.list[str]:
        async with self.db.read() as s:
            return list((await s.execute(select(User.id))).scalars())

    async def create(
        self,
        *,
        name: str,
        email: str,
        password_hash: str | None,
        role: str,
        first_is_admin: bool = False,
        user_id: str | None = None,
    ) -> User:
        """Insert a user. With `first_is_admin`, the role becomes admin when no other user exists (atomically).

        A taken email (also one taken by a concurrent insert) raises `conflict`.
        """
        now = now_s()
        try:
            return await self._insert(name, email, password_hash, role, first_is_admin, user_id, now)
        except IntegrityError as exc:
            raise ChatwireError(ErrorCode.CONFLICT, "email already registered") from exc

    async def _insert(
        self,
        name: str,
        email: str,
        password_hash: str | None,
        role: str,
        first_is_admin: bool,
        user_id: str | None,
        now: int,
    ) -> User:
        async with self.db.session() as s:
            if first_is_admin:
                if not self.db.is_sqlite:
                    # Without it, concurrent sign-ups on an empty database all count zero users and all
                    # become admins (READ COMMITTED). SQLite writers are already serialised.
                    await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_USER_LOCK})
                existing = (await s.execute(select(func.count()).select_from(User))).scalar_one()
                if existing == 0:
                    role = "admin"
            user = _user_row(user_id or new_ordered_id(), name, email.lower(), password_hash, role, now)
            s.add(user)
        return user

    async def provision(
        self, *, user_id: str, name: str, email: str, fallback_email: str, role: str
    ) -> tuple[User, bool]:
        """Insert a user of an external identity -> (user, True), or return the row a concurrent first login
        created -> (user, False). When `email` is taken meanwhile, the user gets `fallback_email` instead.
        """
        for address in (email, fallback_email):
            try:  # `_insert`, not `create`: the IntegrityError tells a concurrent first login from a taken email
                user = await self._insert(name, address, None, role, False, user_id, now_s())
                return user, True
            except IntegrityError:
                existing = await self.get(user_id)
                if existing is not None:
                    return existing, False
        raise RuntimeError(f"could not provision external user {user_id!r}")

    async def provision_many(self, new: builtins.list[NewUser]) -> dict[str, tuple[User, bool]]:
        """Create many external users in one transaction -> {user_id: (user, created)}; an id that exists already
        maps to its row and False, a taken (or in this batch repeated) email gives way to the fallback address.
        When a concurrent writer of another process gets in between (PostgreSQL), each user is provisioned on
        its own instead, as `provision` does."""
        if not new:
            return {}
        try:
            return await self._insert_many(new)
        except IntegrityError:
            out: dict[str, tuple[User, bool]] = {}
            for item in new:
                out[item.user_id] = await self.provision(
                    user_id=item.user_id,
                    name=item.name,
                    email=item.email or item.fallback_email,
                    fallback_email=item.fallback_email,
                    role=item.role,
                )
            return out

    async def _insert_many(self, new: builtins.list[NewUser]) -> dict[str, tuple[User, bool]]:
        now = now_s()
        out: dict[str, tuple[User, bool]] = {}
        async with self.db.session() as s:
            ids = list(dict.fromkeys(item.user_id for item in new))
            for user in (await s.execute(_USERS_BY_ID, {"ids": ids})).scalars():
                out[user.id] = (user, False)
            wanted = {item.email.lower() for item in new if item.email and item.user_id not in out}
            taken: set[str] = set()
            if wanted:
                q = select(User.email).where(User.email.in_(bindparam("emails", expanding=True)))
                taken = set((await s.execute(q, {"emails": list(wanted)})).scalars())
            for item in new:
                if item.user_id in out:
                    continue
                email = item.email.lower() if item.email else None
                if email is None or email in taken:
                    email = item.fallback_email.lower()
                taken.add(email)
                user = _user_row(item.user_id, item.name, email, None, item.role, now)
                s.add(user)
                out[user.id] = (user, True)
        return out

    async def update_profile(self, user_id: str, **values: object) -> User | None:
        """Update name/role (or other columns) of a user and return the fresh row."""
        async with self.db.session() as s:
            await s.execute(update(User).where(User.id == user_id).values(updated_at=now_s(), **values))
        self._changed(user_id)
        return await self.get(user_id)

    async def touch(self, user_id: str, at: int) -> None:
        async with self.db.session() as s:
            await s.execute(update(User).where(User.id == user_id).values(last_active_at=at))

    async def revoke(self, jti: str, user_id: str, expires_at: int) -> None:
        async with self.db.session() as s:
            if await s.get(RevokedToken, jti) is None:
                s.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at))
            await s.execute(delete(RevokedToken).where(RevokedToken.expires_at < now_s()))

    async def revoked_tokens(self) -> builtins.list[tuple[str, int]]:
        """Every revoked token that has not expired yet: (jti, expires_at)."""
        async with self.db.read() as s:
            q = select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at >= now_s())
            return [(str(jti), int(exp)) for jti, exp in (await s.execute(q)).all()]

    async def is_revoked(self, jti: str) -> bool:
        async with self.db.read() as s:
            return await s.get(RevokedToken, jti) is not None
