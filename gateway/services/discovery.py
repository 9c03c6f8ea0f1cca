"""Discovery: which records of a patient a member may see, here and at the other institutions' gateways.

Only metadata leaves (category, provider, dates and codes of the indexed resources), and only of the
categories the member has consent for now. :func:`local` answers for the records this gateway holds —
to its own members and, through ``/v1/federation``, to another gateway acting for one of them;
:func:`network` adds what every peer gateway answers, asked in parallel, each record naming its holder.
A peer that does not answer is listed in ``unavailable``; the rest of the answer stands.

Answers are pages, newest first by (registeredAt, record id) (:data:`~node_client.paging.PageKey`): each
source is asked for at most ``limit + 1`` records below the cursor's key, then merged and cut, like the
access log's pages (:func:`gateway.services.access_history.network_page`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.federation.directory import Peer
from gateway.problems import Problem
from gateway.storage import record_keys
from gateway.wiring import Components
from node_client.blinding import slot_name
from node_client.paging import PageKey
from node_client.vocabulary import PURPOSES

__all__ = ["Discovery", "Query", "local", "network"]

log = logging.getLogger("hcl.gateway.discovery")


@dataclass(frozen=True, slots=True)
class Query:
    """What is asked: the patient's records, for a purpose, optionally narrowed (``filters`` as sent on).
    ``categories`` are her slots: a peer is asked for a blinded one as ``slot-N``, which it needs no key for."""

    patient: str
    purpose: int
    categories: set[int] | None = None
    code: str | None = None
    since: str | None = None

    @property
    def filters(self) -> dict[str, str]:
        out = {"code": self.code or "", "since": self.since or ""}
        if self.categories is not None:
            out["category"] = ",".join(slot_name(None, s) for s in sorted(self.categories))
        return {k: v for k, v in out.items() if v}


@dataclass(slots=True)
class Discovery:
    """The answer: records as the API shows them (dicts), the categories consented, the peers missing."""

    records: list[dict[str, Any]] = field(default_factory=list)
    consented: list[int] = field(default_factory=list)
    unavailable: list[dict[str, str]] = field(default_factory=list)
    #: the last record's key when more records follow (a page)
    next: PageKey | None = None


def local(
    c: Components, *, caller: str, query: Query, before: PageKey | None = None, limit: int | None = None
) -> Discovery:
    """The records this gateway holds of the patient that ``caller`` (a checked member) may see now: all, or
    a page of ``limit`` below ``before``. Consent is decided per category after the SQL, so a page is
    fetched in batches until it is full; a category found denied is left out of the next batch's SQL,
    which bounds the batches by the number of categories plus one."""
    c.indexer.require_complete()  # the records' list is the read model's (a peer asking lists us unavailable)
    allowed: dict[int, bool] = {}
    out = Discovery()
    want = None if limit is None else limit + 1
    key = before
    while want is None or len(out.records) < want:
        batch = 500 if want is None else want - len(out.records)
        rows = record_keys.discoverable_page(
            c.db,
            query.patient,
            before=key,
            limit=batch,
            categories=query.categories,
            excluded=[k for k, v in allowed.items() if not v],
            code=query.code,
            since=query.since,
        )
        for row in rows:
            if row.category not in allowed:
                allowed[row.category] = c.policy.check(query.patient, caller, row.category, query.purpose).allowed
            if allowed[row.category]:
                out.records.append(_described(c, row, query))
        if len(rows) < batch:
            break
        key = (rows[-1].time, rows[-1].record_id)
    out.consented = [k for k, v in sorted(allowed.items()) if v]
    if limit is not None and len(out.records) > limit:
        out.records = out.records[:limit]
        out.next = _key(out.records[-1])
    return out


def _described(c: Components, row: record_keys.DiscoverableRecord, query: Query) -> dict[str, Any]:
    """A record as discovery shows it, with its indexed resources (of ``code``/``since`` if asked)."""
    holder = c.gateway_account.address
    indexed = record_keys.indexed_resources(c.db, row.record_id, code=query.code, since=query.since)
    return {
        "recordId": "0x" + row.record_id.hex(),
        "category": c.category_keys.name_slot(query.patient, row.category),
        "provider": row.provider,
        "providerName": c.member_names.get(row.provider, ""),
        "registeredAt": row.time,
        "status": row.status,
        "amends": None if row.previous is None else "0x" + row.previous.hex(),
        "holder": holder,
        "holderName": c.member_names.get(holder, ""),
        "resources": [
            {
                "resource_type": r.resource_type,
                "code_system": r.code_system,
                "code": r.code,
                "display": r.display,
                "date": r.date,
            }
            for r in indexed
        ],
    }


def network(c: Components, *, caller: str, query: Query, before: PageKey | None, limit: int) -> Discovery:
    """A page of :func:`local` and every peer gateway's answer for ``caller`` (asked in parallel, each for
    at most ``limit + 1`` records below ``before``), merged newest first and cut to ``limit``."""
    out = local(c, caller=caller, query=query, before=before, limit=limit + 1)
    peers = c.federation.directory.peers()
    if peers:
        purpose = PURPOSES[query.purpose].slug
        with ThreadPoolExecutor(max_workers=min(8, len(peers)), thread_name_prefix="hcl-discovery") as pool:
            asked = [
                (
                    p,
                    pool.submit(
                        c.federation.discover, p, caller, query.patient, purpose, query.filters, before, limit + 1
                    ),
                )
                for p in peers
            ]
            for peer, future in asked:
                try:
                    answer = future.result()
                except (errors.DomainError, Problem) as exc:
                    out.unavailable.append(_missing(peer, exc))
                    continue
                out.records.extend(_theirs(c, peer, query.patient, answer))
    # a peer that ignores paging answers everything: the key filter and the cut keep the page exact
    keyed = [(k, r) for r in out.records if (k := _key(r)) is not None and (before is None or k < before)]
    keyed.sort(key=lambda kr: kr[0], reverse=True)
    out.records = [r for _, r in keyed[:limit]]
    out.next = keyed[limit - 1][0] if len(keyed) > limit else None
    return out


def _key(record: dict[str, Any]) -> PageKey | None:
    """A record's place in the order (``None``: a peer described it wrongly; it is left out, and logged)."""
    try:
        rid = bytes.fromhex(str(record["recordId"]).removeprefix("0x"))
        if len(rid) != 32:
            raise ValueError("a record id is 32 bytes")
        return int(record["registeredAt"]), rid
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("a discovered record was malformed", extra={"holder": record.get("holder"), "error": str(exc)})
        return None


def _theirs(c: Components, peer: Peer, patient: str, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A peer's records, each naming the peer as holder (whatever the peer says of itself); a slot the peer
    could not name (``slot-N``, it lacks her key) named here if this gateway holds it."""
    records = answer.get("records")
    if not isinstance(records, list):
        return []
    return [
        {
            **r,
            "category": c.category_keys.renamed(patient, r.get("category")),
            "holder": peer.address,
            "holderName": peer.name,
        }
        for r in records
        if isinstance(r, dict)
    ]


def _missing(peer: Peer, exc: errors.DomainError | Problem) -> dict[str, str]:
    return {"gateway": peer.address, "name": peer.name, "code": exc.code, "detail": exc.detail}
