"""Webhooks both ways.

Outgoing: an app registers endpoints (server API, `webhooks` scope) for event kinds. `notify(kind, data)` writes
one row per subscribed endpoint into the durable outbox (`webhook_deliveries`); the `WebhookDispatcher` of every
process claims due rows with a lease, POSTs them signed, and records the outcome: 2xx is delivered, anything else
is retried with capped exponential back-off until `max_attempts`, then the row is `dead`. Delivery is at least
once: a process that dies mid-attempt leaves a lease that runs out, and another process (or the restarted one)
sends the row again with the same `webhook-id`, which receivers use to de-duplicate.

Signing follows the Standard Webhooks scheme (https://www.standardwebhooks.com): headers `webhook-id`,
`webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part of the endpoint's `whsec_...` secret. A receiver
refuses timestamps too far from its clock, so a captured request cannot be replayed later.

Incoming: `ChannelWebhooks` gives a channel's managers Open WebUI's incoming webhooks: whoever holds the URL
(`/api/v1/channels/webhooks/{id}/{token}`) posts a message into the channel under the webhook's name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from chatwire.db.models import ChannelWebhook, User, WebhookDelivery, WebhookEndpoint
from chatwire.db.repos.webhooks import DEAD, DELIVERED, PENDING, WebhookRepo
from chatwire.errors import ChatwireError, ErrorCode, forbidden, invalid, not_found
from chatwire.services.singleflight import BatchLoader
from chatwire.util import new_id

log = logging.getLogger("chatwire.webhooks")

# Every kind of event an endpoint can subscribe to ("*" subscribes to all of them).
EVENT_KINDS = (
    "channel.message.posted",
    "channel.message.updated",
    "channel.message.deleted",
    "channel.reaction.added",
    "channel.reaction.removed",
    "chat.completion.finished",
    "user.online",
    "user.offline",
    "note.updated",
)
SECRET_PREFIX = "whsec_"
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_EVENT = "chatwire-event"
HEADER_ATTEMPT = "chatwire-attempt"
LEASE_GRACE_SECONDS = 5.0
PRUNE_EVERY_SECONDS = 300.0
MAX_URL = 2048
ACTIVE_KEY = "active"  # the one key of the active-endpoints read

# `await notify(kind, data)`: what the services that own the events call (one narrow hook each).
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


def now_ms() -> int:
    return int(time.time() * 1000)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def backoff_seconds(
    attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Delay before the next attempt after `attempts` failed ones: base * 2^(attempts-1), +-20 % jitter, capped."""
    raw = base * (2 ** max(0, attempts - 1))
    return float(min(cap, raw * (0.8 + 0.4 * rng())))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_URL:
        raise invalid(f"url must be an http(s) URL of at most {MAX_URL} characters")
    return url


def check_events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e != "*" and e not in EVENT_KINDS]
    if unknown or not events:
        raise invalid(f"events must be one or more of *, {', '.join(EVENT_KINDS)}; unknown: {unknown[:5]}")
    return list(dict.fromkeys(events))


def endpoint_json(
    row: WebhookEndpoint, *, pending: int | None = None, secret: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "active": row.active,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "stats": {
            "last_status": row.last_status,
            "last_error": row.last_error,
            "last_attempt_at": row.last_attempt_at,
            "last_success_at": row.last_success_at,
            "consecutive_failures": row.consecutive_failures,
            "delivered": row.delivered_count,
            "failed_attempts": row.failed_count,
        },
    }
    if pending is not None:
        out["stats"]["pending"] = pending
    if secret:
        out["secret"] = row.secret
    return out


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event": row.event,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "delivered_at": row.delivered_at,
    }


class WebhookService:
    """Endpoints (registration, stats, deliveries) and the outbox writer behind `notify`."""

    def __init__(self, repo: WebhookRepo, *, cache_seconds: float = 1.0) -> None:
        self.repo = repo
        self.cache_seconds = cache_seconds
        self._cache: tuple[float, list[WebhookEndpoint]] | None = None
        # Callers that find the cache stale at once (a connect storm's presence changes) share one read.
        self._active: BatchLoader[list[WebhookEndpoint]] = BatchLoader(self._read_active)
        # Set by the dispatcher: new rows are due now, so it should look at once rather than at its next poll.
        self.wake: Callable[[], None] = lambda: None
        self.enqueue_failures = 0

    # endpoints

    async def create(
        self, url: str, events: list[str], description: str, key_id: str | None
    ) -> dict[str, Any]:
        row = await self.repo.create_endpoint(
            url=check_url(url),
            secret=new_secret(),
            events=check_events(events),
            description=description.strip()[:255],
            key_id=key_id,
            now_ms=now_ms(),
        )
        self._invalidate()
        return endpoint_json(row, pending=0, secret=True)

    async def _endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        row = await self.repo.get_endpoint(endpoint_id)
        if row is None:
            raise not_found("webhook endpoint")
        return row

    async def endpoints(self) -> list[dict[str, Any]]:
        pending = await self.repo.pending_counts()
        return [endpoint_json(r, pending=pending.get(r.id, 0)) for r in await self.repo.list_endpoints()]

    async def get(self, endpoint_id: str) -> dict[str, Any]:
        row = await self._endpoint(endpoint_id)
        pending = await self.repo.pending_counts()
        return endpoint_json(row, pending=pending.get(row.id, 0))

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        active: bool | None,
        rotate_secret: bool,
    ) -> dict[str, Any]:
        await self._endpoint(endpoint_id)
        values: dict[str, Any] = {}
        if url is not None:
            values["url"] = check_url(url)
        if events is not None:
            values["events"] = check_events(events)
        if description is not None:
            values["description"] = description.strip()[:255]
        if active is not None:
            values["active"] = active
        if rotate_secret:
            values["secret"] = new_secret()
        await self.repo.update_endpoint(endpoint_id, values, now_ms())
        self._invalidate()
        if active:
            self.wake()  # its waiting rows are claimable again: the dispatcher may be in a long idle pause
        row = await self._endpoint(endpoint_id)
        pending = await self.repo.pending_counts()
        return endpoint_json(row, pending=pending.get(row.id, 0), secret=rotate_secret)

    async def delete(self, endpoint_id: str) -> None:
        if not await self.repo.delete_endpoint(endpoint_id):
            raise not_found("webhook endpoint")
        self._invalidate()

    async def deliveries(self, endpoint_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        await self._endpoint(endpoint_id)
        if status is not None and status not in (PENDING, DELIVERED, DEAD):
            raise invalid("status must be pending, delivered or dead")
        return [delivery_json(d) for d in await self.repo.deliveries(endpoint_id, status, limit)]

    async def redeliver(self, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
        row = await self.repo.get_delivery(delivery_id)
        if row is None or row.endpoint_id != endpoint_id:
            raise not_found("delivery")
        if row.status == DELIVERED:
            raise ChatwireError(ErrorCode.CONFLICT, "this delivery was delivered already")
        await self.repo.retry_now(delivery_id, now_ms())
        self.wake()
        again = await self.repo.get_delivery(delivery_id)
        assert again is not None
        return delivery_json(again)

    # the outbox

    def _invalidate(self) -> None:
        """An endpoint changed here: the next event reads them again (not joining a read already under way)."""
        self._cache = None
        self._active.forget(ACTIVE_KEY)

    async def _read_active(self, _keys: list[str]) -> dict[str, list[WebhookEndpoint]]:
        return {ACTIVE_KEY: await self.repo.active_endpoints()}

    async def _subscribed(self, kind: str) -> list[WebhookEndpoint]:
        now = time.monotonic()
        cache = self._cache
        if cache is None or now - cache[0] >= self.cache_seconds:
            cache = (now, await self._active.load(ACTIVE_KEY) or [])
            self._cache = cache
        return [e for e in cache[1] if kind in e.events or "*" in e.events]

    async def notify(self, kind: str, data: dict[str, Any]) -> None:
        """Put one delivery per subscribed endpoint in the outbox (committed before this returns).

        Never raises: the change it reports has happened already, so a failure here is logged and counted."""
        try:
            endpoints = await self._subscribed(kind)
            if not endpoints:
                return
            at = now_ms()
            rows = []
            for endpoint in endpoints:
                delivery_id = "msg_" + new_id().replace("-", "")
                body = orjson.dumps(
                    {"id": delivery_id, "type": kind, "timestamp": at, "data": data},
                    option=orjson.OPT_NON_STR_KEYS,
                    default=str,
                ).decode()
                rows.append((delivery_id, endpoint.id, kind, body))
            await self.repo.enqueue(rows, at)
            self.wake()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.enqueue_failures += 1
            log.exception("webhook event not queued", extra={"event": kind})

    def completion_finished_notifier(
        self, chat_of: Callable[[str], Awaitable[Any]]
    ) -> Callable[[str, str, dict[str, Any]], Awaitable[None]]:
        """The MessageWriter's `finished` hook: `chat.completion.finished` with the stored final content
        (sources are counted, not sent: they can be megabytes; read the chat for them)."""

        async def finished(chat_id: str, message_id: str, state: dict[str, Any]) -> None:
            if not await self._subscribed("chat.completion.finished"):
                return
            chat = await chat_of(chat_id)
            await self.notify(
                "chat.completion.finished",
                {
                    "user_id": chat.user_id if chat is not None else None,
                    "chat_id": chat_id,
                    "message_id": message_id,
                    "content": state.get("content") or "",
                    "done": bool(state.get("done")),
                    "usage": state.get("usage"),
                    "error": state.get("error"),
                    "source_count": len(state.get("sources") or []),
                },
            )

        return finished


class AttemptObserver(Protocol):
    def __call__(self, outcome: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class DispatchSettings:
    timeout: float = 10.0
    concurrency: int = 4
    max_attempts: int = 12
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    poll_interval: float = 1.0
    idle_poll_interval: float = 30.0  # longest sleep when nothing pending is claimable sooner
    batch: int = 100
    retention: float = 7 * 24 * 3600.0  # delivered and dead rows are kept this long, for inspection


class WebhookDispatcher:
    """Sends the outbox: claims due rows (a lease per row), at most `concurrency` in flight per endpoint, each
    attempt under its own timeout, so a slow or dead endpoint only holds its own slots and never the event loop,
    socket delivery or other endpoints."""

    def __init__(
        self,
        repo: WebhookRepo,
        owner: str,
        settings: DispatchSettings,
        *,
        observer: AttemptObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.repo = repo
        self.owner = owner
        self.settings = settings
        self.observer = observer
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._endpoints: dict[str, tuple[float, WebhookEndpoint | None]] = {}
        self._wake = asyncio.Event()

    @property
    def lease_ms(self) -> int:
        return int((self.settings.timeout + LEASE_GRACE_SECONDS) * 1000)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("webhook dispatcher already started")
        self._task = asyncio.create_task(self._run(), name="chatwire-webhooks")

    async def stop(self) -> None:
        """Stop claiming; attempts in flight are cancelled (their leases run out and another process, or the
        next start, sends them again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._attempts):
            task.cancel()
        for task in list(self._attempts):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _saturated(self) -> set[str]:
        return {e for e, n in self._in_flight.items() if n >= self.settings.concurrency}

    async def _run(self) -> None:
        backoff = (
            self.settings.poll_interval
        )  # the pause after a failed poll, doubled by each failure in a row
        next_prune = 0.0
        while True:
            # Cleared before the poll, not after: a wake-up that comes while the poll or the idle read awaits (an
            # attempt ending, a row enqueued) must end the pause that follows, not be lost in it.
            self._wake.clear()
            pause: float | None = None
            try:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                    await self.repo.prune(now_ms() - int(self.settings.retention * 1000))
                claimed = await self.poll_once()
                backoff = self.settings.poll_interval
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatch failed; retrying")
                claimed = 0
                backoff = pause = min(30.0, backoff * 2)
            if claimed:
                await asyncio.sleep(0)
                continue
            if pause is None:
                pause = await self._idle_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _idle_delay(self) -> float:
        """How long to sleep after a poll that claimed nothing: until the earliest pending row can be claimed
        (a retry's backoff, another dispatcher's lease), at least `poll_interval` and at most `idle_poll_interval`.
        An idle server so reads the outbox about twice per `idle_poll_interval` instead of every `poll_interval`;
        rows this process enqueues wake it at once, and a row another process of a fleet left behind is picked
        up within `idle_poll_interval`."""
        settings = self.settings
        try:
            at = await self.repo.next_claimable_at()
        except Exception:
            log.exception("webhook outbox: could not read the next due row; polling at the normal pace")
            return settings.poll_interval
        longest = max(settings.poll_interval, settings.idle_poll_interval)
        if at is None:
            return longest
        return min(longest, max(settings.poll_interval, (at - now_ms()) / 1000))

    async def poll_once(self) -> int:
        """Claim what is due (within the per-endpoint limits) and start an attempt for each; returns how many."""
        now = now_ms()
        claimed = 0
        for delivery_id, endpoint_id in await self.repo.due(now, self.settings.batch, self._saturated()):
            if self._in_flight.get(endpoint_id, 0) >= self.settings.concurrency:
                continue  # filled up by earlier rows of this batch; the rest waits for a free slot
            row = await self.repo.claim(delivery_id, self.owner, now, self.lease_ms)
            if row is None:
                continue
            claimed += 1
            self._in_flight[row.endpoint_id] = self._in_flight.get(row.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(row))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        return claimed

    async def _endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        cached = self._endpoints.get(endpoint_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        row = await self.repo.get_endpoint(endpoint_id)
        self._endpoints[endpoint_id] = (now, row)
        return row

    async def _attempt(self, row: WebhookDelivery) -> None:
        try:
            endpoint = await self._endpoint(row.endpoint_id)
            if endpoint is None:
                return  # deleted meanwhile: its rows went with it
            status, error = await self._post(endpoint, row)
            attempts = row.attempts + 1
            at = now_ms()
            if status is not None and 200 <= status < 300:
                outcome, next_at = DELIVERED, at
            elif attempts >= self.settings.max_attempts:
                outcome, next_at = DEAD, at
            else:
                delay = backoff_seconds(attempts, self.settings.backoff_base, self.settings.backoff_max)
                outcome, next_at = PENDING, at + int(delay * 1000)
            await self.repo.finish(
                row,
                self.owner,
                status=outcome,
                http_status=status,
                error=error,
                next_attempt_at=next_at,
                now_ms=at,
            )
            if outcome != DELIVERED:
                log.info(
                    "webhook attempt failed",
                    extra={
                        "delivery_id": row.id,
                        "endpoint_id": row.endpoint_id,
                        "status": status,
                        "error": error,
                        "attempts": attempts,
                        "outcome": outcome,
                    },
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook attempt crashed", extra={"delivery_id": row.id})
        finally:
            left = self._in_flight.get(row.endpoint_id, 1) - 1
            if left > 0:
                self._in_flight[row.endpoint_id] = left
            else:
                self._in_flight.pop(row.endpoint_id, None)
            self._wake.set()  # a slot is free: rows of this endpoint may be waiting

    def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made at the first attempt: a process without webhooks never holds one (a live
        client measurably slowed the in-process socket tests; it is not needed until there is something to send)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self.settings.timeout),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            )
        return self._client

    async def _post(self, endpoint: WebhookEndpoint, row: WebhookDelivery) -> tuple[int | None, str | None]:
        body = row.body.encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "chatwire-webhooks/1",
            HEADER_ID: row.id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: sign(endpoint.secret, row.id, timestamp, body),
            HEADER_EVENT: row.event,
            HEADER_ATTEMPT: str(row.attempts + 1),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.timeout):
                response = await self._http().post(endpoint.url, content=body, headers=headers)
            status = response.status_code
            outcome = "delivered" if 200 <= status < 300 else "failed"
            if outcome == "failed":
                error = f"HTTP {status}: {response.text[:200]}"
        except (TimeoutError, httpx.TimeoutException):
            outcome, error = "timeout", f"timed out after {self.settings.timeout:g} s"
        except httpx.HTTPError as exc:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        if self.observer is not None:
            self.observer(outcome, time.perf_counter() - started)
        return status, error


# Incoming channel webhooks


def webhook_brief(hook: ChannelWebhook) -> dict[str, Any]:
    """The identity a webhook's messages carry (Open WebUI: role `webhook`)."""
    return {"id": hook.id, "name": hook.name, "role": "webhook"}


def channel_webhook_json(hook: ChannelWebhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "channel_id": hook.channel_id,
        "user_id": hook.user_id,
        "name": hook.name,
        "profile_image_url": hook.profile_image_url,
        "token": hook.token,
        "last_used_at": hook.last_used_at,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    }


class ChannelPoster(Protocol):
    """What incoming webhooks need of the channel service."""

    async def get_channel(self, channel_id: str) -> Any: ...

    async def post_as_webhook(
        self, channel_id: str, identity: dict[str, Any], content: str, author_id: str
    ) -> dict[str, Any]: ...


class ChannelWebhooks:
    """Open WebUI's incoming channel webhooks: managed by the channel's creator or an admin."""

    def __init__(self, repo: WebhookRepo, channels: ChannelPoster) -> None:
        self.repo = repo
        self.channels = channels

    async def _manage(self, channel_id: str, user: User) -> None:
        channel = await self.channels.get_channel(channel_id)
        if user.role != "admin" and channel.user_id != user.id:
            raise forbidden("only the channel's creator or an admin may manage its webhooks")

    async def _hook_in(self, channel_id: str, webhook_id: str) -> ChannelWebhook:
        hook = await self.repo.get_channel_webhook(webhook_id)
        if hook is None or hook.channel_id != channel_id:
            raise not_found("webhook")
        return hook

    async def create(
        self, channel_id: str, user: User, name: str, profile_image_url: str | None
    ) -> dict[str, Any]:
        await self._manage(channel_id, user)
        hook = await self.repo.create_channel_webhook(
            channel_id=channel_id,
            user_id=user.id,
            name=name,
            profile_image_url=profile_image_url,
            token=secrets.token_urlsafe(32),
        )
        return channel_webhook_json(hook)

    async def list_for(self, channel_id: str, user: User) -> list[dict[str, Any]]:
        await self._manage(channel_id, user)
        return [channel_webhook_json(h) for h in await self.repo.channel_webhooks(channel_id)]

    async def update(
        self, channel_id: str, webhook_id: str, user: User, name: str, profile_image_url: str | None
    ) -> dict[str, Any]:
        await self._manage(channel_id, user)
        await self._hook_in(channel_id, webhook_id)
        await self.repo.update_channel_webhook(webhook_id, name, profile_image_url)
        return channel_webhook_json(await self._hook_in(channel_id, webhook_id))

    async def delete(self, channel_id: str, webhook_id: str, user: User) -> bool:
        await self._manage(channel_id, user)
        await self._hook_in(channel_id, webhook_id)
        return await self.repo.delete_channel_webhook(webhook_id)

    async def post(self, webhook_id: str, token: str, content: str) -> dict[str, Any]:
        """Post `content` as the webhook; a wrong id or token is `unauthorized` and posts nothing."""
        hook = await self.repo.get_channel_webhook(webhook_id)
        if hook is None or not hmac.compare_digest(hook.token.encode(), token.encode()):
            raise ChatwireError(ErrorCode.UNAUTHORIZED, "unknown webhook or wrong token")
        message = await self.channels.post_as_webhook(
            hook.channel_id, webhook_brief(hook), content, hook.user_id
        )
        await self.repo.touch_channel_webhook(hook.id)
        return {"success": True, "message_id": message["id"]}


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and timestamp the way a receiver should; the decoded body, or ValueError."""
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id = lowered.get(HEADER_ID, "")
    stamp = lowered.get(HEADER_TIMESTAMP, "")
    if not delivery_id or not stamp.isdigit():
        raise ValueError("missing webhook-id or webhook-timestamp")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise ValueError("timestamp outside the tolerance (a replay?)")
    expected = sign(secret, delivery_id, int(stamp), body).split(",", 1)[1]
    for candidate in lowered.get(HEADER_SIGNATURE, "").split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            decoded: dict[str, Any] = orjson.loads(body)
            return decoded
    raise ValueError("no valid signature")
