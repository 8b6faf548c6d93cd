"""Receiving chatwire's outgoing webhooks: check a delivery before trusting it.

```python
from chatwire.client.webhooks import verify, WebhookVerificationError

event = verify(secret, request.headers, await request.body())   # raises WebhookVerificationError
if seen(event["id"]): return 200                                 # at-least-once: de-duplicate by id
```

The scheme is Standard Webhooks' (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`), so its
libraries for other languages verify chatwire's deliveries too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatwire.services.webhooks import verify as _verify

__all__ = ["WebhookVerificationError", "verify"]


class WebhookVerificationError(ValueError):
    """The delivery is not from chatwire (bad signature) or not fresh (timestamp outside the tolerance)."""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The event `{id, type, timestamp, data}` if the signature and timestamp are right, else the error."""
    try:
        return _verify(secret, headers, body, tolerance=tolerance, now=now)
    except ValueError as exc:
        raise WebhookVerificationError(str(exc)) from exc
