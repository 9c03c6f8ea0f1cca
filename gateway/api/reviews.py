"""Auditors' reviews of emergency accesses: ``POST /v1/emergency-reviews`` (signed, kept, anchored),
``GET /v1/emergency-reviews`` (paged, with the anchored roots), and the typed data to sign.

A review is final: a second review of the same access by the same auditor is a 409 (another auditor may
review it too). Design and checks: docs/audit.md, "Reviews of emergency accesses".
"""

from __future__ import annotations

import time
from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Query

from gateway.api.deps import CallerDep, ComponentsDep, CursorQuery, LimitQuery, page_key
from gateway.api.models import ReviewDraftIn, SignedReviewIn
from gateway.api.schemas import EmergencyReviewOut, EmergencyReviews, ReviewDraft, ReviewsAnchor, problems
from gateway.services import reviews
from gateway.storage import emergency_reviews
from node_client.paging import encode_cursor
from node_client.reviews import StoredReview
from node_client.signing import EmergencyReview
from node_client.vocabulary import AUDIT_ROLES, Role

router = APIRouter(tags=["accesses"])


def _b(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str.removeprefix("0x"))


def _out(r: StoredReview) -> EmergencyReviewOut:
    return EmergencyReviewOut(**r.as_json())


@router.post("/v1/emergency-reviews/draft", responses=problems(403, 404))
def review_draft(body: ReviewDraftIn, c: ComponentsDep, caller: CallerDep) -> ReviewDraft:
    """The EIP-712 ``EmergencyReview`` the signed-in auditor would sign now (``typedData`` for
    ``eth_signTypedData_v4``; ``message`` for the submission)."""
    c.policy.require_member(caller, int(Role.AUDITOR))
    d = reviews.draft(c, caller, _b(body.accessId), body.verdict, body.note, int(time.time()))
    return ReviewDraft(type="EmergencyReview", message=d["message"], typedData=d["typedData"])


@router.post("/v1/emergency-reviews", status_code=201, responses=problems(403, 404, 409, 422))
def submit_review(body: SignedReviewIn, c: ComponentsDep, caller: CallerDep) -> EmergencyReviewOut:
    """Keeps an auditor's signed review of an emergency access and anchors the reviews' Merkle root.

    422 ``review_signature_invalid``: the signature does not verify, the signer is not the signed-in
    auditor, or the note does not hash to ``noteHash``; 404: no such emergency access; 409: reviewed already."""
    m = body.message
    review = EmergencyReview(_b(m.accessId), m.verdict, _b(m.noteHash), to_checksum_address(m.reviewer), m.reviewedAt)
    return _out(reviews.submit(c, caller, review, body.note, _b(body.signature)))


@router.get("/v1/emergency-reviews", responses=problems(403))
def list_reviews(
    c: ComponentsDep,
    caller: CallerDep,
    accessId: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{64}$")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> EmergencyReviews:
    """The reviews this gateway keeps, newest first (of one emergency access with ``accessId``), and
    every anchored root of them (auditors and regulators)."""
    c.policy.require_member(caller, int(AUDIT_ROLES))
    key = page_key(cursor)
    rows = emergency_reviews.page(
        c.db, before=None if key is None else key[0], limit=limit, access_id=None if accessId is None else _b(accessId)
    )
    last = rows[-1] if len(rows) == limit else None
    return EmergencyReviews(
        reviews=[_out(r) for r in rows],
        anchors=[
            ReviewsAnchor(size=s, root="0x" + root.hex(), txHash=tx, blockNumber=b)
            for s, root, tx, b in emergency_reviews.anchors(c.db)
        ],
        cursor=None if last is None else encode_cursor(last.idx, last.leaf_hash),
    )
