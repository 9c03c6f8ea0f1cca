"""Discovery: which records of a patient a member may see, here and at the other institutions' gateways.

Only metadata leaves (category, provider, dates and codes of the indexed resources), and only of the
categories the member has consent for now. :func:`local` answers for the records this gateway holds —
to its own members and, through ``/v1/federation``, to another gateway acting for one of them;
:func:`network` adds what every peer gateway answers, asked in parallel, each record naming its holder.
A peer that does not answer is listed in ``unavailable``; the rest of the answer stands.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.federation.directory import Peer
from gateway.problems import Problem
from gateway.storage import record_keys
from gateway.wiring import Components
from node_client.vocabulary import CATEGORIES, PURPOSES

__all__ = ["Discovery", "Query", "local", "network"]


@dataclass(frozen=True, slots=True)
class Query:
    """What is asked: the patient's records, for a purpose, optionally narrowed (``filters`` as sent on)."""

    patient: str
    purpose: int
    categories: set[int] | None = None
    code: str | None = None
    since: str | None = None

    @property
    def filters(self) -> dict[str, str]:
        out = {"code": self.code or "", "since": self.since or ""}
        if self.categories is not None:
            out["category"] = ",".join(CATEGORIES[c].slug for c in sorted(self.categories))
        return {k: v for k, v in out.items() if v}


@dataclass(slots=True)
class Discovery:
    """The answer: records as the API shows them (dicts), the categories consented, the peers missing."""

    records: list[dict[str, Any]] = field(default_factory=list)
    consented: list[int] = field(default_factory=list)
    unavailable: list[dict[str, str]] = field(default_factory=list)


def local(c: Components, *, caller: str, query: Query) -> Discovery:
    """The records this gateway holds of the patient that ``caller`` (a checked member) may see now."""
    c.indexer.require_complete()  # the records' list is the read model's (a peer asking lists us unavailable)
    allowed: dict[int, bool] = {}
    out = Discovery()
    holder = c.gateway_account.address
    for row in record_keys.discoverable_records_of(c.db, query.patient):
        cat = row.category
        if query.categories is not None and cat not in query.categories:
            continue
        if cat not in allowed:
            allowed[cat] = c.policy.check(query.patient, caller, cat, query.purpose).allowed
        if not allowed[cat]:
            continue
        indexed = record_keys.indexed_resources(c.db, row.record_id, code=query.code, since=query.since)
        if (query.code or query.since) and not indexed:
            continue
        out.records.append(
            {
                "recordId": "0x" + row.record_id.hex(),
                "category": CATEGORIES[cat].slug,
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
        )
    out.consented = [k for k, v in sorted(allowed.items()) if v]
    return out


def network(c: Components, *, caller: str, query: Query) -> Discovery:
    """:func:`local`, plus every peer gateway's answer for ``caller`` (asked in parallel)."""
    out = local(c, caller=caller, query=query)
    peers = c.federation.directory.peers()
    if not peers:
        return out
    purpose = PURPOSES[query.purpose].slug
    with ThreadPoolExecutor(max_workers=min(8, len(peers)), thread_name_prefix="hcl-discovery") as pool:
        asked = [
            (p, pool.submit(c.federation.discover, p, caller, query.patient, purpose, query.filters)) for p in peers
        ]
        for peer, future in asked:
            try:
                answer = future.result()
            except (errors.DomainError, Problem) as exc:
                out.unavailable.append(_missing(peer, exc))
                continue
            out.records.extend(_theirs(peer, answer))
    out.records.sort(key=lambda r: -int(r.get("registeredAt", 0)))
    return out


def _theirs(peer: Peer, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A peer's records, each naming the peer as holder (whatever the peer says of itself)."""
    records = answer.get("records")
    if not isinstance(records, list):
        return []
    return [{**r, "holder": peer.address, "holderName": peer.name} for r in records if isinstance(r, dict)]


def _missing(peer: Peer, exc: errors.DomainError | Problem) -> dict[str, str]:
    return {"gateway": peer.address, "name": peer.name, "code": exc.code, "detail": exc.detail}
