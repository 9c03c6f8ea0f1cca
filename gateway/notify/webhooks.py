"""Webhook delivery: each pending delivery in the outbox is POSTed, signed, until its receiver says 2xx.

One thread, in the process that owns the journal (the feed's), so a delivery is not tried by two
processes at once. A failure (refused, timed out, non-2xx) waits ``backoff * 2**attempts`` seconds, at
most ``backoff_max``, then is tried again, for as long as the subscription exists: delivery is
at-least-once, and the ``Webhook-Id`` (the same on every try) lets the receiver drop repeats. The rows
are in SQLite: a restart carries on with what was pending.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx

from gateway.observability import Metrics
from gateway.storage import notifications
from gateway.storage.db import Database
from gateway.storage.notifications import Delivery
from node_client.webhooks import sign_webhook

__all__ = ["Deliverer", "webhook_id"]

log = logging.getLogger("hcl.gateway.notify")


def webhook_id(d: Delivery) -> str:
    """The delivery's id, the same on every retry: the subscription and the event."""
    return f"{d.subscription.id}.{d.event.seq}"


def body_of(d: Delivery) -> bytes:
    return json.dumps(
        {"id": webhook_id(d), "type": "access.recorded", "subscription": d.subscription.id, "access": d.event.payload},
        separators=(",", ":"),
    ).encode()


class Deliverer:
    def __init__(
        self, db: Database, metrics: Metrics, *, interval: float, timeout: float, backoff: float, backoff_max: float
    ) -> None:
        self.db, self.metrics, self.interval = db, metrics, interval
        self.backoff, self.backoff_max = backoff, backoff_max
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hcl-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.deliver_due()
            except Exception:
                log.warning("webhook delivery pass failed", exc_info=True)

    def deliver_due(self) -> None:
        """Tries every delivery due; after a receiver failed, its other deliveries wait for the next pass
        (one receiver that is down or slow does not hold up the others for its timeout per delivery)."""
        down: set[str] = set()
        for d in notifications.deliveries_due(self.db, time.time()):
            if self._stop.is_set():
                return
            if d.subscription.id not in down and not self.deliver(d):
                down.add(d.subscription.id)

    def deliver(self, d: Delivery) -> bool:
        """One try of ``d``; the outbox is updated either way."""
        body = body_of(d)
        headers = {"Content-Type": "application/json", **sign_webhook(d.subscription.secret, webhook_id(d), body)}
        try:
            resp = self._http.post(d.subscription.url, content=body, headers=headers)
            error = None if resp.is_success else f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.db.write() as conn:
            if error is None:
                notifications.delivered(conn, d)
            else:
                wait = min(self.backoff * 2**d.attempts, self.backoff_max)
                notifications.failed(conn, d, time.time() + wait, error)
        self.metrics.webhook_deliveries.labels("delivered" if error is None else "failed").inc()
        if error is not None:
            log.info("webhook delivery failed", extra={"subscription": d.subscription.id, "error": error})
        return error is None
