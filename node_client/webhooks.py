"""Signed webhooks: how a gateway signs a delivery and how its receiver checks it (docs/notifications.md).

A delivery is a JSON body with three headers: ``Webhook-Id`` (the same on every retry: de-duplicate on
it), ``Webhook-Timestamp`` (Unix seconds of this attempt) and ``Webhook-Signature: t=<ts>,v1=<hex>``,
where ``hex`` is HMAC-SHA256 under the subscription's secret of ``<id>.<ts>.<body>``. The timestamp is
signed so an old delivery replayed later fails :func:`verify_webhook`'s tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["WebhookSignatureError", "sign_webhook", "verify_webhook"]

#: how old (or how far in the future) a delivery's timestamp may be, in seconds
TOLERANCE = 300


class WebhookSignatureError(ValueError):
    """The delivery is not signed by the subscription's secret, or its timestamp is out of tolerance."""


def _mac(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: bytes, webhook_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one delivery of ``body``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Webhook-Id": webhook_id,
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": f"t={ts},v1={_mac(secret, webhook_id, ts, body)}",
    }


def verify_webhook(
    secret: bytes | str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> str:
    """Checks a delivery (``headers`` as received, any case; ``body`` the raw bytes) and answers its
    ``Webhook-Id``; raises :class:`WebhookSignatureError` if it is not genuine or not fresh. ``secret`` is
    the one registration answered (bytes, or its hex as given)."""
    key = bytes.fromhex(secret.removeprefix("whsec_")) if isinstance(secret, str) else secret
    h = {k.lower(): v for k, v in headers.items()}
    webhook_id, signature = h.get("webhook-id", ""), h.get("webhook-signature", "")
    fields = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
    try:
        ts = int(fields.get("t", ""))
    except ValueError:
        raise WebhookSignatureError("no timestamp in Webhook-Signature") from None
    if not webhook_id:
        raise WebhookSignatureError("no Webhook-Id")
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise WebhookSignatureError("timestamp out of tolerance: a replay, or a clock far off")
    if not hmac.compare_digest(fields.get("v1", ""), _mac(key, webhook_id, ts, body)):
        raise WebhookSignatureError("signature does not match")
    return webhook_id
