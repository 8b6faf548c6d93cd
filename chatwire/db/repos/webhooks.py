"""Outgoing webhook endpoints and their durable outbox; incoming channel webhooks.

Outbox times (`next_attempt_at`, `lease_until`, `created_at`, `delivered_at`) are milliseconds since the epoch.
Claiming is a conditional UPDATE per row (`... WHERE id = :id AND status = 'pending' AND lease_until < :now`),
so when several processes race for one row exactly one UPDATE matches it: PostgreSQL re-checks the WHERE clause
on the row version the winner wrote, SQLite serialises writers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import case, delete, func, select, update

from chatwire.db.engine import Database
from chatwire.db.models import ChannelWebhook, WebhookDelivery, WebhookEndpoint
from chatwire.util import new_id, now_ns

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"


class WebhookRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # endpoints

    async def create_endpoint(
        self, *, url: str, secret: str, events: list[str], description: str, key_id: str | None, now_ms: int
    ) -> WebhookEndpoint:
        row = WebhookEndpoint(
            id=new_id(),
            url=url,
            secret=secret,
            events=events,
            description=description,
            active=True,
            key_id=key_id,
            consecutive_failures=0,
            delivered_count=0,
            failed_count=0,
            created_at=now_ms,
            updated_at=now_ms,
        )
        async with self.db.session() as s:
            s.add(row)
        return row

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        async with self.db.read() as s:
            return await s.get(WebhookEndpoint, endpoint_id)

    async def list_endpoints(self) -> list[WebhookEndpoint]:
        async with self.db.read() as s:
            rows = await s.execute(
                select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
            )
            return list(rows.scalars())

    async def active_endpoints(self) -> list[WebhookEndpoint]:
        async with self.db.read() as s:
            rows = await s.execute(select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True)))
            return list(rows.scalars())

    async def update_endpoint(self, endpoint_id: str, values: dict[str, Any], now_ms: int) -> bool:
        async with self.db.session() as s:
            result = await s.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(**values, updated_at=now_ms)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        async with self.db.session() as s:
            await s.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
            result = await s.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def pending_counts(self) -> dict[str, int]:
        """Pending outbox rows per endpoint."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(WebhookDelivery.endpoint_id, func.count())
                .where(WebhookDelivery.status == PENDING)
                .group_by(WebhookDelivery.endpoint_id)
            )
            return {endpoint_id: int(count) for endpoint_id, count in rows.all()}

    # outbox

    async def enqueue(self, rows: Sequence[tuple[str, str, str, str]], now_ms: int) -> None:
        """Store deliveries `(delivery_id, endpoint_id, event, body)` in one transaction, due now."""
        if not rows:
            return
        async with self.db.session() as s:
            s.add_all(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event=event,
                    body=body,
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now_ms,
                    lease_until=0,
                    created_at=now_ms,
                )
                for delivery_id, endpoint_id, event, body in rows
            )

    async def due(self, now_ms: int, limit: int, skip_endpoints: Collection[str]) -> list[tuple[str, str]]:
        """`(id, endpoint_id)` of pending rows of active endpoints that are due and not leased, oldest first
        (candidates only: claim each before sending it)."""
        query = (
            select(WebhookDelivery.id, WebhookDelivery.endpoint_id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookEndpoint.active.is_(True),
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now_ms,
                WebhookDelivery.lease_until < now_ms,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
            .limit(limit)
        )
        if skip_endpoints:
            query = query.where(WebhookDelivery.endpoint_id.not_in(list(skip_endpoints)))
        async with self.db.read() as s:
            return [(row[0], row[1]) for row in (await s.execute(query)).all()]

    async def next_claimable_at(self) -> int | None:
        """The earliest moment (ms) a pending row of an active endpoint can be claimed (its next attempt, or the
        end of the lease another dispatcher holds on it); None when nothing is pending."""
        row = WebhookDelivery
        moment = case((row.next_attempt_at > row.lease_until, row.next_attempt_at), else_=row.lease_until + 1)
        query = (
            select(func.min(moment))
            .join(WebhookEndpoint, WebhookEndpoint.id == row.endpoint_id)
            .where(WebhookEndpoint.active.is_(True), row.status == PENDING)
        )
        async with self.db.read() as s:
            value = (await s.execute(query)).scalar()
        return None if value is None else int(value)

    async def claim(self, delivery_id: str, owner: str, now_ms: int, lease_ms: int) -> WebhookDelivery | None:
        """Lease one row for `owner`; None when another process holds or finished it."""
        async with self.db.session() as s:
            result = await s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.lease_until < now_ms,
                )
                .values(lease_owner=owner, lease_until=now_ms + lease_ms)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            return await s.get(WebhookDelivery, delivery_id)

    async def finish(
        self,
        delivery: WebhookDelivery,
        owner: str,
        *,
        status: str,
        http_status: int | None,
        error: str | None,
        next_attempt_at: int,
        now_ms: int,
    ) -> bool:
        """Record one attempt's outcome, only while `owner` still holds the lease; update the endpoint's stats."""
        delivered = status == DELIVERED
        async with self.db.session() as s:
            result = await s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery.id, WebhookDelivery.lease_owner == owner)
                .values(
                    status=status,
                    attempts=WebhookDelivery.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    lease_owner=None,
                    lease_until=0,
                    last_status=http_status,
                    last_error=error[:500] if error else None,
                    delivered_at=now_ms if delivered else None,
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            stats: dict[str, Any] = {
                "last_status": http_status,
                "last_error": error[:500] if error else None,
                "last_attempt_at": now_ms,
            }
            if delivered:
                stats.update(
                    consecutive_failures=0,
                    last_success_at=now_ms,
                    delivered_count=WebhookEndpoint.delivered_count + 1,
                )
            else:
                stats.update(
                    consecutive_failures=WebhookEndpoint.consecutive_failures + 1,
                    failed_count=WebhookEndpoint.failed_count + 1,
                )
            await s.execute(
                update(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id).values(**stats)
            )
            return True

    async def deliveries(self, endpoint_id: str, status: str | None, limit: int) -> list[WebhookDelivery]:
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        async with self.db.read() as s:
            rows = await s.execute(query.order_by(WebhookDelivery.created_at.desc()).limit(limit))
            return list(rows.scalars())

    async def get_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        async with self.db.read() as s:
            return await s.get(WebhookDelivery, delivery_id)

    async def retry_now(self, delivery_id: str, now_ms: int) -> bool:
        """Make a dead or pending row due again (an operator's redelivery)."""
        async with self.db.session() as s:
            result = await s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status != DELIVERED)
                .values(status=PENDING, next_attempt_at=now_ms, lease_until=0, lease_owner=None)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def prune(self, before_ms: int) -> int:
        """Delete delivered and dead rows created before `before_ms` (the outbox's retention)."""
        async with self.db.session() as s:
            result = await s.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status.in_((DELIVERED, DEAD)), WebhookDelivery.created_at < before_ms
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def count_by_status(self) -> dict[str, int]:
        """Outbox rows per status (all endpoints)."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            )
            return {status: int(count) for status, count in rows.all()}

    # incoming channel webhooks

    async def create_channel_webhook(
        self, *, channel_id: str, user_id: str, name: str, profile_image_url: str | None, token: str
    ) -> ChannelWebhook:
        now = now_ns()
        row = ChannelWebhook(
            id=new_id(),
            channel_id=channel_id,
            user_id=user_id,
            name=name,
            profile_image_url=profile_image_url,
            token=token,
            created_at=now,
            updated_at=now,
        )
        async with self.db.session() as s:
            s.add(row)
        return row

    async def channel_webhooks(self, channel_id: str) -> list[ChannelWebhook]:
        async with self.db.read() as s:
            rows = await s.execute(
                select(ChannelWebhook)
                .where(ChannelWebhook.channel_id == channel_id)
                .order_by(ChannelWebhook.created_at, ChannelWebhook.id)
            )
            return list(rows.scalars())

    async def get_channel_webhook(self, webhook_id: str) -> ChannelWebhook | None:
        async with self.db.read() as s:
            return await s.get(ChannelWebhook, webhook_id)

    async def update_channel_webhook(self, webhook_id: str, name: str, profile_image_url: str | None) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(ChannelWebhook)
                .where(ChannelWebhook.id == webhook_id)
                .values(name=name, profile_image_url=profile_image_url, updated_at=now_ns())
            )

    async def delete_channel_webhook(self, webhook_id: str) -> bool:
        async with self.db.session() as s:
            result = await s.execute(delete(ChannelWebhook).where(ChannelWebhook.id == webhook_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def touch_channel_webhook(self, webhook_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(ChannelWebhook).where(ChannelWebhook.id == webhook_id).values(last_used_at=now_ns())
            )
