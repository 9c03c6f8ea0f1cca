"""A patient's access history across every institution, each entry checked against the chain.

Strict-mode releases are ``AccessLogged`` events: every gateway's read model has all of them, from the
chain. Batch-mode releases sit in the journal of the gateway that released them; the patient's gateway
asks every peer for the patient's entries, each with its leaf, inclusion proof and anchor, and checks
them itself (``verification``):

``chain_event``        an ``AccessLogged`` event on chain (strict mode);
``anchored_root``      the entry is in a Merkle root its gateway anchored on chain (the read model's anchors);
``not_anchored_yet``   journaled but not yet under an anchored root (anchoring runs every few seconds);
``root_not_on_chain``  the root the gateway shows was never anchored by it: the entry is unproven;
``proof_mismatch``     the entry does not hash into the root it comes with: altered.

A gateway that hides an entry is found by the auditor's replay of its journal against its anchors
(``hcl audit replay``), not here: the patient sees what each gateway shows, proven or flagged.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.federation.directory import Peer
from gateway.problems import Problem
from gateway.services import proofs
from gateway.storage import emergency_reasons, read_model
from gateway.wiring import Components
from node_client import merkle
from node_client.journal_entry import JournalEntry, unhex
from node_client.paging import PageKey
from node_client.vocabulary import PURPOSES

__all__ = ["History", "PageKey", "holder_entries", "network_page"]


log = logging.getLogger("hcl.gateway.history")


@dataclass(slots=True)
class History:
    """Entries as the API shows them (dicts, newest first) and the peers that did not answer."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[dict[str, str]] = field(default_factory=list)
    #: the last entry's key when more entries follow (a page of :func:`network_page`)
    next: PageKey | None = None


def _key(e: dict[str, Any]) -> PageKey:
    return int(e["time"]), bytes.fromhex(str(e["accessId"])[2:])


def holder_entries(
    c: Components, patient: str, *, before: PageKey | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """This gateway's journal entries of the patient, each with its proof (what a peer is answered): all,
    oldest first, or a page (newest first, below ``before``, at most ``limit``)."""
    if c.journal_index is None:
        return []  # strict mode: every release is on chain, the peer has it already
    if before is None and limit is None:
        return [proofs.batch_proof(c, idx, entry) for idx, entry in c.journal_index.entries_of(patient)]
    page = c.journal_index.page_of(patient, before=before, limit=-1 if limit is None else limit)
    return [proofs.batch_proof(c, idx, entry) for idx, entry in page]


def network_page(
    c: Components, patient: str, *, before: PageKey | None, limit: int, since: int | None = None
) -> History:
    """One page of the patient's whole history (the chain's strict entries, this journal's and every peer's,
    asked in parallel), newest first by (time, access id): each source is asked for at most ``limit + 1``
    entries below ``before``, then merged; only those of second ``since`` or later when given (a polling
    client's: newest first, so they are the first of each source's answer)."""
    c.indexer.require_complete()  # the chain's strict entries and the peers come from the read model
    categories = read_model.record_categories_of(c.db, patient)
    accesses = read_model.accesses_page(c.db, patient, before=before, limit=limit + 1)
    journal = c.journal_index.page_of(patient, before=before, limit=limit + 1) if c.journal_index else []
    out = History(entries=_strict(c, patient, accesses) + _own_batch(c, patient, categories, journal))
    peers = c.federation.directory.peers()
    if peers:
        with ThreadPoolExecutor(max_workers=min(8, len(peers)), thread_name_prefix="hcl-history") as pool:
            asked = [(p, pool.submit(c.federation.accesses, p, patient, before, limit + 1)) for p in peers]
            _collect(c, patient, categories, asked, out)
    # a peer that ignores paging answers everything: the key filter and the cut keep the page exact
    merged = sorted(
        (e for e in out.entries if (before is None or _key(e) < before) and (since is None or int(e["time"]) >= since)),
        key=_key,
        reverse=True,
    )
    out.entries = merged[:limit]
    out.next = _key(out.entries[-1]) if len(merged) > limit else None
    return out


def _collect(
    c: Components,
    patient: str,
    categories: dict[bytes, int],
    asked: list[tuple[Peer, Future[list[dict[str, Any]]]]],
    out: History,
) -> None:
    """Adds each peer's answer, checked, to ``out`` (or the peer to ``out.unavailable``)."""
    for peer, future in asked:
        try:
            items = future.result()
        except (errors.DomainError, Problem) as exc:
            out.unavailable.append({"gateway": peer.address, "name": peer.name, "code": exc.code, "detail": exc.detail})
            continue
        checked = (_checked(c, peer, patient, i, categories) for i in items)
        out.entries += [e for e in checked if e is not None]


def _entry(c: Components, e: JournalEntry, categories: dict[bytes, int], holder: str) -> dict[str, Any]:
    cat = categories.get(e.record_id)
    return {
        "accessId": "0x" + e.access_hash.hex(),
        "requester": e.requester,
        "requesterName": c.member_names.get(e.requester, ""),
        "recordId": "0x" + e.record_id.hex(),
        "category": c.category_keys.name_slot(e.patient, cat) if cat is not None else None,
        "purpose": PURPOSES[e.purpose].slug,
        "emergency": e.emergency,
        "emergencyReason": None,
        "consentId": "0x" + e.consent_id.hex(),
        "time": e.released_at // 1000,
        "holder": holder,
        "holderName": c.member_names.get(holder, ""),
    }


def _strict(c: Components, patient: str, accesses: list[read_model.PatientAccess]) -> list[dict[str, Any]]:
    reasons = emergency_reasons.of_patient(c.db, patient)
    holders = {r.record_id: r.gateway for r in read_model.records_of(c.db, patient)}
    out = []
    for a in accesses:
        holder = holders.get(a.record_id)
        out.append(
            {
                "accessId": "0x" + a.access_hash.hex(),
                "requester": a.requester,
                "requesterName": c.member_names.get(a.requester, ""),
                "recordId": "0x" + a.record_id.hex(),
                "category": c.category_keys.name_slot(patient, a.category) if a.category is not None else None,
                "purpose": PURPOSES[a.purpose].slug,
                "emergency": a.emergency,
                "emergencyReason": reasons.get(a.consent_id) if a.emergency else None,
                "consentId": "0x" + a.consent_id.hex(),
                "time": a.time,
                "holder": holder,
                "holderName": c.member_names.get(holder, "") if holder else "",
                "ledger": {"mode": "strict", "txHash": a.tx_hash, "blockNumber": a.block},
                "verified": True,
                "verification": "chain_event",
            }
        )
    return out


def _own_batch(
    c: Components, patient: str, categories: dict[bytes, int], journal: list[tuple[int, JournalEntry]]
) -> list[dict[str, Any]]:
    if c.journal is None or not journal:
        return []
    reasons = emergency_reasons.of_patient(c.db, patient)
    anchor = c.journal.last_anchor()
    anchored_size = anchor.tree_size if anchor is not None else 0
    out = []
    for idx, e in journal:
        row = _entry(c, e, categories, c.gateway_account.address)
        row["emergencyReason"] = reasons.get(e.consent_id) if e.emergency else None
        row["ledger"] = {"mode": "batch", "journalIndex": idx}
        row["verified"] = idx < anchored_size
        row["verification"] = "anchored_root" if row["verified"] else "not_anchored_yet"
        out.append(row)
    return out


def _checked(
    c: Components, peer: Peer, patient: str, item: dict[str, Any], categories: dict[bytes, int]
) -> dict[str, Any] | None:
    """A peer's journal entry as the patient sees it, verified here (``None``: malformed or not theirs)."""
    try:
        raw, idx = unhex(item["entry"]), int(item["journalIndex"])
        entry = JournalEntry.from_bytes(raw)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("a peer's journal entry is malformed", extra={"gateway": peer.address, "error": str(exc)})
        return None
    if entry.patient != patient:
        return None
    row = _entry(c, entry, categories, peer.address)
    row["holderName"] = peer.name
    row["ledger"] = {"mode": "batch", "journalIndex": idx}
    row["verification"] = _verification(c, peer, raw, idx, item)
    row["verified"] = row["verification"] == "anchored_root"
    return row


def _verification(c: Components, peer: Peer, raw: bytes, idx: int, item: dict[str, Any]) -> str:
    """How far a peer's entry is proven (see the module docstring)."""
    if not item.get("anchored"):
        return "not_anchored_yet"
    try:
        anchor = item["anchor"]
        root, size = unhex(anchor["root"]), int(anchor["treeSize"])
        path = [unhex(h) for h in item["inclusionProof"]]
        included = merkle.verify_inclusion(merkle.leaf_hash(raw), idx, size, path, root)
    except (KeyError, TypeError, ValueError):
        return "proof_mismatch"
    if not included:
        return "proof_mismatch"
    if read_model.anchor_block(c.db, peer.address, root, size) is None:
        return "root_not_on_chain"
    return "anchored_root"
