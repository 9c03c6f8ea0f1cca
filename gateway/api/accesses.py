"""Proof that a release was ledgered: ``GET /v1/accesses/{ref}/proof``.

Every release response names its ledger entry: ``ledger.txHash`` (strict mode: an ``AccessLogged``
event) or ``ledger.journalIndex`` (batch mode: an entry of the hash-chained journal, anchored on-chain
under a Merkle root within the anchor interval). This endpoint returns what a requester, the patient or
an auditor needs to check that entry *without trusting the gateway*: in batch mode the entry's bytes,
its RFC 6962 leaf hash, the anchor (root, tree size, transaction) and the inclusion proof, which
:func:`node_client.merkle.root_from_inclusion_proof` turns back into the anchored root; in strict mode
the transaction and log that carry the access hash.

``GET /v1/journal`` gives an auditor the whole journal (batch mode) in the export format
(docs/audit.md) from the running gateway, for ``hcl audit replay --journal``; ``GET
/v1/emergency-reasons`` the openings of the emergency reasons it relayed, for ``--reasons``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from gateway.api.deps import CallerDep, ComponentsDep, CursorQuery, LimitQuery, page_key, page_links
from gateway.api.schemas import (
    AnchoredBatchProof,
    EmergencyReasonOpening,
    EmergencyReasonOpenings,
    PendingBatchProof,
    Proof,
    StrictProof,
    problems,
)
from gateway.ledger.journal import JournalError
from gateway.problems import Problem
from gateway.services import proofs
from gateway.storage import emergency_reasons, read_model
from gateway.wiring import Components
from node_client.contracts import MemberStatus
from node_client.vocabulary import AUDIT_ROLES, PURPOSES

router = APIRouter(tags=["accesses"])


_PENDING: dict[int | str, dict[str, Any]] = {
    202: {
        "model": PendingBatchProof,
        "description": "Journaled, not anchored yet: ask again after Retry-After seconds",
        "headers": {"Retry-After": {"description": "seconds", "required": True, "schema": {"type": "integer"}}},
    }
}

_JOURNAL_EXPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the journal export (docs/audit.md), a file named journal.jsonl",
        "content": {
            "application/jsonl": {
                "schema": {"type": "string", "description": "JSON Lines: the journal's entries and anchors"}
            }
        },
    }
}


def _may_see(c: Components, caller: str, requester: str, patient: str) -> None:
    if caller in (requester, patient):
        return
    member = c.policy.member(caller)
    if member.status is not MemberStatus.ACTIVE or not member.roles & AUDIT_ROLES:
        raise Problem("wrong_role", "only the requester, the patient and auditors may see this proof")


@router.get("/v1/accesses/{ref}/proof", response_model=Proof, responses=problems(404, 503) | _PENDING)
def proof(ref: str, c: ComponentsDep, caller: CallerDep) -> StrictProof | AnchoredBatchProof | JSONResponse:
    """The ledger proof of one release: ``ref`` is a journal index (batch) or an access id (strict)."""
    if ref.isascii() and ref.isdigit():  # str.isdigit() alone also accepts '³', which int() refuses
        if len(ref) > 18:  # past any journal, and int() refuses more than 4300 digits
            raise Problem("record_not_found", "no such journal entry", status=404)
        return _batch_proof(c, caller, int(ref))
    raw = ref.removeprefix("0x")
    if len(raw) != 64:
        raise Problem("invalid_request", "ref is a journal index (batch mode) or a 32-byte access id (strict)")
    try:
        access_hash = bytes.fromhex(raw)
    except ValueError:
        raise Problem("invalid_request", "an access id is 32 bytes of hex") from None
    row = read_model.access_by_hash(c.db, access_hash)
    if row is None:
        c.indexer.require_complete()  # not read yet is not "no such access"
        raise Problem(
            "record_not_found", "no ledgered access with this id (batch-mode releases: use journalIndex)", status=404
        )
    _may_see(c, caller, row.requester, row.patient)
    return StrictProof(
        mode="strict",
        accessId="0x" + access_hash.hex(),
        requester=row.requester,
        patient=row.patient,
        recordId="0x" + row.record_id.hex(),
        purpose=PURPOSES[row.purpose].slug,
        emergency=row.emergency,
        txHash=row.tx_hash,
        blockNumber=row.block,
        logIndex=row.log_index,
        contract=c.ledger.access.address,
        event="AccessLogged",
    )


def _batch_proof(c: Components, caller: str, idx: int) -> AnchoredBatchProof | JSONResponse:
    if c.journal is None or c.journal_index is None:
        raise Problem("record_not_found", "this gateway ledgers in strict mode: use the access id", status=404)
    entry = c.journal_index.entry(idx) if idx < c.journal.size else None
    if entry is None:
        raise Problem("record_not_found", f"no journal entry {idx}", status=404)
    _may_see(c, caller, entry.requester, entry.patient)
    body = proofs.batch_proof(c, idx, entry)
    if not body["anchored"]:
        retry = max(1, round(c.settings.anchor_interval))
        pending = PendingBatchProof.model_validate(body)
        return JSONResponse(pending.model_dump(), status_code=202, headers={"Retry-After": str(retry)})
    return AnchoredBatchProof.model_validate(body)


@router.get("/v1/journal", response_class=FileResponse, responses=_JOURNAL_EXPORT | problems(404, 503))
def journal(c: ComponentsDep, caller: CallerDep) -> FileResponse:
    """The release journal with its anchors (JSON Lines, one snapshot), for auditors and regulators."""
    c.policy.require_member(caller, int(AUDIT_ROLES))
    if c.journal is None:
        raise Problem(
            "record_not_found", "this gateway ledgers in strict mode: the chain is the whole record", status=404
        )
    fd, name = tempfile.mkstemp(prefix="journal-export-", suffix=".jsonl", dir=c.settings.data_dir)
    os.close(fd)
    try:
        c.journal.export(Path(name))
    except JournalError as exc:
        os.unlink(name)
        raise Problem("journal_unavailable", str(exc)) from exc
    return FileResponse(
        name, media_type="application/jsonl", filename="journal.jsonl", background=BackgroundTask(os.unlink, name)
    )


@router.get("/v1/emergency-reasons", responses=problems(400, 403))
def reasons(
    c: ComponentsDep, caller: CallerDep, cursor: CursorQuery = None, limit: LimitQuery = 50
) -> EmergencyReasonOpenings:
    """The emergency reasons this gateway relayed, each with its salt (the opening of the ``reasonHash``
    on chain), for auditors and regulators: ``hcl audit replay --reasons`` checks them against the chain.
    Oldest first, a page at a time: ``cursor`` (and the ``next`` link) give the following page."""
    after = page_key(cursor)
    c.policy.require_member(caller, int(AUDIT_ROLES))
    page = emergency_reasons.openings(c.db, after=after, limit=limit + 1)
    last = (page[limit - 1].created_at, page[limit - 1].access_id) if len(page) > limit else None
    return EmergencyReasonOpenings(
        reasons=[
            EmergencyReasonOpening(
                accessId="0x" + o.access_id.hex(),
                member=o.member,
                patient=o.patient,
                reason=o.reason,
                salt=None if o.salt is None else "0x" + o.salt.hex(),
            )
            for o in page[:limit]
        ],
        **page_links("/v1/emergency-reasons", {"limit": limit}, last),
    )
