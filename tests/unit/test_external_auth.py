"""External identity: tokens minted by another app (signed here by the test) authenticate and provision users;
chatwire's own tokens keep working; bad tokens are refused with a reason."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatwire.config import Settings
from chatwire.db.engine import Database
from chatwire.db.repos.users import UserRepo
from chatwire.errors import ChatwireError
from chatwire.services.auth import AuthService
from chatwire.services.external_auth import ExternalVerifier

OWN_SECRET = "own-secret-" + "x" * 32
APP_SECRET = "app-secret-" + "y" * 32


def pem_private(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_OTHER = ec.generate_private_key(ec.SECP256R1())


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "app-user-1",
        "name": "Ada",
        "email": "ada@app.example",
        "role": "user",
        "iss": "https://app.example",
        "aud": "chatwire",
        "iat": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def settings_for(tmp_path: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "jwt_secret": OWN_SECRET,
        "external_algorithms": ["HS256"],
        "external_secret": APP_SECRET,
        "external_issuer": "https://app.example",
        "external_audience": "chatwire",
        "external_leeway_seconds": 0,
    }
    values.update(over)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def auth_for(db: Database, settings: Settings) -> AuthService:
    return AuthService(
        UserRepo(db),
        secret=OWN_SECRET,
        token_ttl=3600,
        external=ExternalVerifier.from_settings(settings),
        external_default_role=settings.external_default_role,
    )


async def refused(auth: AuthService, token: str) -> str:
    with pytest.raises(ChatwireError) as info:
        await auth.authenticate(token)
    assert info.value.code.value == "unauthorized"
    return info.value.message


async def test_hs256_token_provisions_user_once_and_own_tokens_still_work(
    db: Database, tmp_path: Path
) -> None:
    auth = auth_for(db, settings_for(tmp_path))
    token = jwt.encode(claims(), APP_SECRET, algorithm="HS256")
    identity = await auth.authenticate(token)
    user = identity.user
    assert (user.id, user.name, user.email, user.role) == (
        "app-user-1@https://app.example",
        "Ada",
        "ada@app.example",
        "user",
    )
    assert user.password_hash is None
    again = await auth.authenticate(jwt.encode(claims(name="Ada L."), APP_SECRET, algorithm="HS256"))
    assert again.user.id == "app-user-1@https://app.example" and again.user.name == "Ada L."
    assert await UserRepo(db).count() == 1

    own_user = await auth.signup("Bob", "bob@example.com", "pw-xxxxxxxx")
    own_token, _ = auth.issue_token(own_user)
    assert (await auth.authenticate(own_token)).user.id == own_user.id


async def test_concurrent_first_logins_of_one_identity_share_one_user(db: Database, tmp_path: Path) -> None:
    """Two tabs of a new user connecting at once: both are let in, as the one user the first one created."""
    auth = auth_for(db, settings_for(tmp_path))
    token = jwt.encode(claims(sub="tabs"), APP_SECRET, algorithm="HS256")
    identities = await asyncio.gather(*(auth.authenticate(token) for _ in range(4)))
    assert {i.user.id for i in identities} == {"tabs@https://app.example"}
    assert await UserRepo(db).count() == 1


async def test_rs256_with_pem_text_and_pem_path(db: Database, tmp_path: Path) -> None:
    token = jwt.encode(claims(sub="rsa-user"), pem_private(RSA_KEY), algorithm="RS256")
    auth = auth_for(
        db, settings_for(tmp_path, external_algorithms=["RS256"], external_public_key=pem_public(RSA_KEY))
    )
    assert (await auth.authenticate(token)).user.id == "rsa-user@https://app.example"
    path = tmp_path / "app.pub.pem"
    path.write_text(pem_public(RSA_KEY))
    by_path = auth_for(
        db, settings_for(tmp_path, external_algorithms=["RS256"], external_public_key=str(path))
    )
    assert (await by_path.authenticate(token)).user.id == "rsa-user@https://app.example"
    forged = jwt.encode(claims(sub="rsa-user"), pem_private(RSA_OTHER), algorithm="RS256")
    assert "bad signature" in await refused(auth, forged)


async def test_es256_with_jwks_file_chooses_key_by_kid(db: Database, tmp_path: Path) -> None:
    keys = []
    for kid, key in (("k1", EC_OTHER), ("k2", EC_KEY)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys}))
    auth = auth_for(db, settings_for(tmp_path, external_algorithms=["ES256"], external_jwks_file=jwks))
    token = jwt.encode(claims(sub="ec-user"), pem_private(EC_KEY), algorithm="ES256", headers={"kid": "k2"})
    assert (await auth.authenticate(token)).user.id == "ec-user@https://app.example"
    wrong_kid = jwt.encode(
        claims(sub="ec-user"), pem_private(EC_KEY), algorithm="ES256", headers={"kid": "k1"}
    )
    assert "bad signature" in await refused(auth, wrong_kid)
    unknown = jwt.encode(claims(sub="ec-user"), pem_private(EC_KEY), algorithm="ES256", headers={"kid": "k9"})
    assert "unknown key id" in await refused(auth, unknown)

    # key rotation: the app publishes a new key in the file; an unknown kid re-reads it
    rotated = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(rotated.public_key()))
    jwks.write_text(json.dumps({"keys": [*keys, {**jwk, "kid": "k3", "alg": "ES256"}]}))
    os.utime(jwks, (time.time() + 5, time.time() + 5))
    fresh = jwt.encode(claims(sub="ec-user"), pem_private(rotated), algorithm="ES256", headers={"kid": "k3"})
    assert (await auth.authenticate(fresh)).user.id == "ec-user@https://app.example"


def signer(alg: str, tmp_path: Path) -> tuple[dict[str, Any], Any, Any, dict[str, str]]:
    """Settings for one algorithm, the app's signing key, a wrong key, and extra JWT headers."""
    if alg == "HS256":
        return {}, APP_SECRET, "not-the-app-secret-" + "z" * 20, {}
    if alg == "RS256":
        return {"external_public_key": pem_public(RSA_KEY)}, pem_private(RSA_KEY), pem_private(RSA_OTHER), {}
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "only", "alg": "ES256"}]}))
    return {"external_jwks_file": jwks}, pem_private(EC_KEY), pem_private(EC_OTHER), {"kid": "only"}


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
async def test_bad_external_tokens_are_refused_and_provision_nothing(
    db: Database, tmp_path: Path, alg: str
) -> None:
    extra, key, wrong_key, headers = signer(alg, tmp_path)
    auth = auth_for(db, settings_for(tmp_path, external_algorithms=[alg], **extra))
    now = int(time.time())
    cases = {
        "expired": (claims(exp=now - 5, iat=now - 100), key, "token expired"),
        "wrong audience": (claims(aud="someone-else"), key, "wrong audience"),
        "wrong issuer": (claims(iss="https://evil.example"), key, "wrong issuer"),
        "wrong key": (claims(), wrong_key, "bad signature"),
        "no audience": (claims(aud=None), key, "aud"),
        "no expiry": (claims(exp=None), key, "exp"),
        "id too long": (claims(sub="u" * 65), key, "1 to 64"),
    }
    for name, (body, signing_key, reason) in cases.items():
        message = await refused(auth, jwt.encode(body, signing_key, algorithm=alg, headers=headers))
        assert reason in message, (name, message)
    await refused(auth, jwt.encode(claims(), None, algorithm="none"))
    other_alg = "HS256" if alg != "HS256" else "RS256"
    other_key = APP_SECRET if other_alg == "HS256" else pem_private(RSA_KEY)
    assert "algorithm not accepted" in await refused(
        auth, jwt.encode(claims(), other_key, algorithm=other_alg)
    )
    assert await UserRepo(db).count() == 0
    good = await auth.authenticate(jwt.encode(claims(), key, algorithm=alg, headers=headers))
    assert good.user.id == "app-user-1@https://app.example"


async def test_id_claim_mapping_role_and_taken_email(db: Database, tmp_path: Path) -> None:
    auth = auth_for(
        db, settings_for(tmp_path, external_user_id_claim="id", external_issuer="", external_audience="")
    )
    taken = await auth.signup("Native", "shared@example.com", "pw-xxxxxxxx")
    token = jwt.encode(
        {
            "id": 42,
            "name": "Numeric",
            "email": "shared@example.com",
            "role": "admin",
            "exp": int(time.time()) + 60,
        },
        APP_SECRET,
        algorithm="HS256",
    )
    user = (await auth.authenticate(token)).user
    assert user.id == "42@external" and user.role == "admin"
    assert user.email != taken.email and user.email.endswith("@external.invalid")
    odd_role = jwt.encode(
        {"id": "43", "role": "superuser", "exp": int(time.time()) + 60}, APP_SECRET, algorithm="HS256"
    )
    other = (await auth.authenticate(odd_role)).user
    assert other.role == "user" and other.name == "43"


async def test_without_external_settings_foreign_tokens_are_refused(db: Database, tmp_path: Path) -> None:
    auth = AuthService(UserRepo(db), secret=OWN_SECRET, token_ttl=3600)
    assert await refused(auth, jwt.encode(claims(), APP_SECRET, algorithm="HS256")) == "invalid token"


def test_misconfiguration_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EXTERNAL_SECRET"):
        ExternalVerifier(settings_for(tmp_path, external_secret=""))
    with pytest.raises(ValueError, match="PUBLIC_KEY"):
        ExternalVerifier(settings_for(tmp_path, external_algorithms=["RS256"]))
