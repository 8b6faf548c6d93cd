"""Per-session local state and the handler decorator that validates, rate-limits and turns errors into acks."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from chatwire.backends.sessions import SessionInfo
from chatwire.db.models import User
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.protocol import MAX_NESTING, PAYLOAD_CHECKED, UserJoin
from chatwire.services.auth import has_access
from chatwire.services.container import Services
from chatwire.transport.limits import IpLimiter
from chatwire.util import LONE_SURROGATE, NUL_TEXT, has_nul_escape, nested_deeper_than, text_problem

log = logging.getLogger("chatwire.socket")

M = TypeVar("M", bound=BaseModel)


class TokenBucket:
    """Classic token bucket: `rate` tokens a second, at most `burst` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class SessionState:
    """What this process knows about one of its sessions."""

    sid: str
    bucket: TokenBucket
    user: User | None = None
    jti: str | None = None
    ip: str | None = None
    # What this process last wrote to the session store for the session (None: not registered)
    registered: SessionInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Registrar(Protocol):
    """Where handlers are registered: the Hub on chatwire's engine (hub.py)."""

    def on(self, event: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]: ...

    def event(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]: ...


class Context:
    """Shared by all handlers of one server: the services and the local session table."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.local: dict[str, SessionState] = {}
        # Whether session `sid` of this process is in `room` (set by the server the handlers run on).
        self.in_room: Callable[[str, str], bool] = lambda _sid, _room: False
        # Per client IP: connects (checked at connect) and events of all its sessions (checked per event).
        table = self.settings.rate_limit_ip_table_size
        self.ip_connects = IpLimiter(
            self.settings.rate_limit_ip_connects, self.settings.rate_limit_ip_connect_burst, table
        )
        self.ip_events = IpLimiter(
            self.settings.rate_limit_ip_events, self.settings.rate_limit_ip_event_burst, table
        )
        # Extension points for other event families (collaboration, recovery): run after user-join, after a
        # disconnect and at connect, each guarded so one failing hook cannot break the others.
        # A join hook may return a dict: it is merged into the user-join ack.
        self.join_hooks: list[Callable[[str, User, UserJoin], Awaitable[Any]]] = []
        self.disconnect_hooks: list[Callable[[str, SessionState | None], Awaitable[None]]] = []
        # Run at the end of an accepted connect, before the CONNECT reply: (sid, environ, auth).
        self.connect_hooks: list[Callable[[str, dict[str, Any], Any], Awaitable[None]]] = []
        # Told (user_id, name, online) the moment the session store decides a user came online or went offline
        # (once per transition, fleet-wide); synchronous, so they are told in the order the store decided.
        self.presence_hooks: list[Callable[[str, str, bool], None]] = []

    def state(self, sid: str) -> SessionState:
        st = self.local.get(sid)
        if st is None:
            st = SessionState(
                sid, TokenBucket(self.settings.rate_limit_events, self.settings.rate_limit_burst)
            )
            self.local[sid] = st
        return st

    async def register_session(self, sid: str, *, again: bool = False) -> bool:
        """Record this process's authenticated session `sid` in the (possibly fleet-wide) session store; True
        when the store says this brought the user online. A session already registered with the same details
        (a `user-join` with the token its connect verified) is not written twice, unless `again` (the store lost
        it)."""
        st = self.local.get(sid)
        if st is None or st.user is None:
            return False
        user = st.user
        info = SessionInfo(
            sid=sid, user_id=user.id, name=user.name, role=user.role, jti=st.jti, host=self.services.host_id
        )
        if info == st.registered and not again:
            return False
        came_online = await self.services.sessions.add(info)
        st.registered = info
        return came_online

    def presence_changed(self, user_id: str, name: str, *, online: bool) -> None:
        """Tell the presence hooks what the session store decided (each guarded against the others' failures)."""
        for hook in self.presence_hooks:
            try:
                hook(user_id, name, online)
            except Exception:
                log.exception("presence hook failed", extra={"user_id": user_id})

    def is_authenticated(self, sid: str) -> bool:
        """Whether session `sid` of this process has proved a user (connect token or user-join)."""
        st = self.local.get(sid)
        return st is not None and st.user is not None

    def require_user(self, sid: str, *, access: bool = True) -> User:
        """The session's user; with `access` (every event but heartbeat), one whose role may use the service:
        a `pending` account gets its own `user:` room and nothing else."""
        st = self.local.get(sid)
        if st is None or st.user is None:
            raise ChatwireError(
                ErrorCode.UNAUTHORIZED, "authenticate first (connect with auth.token or user-join)"
            )
        if access and not has_access(st.user):
            raise ChatwireError(ErrorCode.FORBIDDEN, "account pending approval")
        return st.user


# The encoded size up to which no payload can nest deeper than MAX_NESTING (an encoding of depth d is at least 2d long).
_NEVER_TOO_DEEP = 2 * MAX_NESTING + 1


def payload_size(data: Any) -> int:
    return measure(data)[0]


def measure(data: Any) -> tuple[int, str | None]:
    """The payload's encoded size and why its text cannot be stored (`text_problem`), from one orjson pass
    for JSON payloads (binary ones, which orjson refuses, are measured by their repr and checked apart)."""
    try:
        encoded = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        if "surrogates" in str(exc):
            return len(repr(data)), LONE_SURROGATE
        return len(repr(data)), text_problem(data)
    return len(encoded), (NUL_TEXT if b"\\u0000" in encoded and has_nul_escape(encoded) else None)


Handler = Callable[[Context, str, Any], Awaitable[Any]]


def socket_handler(
    ctx: Context, event: str, model: type[BaseModel] | None = None
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Wrap a handler `(ctx, sid, payload)`: rate limit, size limit, validation, and errors as acks.

    Whatever the handler raises, the session and the server keep running; the caller gets
    `{"error": {"code", "message"}}` when it asked for an ack.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(sid: str, *args: Any) -> Any:
            data = args[0] if args else None
            ctx.services.metrics.event_in(event)
            try:
                st = ctx.state(sid)
                if not st.bucket.take():
                    raise ChatwireError(ErrorCode.RATE_LIMITED, "too many events; slow down")
                if not ctx.ip_events.take(st.ip):
                    raise ChatwireError(
                        ErrorCode.RATE_LIMITED, "too many events from this address; slow down"
                    )
                size, problem = measure(data)
                # every level of nesting takes two characters (its brackets), so a short payload is never too deep
                if size > _NEVER_TOO_DEEP and nested_deeper_than(data, MAX_NESTING):
                    raise ChatwireError(
                        ErrorCode.INVALID_PAYLOAD, f"payload nested more than {MAX_NESTING} levels deep"
                    )
                if size > ctx.settings.max_payload_bytes:
                    raise ChatwireError(
                        ErrorCode.PAYLOAD_TOO_LARGE, f"payload over {ctx.settings.max_payload_bytes} bytes"
                    )
                if problem is not None:
                    raise ChatwireError(ErrorCode.INVALID_PAYLOAD, problem)
                # nesting and text are checked whole above; the model checks shapes and bounds
                payload = model.model_validate(data, context=PAYLOAD_CHECKED) if model is not None else data
                return await fn(ctx, sid, payload)
            except ChatwireError as exc:
                _log_rejection(ctx, sid, event, exc.code.value, exc.message)
                return exc.to_ack()
            except ValidationError as exc:
                message = _validation_message(exc)
                _log_rejection(ctx, sid, event, ErrorCode.INVALID_PAYLOAD.value, message)
                return {"error": {"code": ErrorCode.INVALID_PAYLOAD.value, "message": message}}
            except Exception:
                log.exception("handler crashed", extra={"sid": sid, "event": event, **_user_of(ctx, sid)})
                ctx.services.metrics.event_rejected(event, ErrorCode.INTERNAL.value)
                return {"error": {"code": ErrorCode.INTERNAL.value, "message": "internal error"}}

        return wrapper

    return decorate


def _user_of(ctx: Context, sid: str) -> dict[str, Any]:
    st = ctx.local.get(sid)
    return {"user_id": st.user.id} if st is not None and st.user is not None else {}


def _log_rejection(ctx: Context, sid: str, event: str, code: str, message: str) -> None:
    ctx.services.metrics.event_rejected(event, code)
    log.info(
        "event rejected",
        extra={"sid": sid, "event": event, "code": code, "reason": message, **_user_of(ctx, sid)},
    )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "payload"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)
