"""Stable error codes: one place, so clients can rely on them across REST and socket acks."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Machine-readable error codes carried by every error chatwire returns."""

    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_MEMBER = "not_member"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    USER_MISMATCH = "user_mismatch"
    SESSION_GONE = "session_gone"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal_error"


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_PAYLOAD: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_MEMBER: 403,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.USER_MISMATCH: 403,
    ErrorCode.SESSION_GONE: 404,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class ChatwireError(Exception):
    """A domain error with a stable code; transport turns it into an ack or an HTTP error."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self.code]

    def to_ack(self) -> dict[str, Any]:
        """The socket ack shape: `{"error": {"code", "message"}}`."""
        return {"error": {"code": self.code.value, "message": self.message}}


def not_found(what: str) -> ChatwireError:
    return ChatwireError(ErrorCode.NOT_FOUND, f"{what} not found")


def forbidden(message: str = "not allowed") -> ChatwireError:
    return ChatwireError(ErrorCode.FORBIDDEN, message)


def invalid(message: str) -> ChatwireError:
    return ChatwireError(ErrorCode.INVALID_PAYLOAD, message)
