"""External identity: verify JWTs minted by another app (HS256 shared secret, RS256/ES256 public key or JWKS).

chatwire only verifies these tokens; it never issues or revokes them. Revocation of an external token is the
issuing app's job (short expiries); chatwire's sign-out still blocks a token id it has seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from chatwire.config import Settings
from chatwire.errors import ChatwireError, ErrorCode
from chatwire.util import text_problem

MAX_USER_ID = 64  # users.id is String(64)
ROLES = ("admin", "user", "pending")
# Ids no account may have: `system` acts for the server API (channels it creates are managed by it).
RESERVED_USER_IDS = frozenset({"system"})
DEFAULT_NAMESPACE = "external"  # the namespace of external ids when no issuer is configured


def external_user_id(subject: str, namespace: str) -> str:
    """The chatwire id of the app's user `subject` in the namespace of one issuer: `{subject}@{namespace}`, or
    `x-` and a hash of both when that would not fit or be ambiguous. Never a native id (those are UUIDs, with no
    `@` and no `x-` prefix), never a reserved id, never the id of the same subject of another issuer."""
    if "@" not in namespace and len(subject) + 1 + len(namespace) <= MAX_USER_ID:
        return f"{subject}@{namespace}"
    digest = hashlib.sha256(f"{namespace}\n{subject}".encode()).hexdigest()[:40]
    return f"x-{digest}"


@dataclass(frozen=True)
class ExternalClaims:
    """What an external token says about its user, after verification. `user_id` is the app's own id (the
    token's claim); chatwire's id of that user is `external_user_id(user_id, namespace)`."""

    user_id: str
    name: str | None
    email: str | None
    role: str | None
    jti: str | None
    expires_at: int | None


def _load_public_key(value: str) -> str:
    """PEM text as is; anything else is read as the path of a PEM file."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(
            f"CHATWIRE_EXTERNAL_PUBLIC_KEY is neither PEM text nor a readable file: {text[:80]!r}"
        )
    return path.read_text()


class ExternalVerifier:
    """Verifies external tokens with the configured keys, issuer, audience and leeway; maps their claims."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(dict.fromkeys(settings.external_algorithms))
        self.issuer = settings.external_issuer or None
        self.namespace = settings.external_issuer or DEFAULT_NAMESPACE
        self.audience = settings.external_audience or None
        self.leeway = settings.external_leeway_seconds
        self.id_claim = settings.external_user_id_claim
        self.name_claim = settings.external_name_claim
        self.email_claim = settings.external_email_claim
        self.role_claim = settings.external_role_claim
        self.secret = settings.external_secret or None
        self.public_key = (
            _load_public_key(settings.external_public_key) if settings.external_public_key else None
        )
        self.jwks: jwt.PyJWKSet | None = None
        self.jwks_file = settings.external_jwks_file
        self._jwks_mtime = 0.0
        if self.jwks_file is not None:
            self._load_jwks()
        if "HS256" in self.algorithms and not self.secret:
            raise ValueError("CHATWIRE_EXTERNAL_ALGORITHMS has HS256 but CHATWIRE_EXTERNAL_SECRET is empty")
        asymmetric = [a for a in self.algorithms if a != "HS256"]
        if asymmetric and self.public_key is None and self.jwks is None:
            raise ValueError(
                f"CHATWIRE_EXTERNAL_ALGORITHMS has {', '.join(asymmetric)} but neither "
                "CHATWIRE_EXTERNAL_PUBLIC_KEY nor CHATWIRE_EXTERNAL_JWKS_FILE is set"
            )

    def _load_jwks(self) -> None:
        assert self.jwks_file is not None
        mtime = self.jwks_file.stat().st_mtime
        self.jwks = jwt.PyJWKSet.from_dict(json.loads(self.jwks_file.read_text()))
        self._jwks_mtime = mtime

    def _reload_jwks_if_changed(self) -> None:
        """Key rotation: an unknown `kid` re-reads the JWKS file when it changed since it was loaded."""
        if self.jwks_file is None:
            return
        try:
            if self.jwks_file.stat().st_mtime != self._jwks_mtime:
                self._load_jwks()
        except (OSError, ValueError, jwt.PyJWTError):
            pass  # keep the keys we have

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalVerifier | None:
        """The verifier, or None when external identity is off (no algorithms configured)."""
        return cls(settings) if settings.external_algorithms else None

    def _key_for(self, token: str, alg: str) -> Any:
        if alg == "HS256":
            return self.secret
        if self.jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            candidates = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
            if not candidates:
                self._reload_jwks_if_changed()
                candidates = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
            if not candidates:
                raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token: unknown key id")
            return candidates[0].key
        return self.public_key

    def verify(self, token: str) -> ExternalClaims:
        """The verified claims of `token`; raises `unauthorized` naming what is wrong (expired, audience...)."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token") from exc
        if alg not in self.algorithms:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token: algorithm not accepted")
        required = ["exp", self.id_claim]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        try:
            claims = jwt.decode(
                token,
                self._key_for(token, alg),
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token: wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token: wrong issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "invalid token: bad signature") from exc
        except jwt.PyJWTError as exc:
            raise ChatwireError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from exc
        return self._map(claims)

    def _map(self, claims: dict[str, Any]) -> ExternalClaims:
        raw_id = claims.get(self.id_claim)
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise ChatwireError(
                ErrorCode.UNAUTHORIZED, f"invalid token: claim {self.id_claim!r} is not an id"
            )
        user_id = str(raw_id).strip()
        if not user_id or len(user_id) > MAX_USER_ID:
            raise ChatwireError(
                ErrorCode.UNAUTHORIZED, f"invalid token: user id must be 1 to {MAX_USER_ID} characters"
            )
        if text_problem(user_id) is not None:
            raise ChatwireError(
                ErrorCode.UNAUTHORIZED, f"invalid token: claim {self.id_claim!r} is not an id"
            )

        def text(claim: str, limit: int) -> str | None:
            # Claims are JSON, which may carry lone surrogates and NUL: such a name or email is ignored.
            value = claims.get(claim) if claim else None
            if not isinstance(value, str) or text_problem(value) is not None:
                return None
            return value.strip()[:limit] or None

        role = text(self.role_claim, 16)
        jti = claims.get("jti")
        exp = claims.get("exp")
        return ExternalClaims(
            user_id=user_id,
            name=text(self.name_claim, 255),
            email=text(self.email_claim, 255),
            role=role if role in ROLES else None,
            jti=jti if isinstance(jti, str) and len(jti) <= 64 else None,
            expires_at=int(exp) if isinstance(exp, int | float) else None,
        )
