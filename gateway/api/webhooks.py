"""Webhooks for institutions' systems: a member registers a URL and is sent each access of its records.

Scope: the accesses of records the subscribing institution registered (it is their ``provider``), by
anyone, emergencies included, whichever gateway ledgered them (docs/notifications.md).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter

from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.schemas import Webhook, WebhookRequest, Webhooks, problems
from gateway.problems import Problem
from gateway.storage import notifications
from node_client.contracts import MemberStatus

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _require_member(c: ComponentsDep, caller: str) -> None:
    member = c.policy.member(caller)
    if member.status is not MemberStatus.ACTIVE:
        raise Problem("not_member", "only an active consortium member may subscribe to webhooks")


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Problem("invalid_webhook_url", "give an absolute http:// or https:// URL", url=url[:200])
    return url


@router.post("", status_code=201, responses=problems(401, 403, 422))
def register(body: WebhookRequest, c: ComponentsDep, caller: CallerDep) -> Webhook:
    """Subscribes ``url`` to the accesses of the caller's records; the answer carries the signing secret,
    which is never shown again."""
    _require_member(c, caller)
    url, secret = _checked_url(body.url), secrets.token_bytes(32)
    with c.db.write() as conn:
        sub = notifications.add_subscription(conn, "wh_" + secrets.token_hex(8), caller, url, secret)
    return Webhook(id=sub.id, url=sub.url, createdAt=sub.created_at, secret="whsec_" + secret.hex())


@router.get("", responses=problems(401, 403))
def my_webhooks(c: ComponentsDep, caller: CallerDep) -> Webhooks:
    """The caller's subscriptions (without their secrets)."""
    _require_member(c, caller)
    subs = notifications.subscriptions_of(c.db, caller)
    return Webhooks(webhooks=[Webhook(id=s.id, url=s.url, createdAt=s.created_at) for s in subs])


@router.delete("/{sub_id}", responses=problems(401, 403, 404))
def unsubscribe(sub_id: str, c: ComponentsDep, caller: CallerDep) -> Webhook:
    """Ends the subscription (answered as it was); its pending deliveries are dropped."""
    _require_member(c, caller)
    gone = next((s for s in notifications.subscriptions_of(c.db, caller) if s.id == sub_id), None)
    with c.db.write() as conn:
        if gone is None or not notifications.remove_subscription(conn, caller, sub_id):
            raise Problem("not_found", "you have no webhook of that id")
    return Webhook(id=gone.id, url=gone.url, createdAt=gone.created_at)
