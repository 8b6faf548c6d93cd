"""Settings: every knob of chatwire in one place, read from CHATWIRE_* variables and a `.env` file."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "CHATWIRE_"

# Database URL schemes chatwire accepts, and the async driver each plain scheme means.
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


class SettingsError(ValueError):
    """A setting is missing, malformed or inconsistent; the message is one line naming the variable."""


def env_name(field: str) -> str:
    """The environment variable of a setting: `port` -> `CHATWIRE_PORT`."""
    return ENV_PREFIX + field.upper()


def normalise_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean asyncpg and `sqlite://` aiosqlite (chatwire's async drivers);
    any other driver or database is refused with the schemes that work."""
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            "not a URL (expected postgresql+asyncpg://user:pass@host/db or sqlite+aiosqlite:///path)"
        )
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"unsupported scheme {scheme!r}: use postgresql+asyncpg:// (or postgresql://) or sqlite+aiosqlite:///"
        )
    return f"{driver}://{rest}"


class Settings(BaseSettings):
    """Runtime configuration. Defaults give an embedded server: SQLite under ./data and in-memory backends."""

    model_config = SettingsConfigDict(env_prefix="CHATWIRE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where SQLite and the generated JWT secret live.")
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL; empty = sqlite+aiosqlite under data_dir. PostgreSQL: postgresql+asyncpg://",
    )
    migrate_on_start: bool = Field(
        True,
        description="Apply database migrations at start; false: refuse to start on an older schema (run `chatwire migrate`).",
    )
    shutdown_timeout_seconds: int = Field(
        20,
        gt=0,
        description="On SIGTERM, how long to wait for open connections to end before closing them.",
    )
    redis_url: str = Field(
        "", description="Redis URL for fleet mode; empty = in-memory backends (one process)."
    )
    redis_prefix: str = Field("chatwire:", description="Prefix of every Redis key and channel chatwire uses.")
    redis_sentinel_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Redis Sentinel addresses, comma separated host:port (port 26379 if left out); set = the "
        "primary is found through them and followed across failovers (redis_url gives password and db).",
    )
    redis_sentinel_service: str = Field(
        "mymaster", description="The Sentinel service (master group) name of the fleet's Redis."
    )
    redis_sentinel_password: str = Field("", description="Password of the sentinels themselves, if any.")
    redis_cluster: bool = Field(
        False, description="redis_url is a node of a Redis Cluster (7+): hash-tagged keys, sharded pub/sub."
    )
    doc_store: Literal["database", "redis"] = Field(
        "database",
        description="Where collaborative documents' update logs live in fleet mode (redis: only if Redis is durable).",
    )
    fleet_max_payload_bytes: int = Field(
        1_048_576,
        gt=0,
        description="Largest message published on Redis pub/sub; larger events travel by reference (stored, then fetched).",
    )
    jwt_secret: str = Field("", description="HS256 secret; empty = generated once into data_dir/jwt_secret.")
    token_ttl_seconds: int = Field(7 * 24 * 3600, gt=0, description="Lifetime of issued tokens.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Allowed CORS origins, comma separated; * allows all."
    )
    transports: Annotated[list[Literal["websocket", "polling"]], NoDecode] = Field(
        default=["websocket"],
        description="Engine.IO transports, comma separated: websocket (default), polling (needs sticky sessions).",
    )
    ping_interval: float = Field(25.0, gt=0, description="Engine.IO ping interval in seconds.")
    ping_timeout: float = Field(20.0, gt=0, description="Engine.IO ping timeout in seconds.")
    event_call_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for a browser's answer to an event call."
    )
    max_payload_bytes: int = Field(
        1_048_576, gt=0, description="Largest accepted socket event payload or REST body, in bytes."
    )
    max_attachments: int = Field(
        16,
        ge=0,
        description="Binary attachments one socket packet may carry (an anonymous session over it is closed).",
    )
    max_attachment_bytes: int = Field(
        1_048_576,
        gt=0,
        description="Bytes all binary attachments of one socket packet may hold (an anonymous session over it is closed).",
    )
    signin_account_attempts: int = Field(
        10,
        ge=0,
        description="Failed sign-ins per account within the sign-in window before 429; 0 = no limit.",
    )
    signin_ip_attempts: int = Field(
        50,
        ge=0,
        description="Failed sign-ins per client IP within the sign-in window before 429; 0 = no limit.",
    )
    signin_window_seconds: float = Field(
        300.0, gt=0, description="Sliding window of the sign-in limits, in seconds."
    )
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers (slow clients are closed).",
    )
    http_max_pending_per_ip: int = Field(
        64,
        ge=0,
        description="Connections one client IP may hold whose first request's headers are not complete; 0 = no limit.",
    )
    openapi_enabled: bool = Field(
        False, description="Serve the OpenAPI schema and docs at /openapi.json, /docs and /redoc."
    )
    rate_limit_events: float = Field(
        50.0, gt=0, description="Socket events per second a session may send (sustained)."
    )
    rate_limit_burst: int = Field(200, gt=0, description="Socket events a session may send in a burst.")
    socket_max_handlers: int = Field(
        16,
        ge=0,
        description="Socket event handlers one connection may have running at once; later events wait in order "
        "(at most the rate-limit burst of them, further ones are refused); 0 = no limit.",
    )
    rate_limit_ip_connects: float = Field(
        50.0, ge=0, description="Socket connects per second one client IP may open (sustained); 0 = no limit."
    )
    rate_limit_ip_connect_burst: int = Field(
        500, gt=0, description="Socket connects one client IP may open in a burst."
    )
    rate_limit_ip_events: float = Field(
        1000.0,
        ge=0,
        description="Socket events per second all sessions of one client IP may send; 0 = no limit.",
    )
    rate_limit_ip_event_burst: int = Field(
        5000, gt=0, description="Socket events all sessions of one client IP may send in a burst."
    )
    rate_limit_ip_table_size: int = Field(
        100_000,
        gt=0,
        description="Most client IPs whose rate limits are remembered (idle ones are forgotten).",
    )
    max_connections_per_user: int = Field(
        100, ge=0, description="Live socket sessions one user may hold across the fleet; 0 = no limit."
    )
    presence_ttl_seconds: float = Field(
        60.0, gt=0, description="A session not heard from for this long is gone."
    )
    usage_ttl_seconds: float = Field(
        3.0, gt=0, description="How long a `usage` report counts a model as in use."
    )
    slow_reader_backlog_events: int = Field(
        1000,
        gt=0,
        description="Backlog length (after merging chat deltas) at which a slow session must reload.",
    )
    slow_reader_backlog_bytes: int = Field(
        8 << 20, gt=0, description="Backlog size at which a slow session is told to reload (chat:reload)."
    )
    delta_linger_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="Chat deltas to a session wait up to this long to share one write; any other event sends them "
        "at once, in order. 0 = every delta is written at the end of its loop turn.",
    )
    recovery_window_seconds: float = Field(
        120.0,
        ge=0,
        description="How long a dropped session can come back and recover its events; 0 disables.",
    )
    recovery_history_size: int = Field(
        5000,
        gt=0,
        description="Events kept per recoverable room (user:, channel:) for recovery and catch-up.",
    )
    recovery_history_seconds: float = Field(
        300.0, gt=0, description="Events older than this are dropped from the recovery history."
    )
    recovery_history_bytes: int = Field(
        64 * 2**20,
        gt=0,
        description="Estimated bytes the in-process recovery history may hold in all rooms; the oldest go first.",
    )
    recovery_offsets: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Append stream offsets to events: auto = for clients that can use them (not plain python-socketio).",
    )
    log_level: str = Field("INFO", description="Logging level (DEBUG, INFO, WARNING, ERROR).")
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object a line; text: plain."
    )
    doc_compact_every: int = Field(
        200,
        ge=1,
        description="Compact a collaborative document's update log into one snapshot after this many updates.",
    )
    doc_max_bytes: int = Field(
        4 * 2**20,
        ge=0,
        description="Largest encoded size of a collaborative document; updates past it are refused (0 = no limit).",
    )
    doc_save_debounce_seconds: float = Field(
        0.5, ge=0, description="Quiet time before a collaborative note's content is saved."
    )
    persist_flush_interval: float = Field(
        0.25, gt=0, description="Seconds streamed chat deltas are gathered before one database write."
    )
    openai_base_url: str = Field(
        "",
        description="OpenAI-compatible upstream for generations (e.g. http://127.0.0.1:11434/v1); empty = demo only.",
    )
    openai_api_key: str = Field("", description="API key sent to the OpenAI-compatible upstream.")
    demo_tokens_per_second: float = Field(
        40.0, ge=0, description="Token rate of the built-in demo model; 0 = as fast as possible."
    )
    demo_max_tokens: int = Field(100_000, gt=0, description="Longest answer the demo model writes.")
    completion_snapshot_seconds: float = Field(
        1.0,
        ge=0,
        description="Interval of the full-content snapshots of a streaming answer (a late tab converges); 0 = off.",
    )
    completion_coalesce_ms: int = Field(
        50,
        ge=0,
        le=1000,
        description="Text deltas of an answer arriving faster than this are sent together, one event per window; "
        "0 = one event per token.",
    )
    interrupt_grace_seconds: int = Field(
        300,
        ge=0,
        description="Fleet mode: at start, unfinished answers untouched this long are marked interrupted.",
    )
    web_dir: Path | None = Field(
        None, description="Static web client to serve at /; empty = the bundled build."
    )
    # External identity: trust tokens minted by another app (see README "Use chatwire beside your app").
    external_algorithms: Annotated[list[Literal["HS256", "RS256", "ES256"]], NoDecode] = Field(
        default_factory=list,
        description="Algorithms of external tokens, comma separated (HS256, RS256, ES256); empty = off.",
    )
    external_secret: str = Field("", description="HS256 secret shared with the app that mints tokens.")
    external_public_key: str = Field(
        "", description="RS256/ES256 public key: PEM text, or the path of a PEM file."
    )
    external_jwks_file: Path | None = Field(
        None, description="A JWKS file (JSON Web Key Set) with the app's public keys, chosen by `kid`."
    )
    external_user_id_claim: str = Field("sub", description="The claim that carries the user id (sub or id).")
    external_name_claim: str = Field("name", description="The claim that carries the display name.")
    external_email_claim: str = Field("email", description="The claim that carries the email (optional).")
    external_role_claim: str = Field(
        "role", description="The claim that carries the role (admin, user, pending); empty = default role."
    )
    external_issuer: str = Field("", description="Required `iss` of external tokens; empty = not checked.")
    external_audience: str = Field("", description="Required `aud` of external tokens; empty = not checked.")
    external_leeway_seconds: float = Field(
        30.0, ge=0, description="Clock skew allowed on exp/nbf/iat of external tokens."
    )
    external_default_role: Literal["admin", "user", "pending"] = Field(
        "user", description="Role of a provisioned user whose token carries no valid role."
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics.")
    # Outgoing webhooks (see README "Webhooks").
    webhooks_enabled: bool = Field(True, description="Send the webhook outbox from this process.")
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest one webhook attempt may take (connect, send, answer)."
    )
    webhook_concurrency: int = Field(
        4, ge=1, description="Attempts in flight per webhook endpoint on one process."
    )
    webhook_max_attempts: int = Field(
        12, ge=1, description="Attempts of one delivery before it is marked dead."
    )
    webhook_backoff_base_seconds: float = Field(
        1.0, gt=0, description="Delay after the first failed attempt; doubles with each failure."
    )
    webhook_backoff_max_seconds: float = Field(
        600.0, gt=0, description="Longest delay between two attempts of one delivery."
    )
    webhook_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the outbox is checked while deliveries are due or in flight (new ones wake it "
        "at once).",
    )
    webhook_idle_poll_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest pause of the outbox checks while nothing is due (a row another fleet process left "
        "behind is picked up within it; retries due sooner are checked when due).",
    )
    webhook_retention_seconds: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long delivered and dead webhook deliveries stay in the outbox.",
    )
    webhook_endpoint_cache_seconds: float = Field(
        1.0, ge=0, description="How long the list of endpoints is cached per process; 0 reads it every event."
    )

    @field_validator(
        "cors_origins", "transports", "external_algorithms", "redis_sentinel_hosts", mode="before"
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("web_dir", mode="before")
    @classmethod
    def _empty_web_dir(cls, value: object) -> object:
        """An empty CHATWIRE_WEB_DIR means the bundled build, as documented (not the current folder)."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        return normalise_database_url(value.strip())

    @property
    def fleet(self) -> bool:
        """Fleet mode: processes share Redis (and must share the database and the JWT secret)."""
        return bool(self.redis_url)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file the settings point at (None for PostgreSQL or in-memory), without creating anything."""
        if not self.database_url:
            return (self.data_dir / "chatwire.db").resolve()
        if not self.database_url.startswith("sqlite"):
            return None
        from sqlalchemy.engine import make_url

        database = make_url(self.database_url).database
        if not database or database == ":memory:" or "mode=memory" in self.database_url:
            return None
        return Path(database).resolve()

    @field_validator("redis_sentinel_hosts")
    @classmethod
    def _sentinel_addresses(cls, value: list[str]) -> list[str]:
        from chatwire.backends.redis_client import parse_sentinel_hosts

        parse_sentinel_hosts(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or } (they would decide Redis Cluster hash slots)")
        return value

    @model_validator(mode="after")
    def _one_redis_topology(self) -> Settings:
        if self.redis_cluster and self.redis_sentinel_hosts:
            raise ValueError("CHATWIRE_REDIS_CLUSTER and CHATWIRE_REDIS_SENTINEL_HOSTS exclude each other")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'chatwire.db').resolve()}"

    @cached_property
    def resolved_jwt_secret(self) -> str:
        """The JWT secret: the configured one, or one generated once and kept in the data directory."""
        if self.jwt_secret:
            return self.jwt_secret
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "jwt_secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and `.env`) plus `overrides`; a bad value raises SettingsError with one
    line per problem naming the variable (CHATWIRE_PORT) and the value it had."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """`CHATWIRE_PORT='abc': Input should be a valid integer` for the first error (and how many more)."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:1]:
        loc = err.get("loc") or ("?",)
        name = env_name(str(loc[0]))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        parts.append(f"{name}{shown}: {message}")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return "; ".join(parts) + more
