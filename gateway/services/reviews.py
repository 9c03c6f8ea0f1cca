"""An auditor's review of an emergency access: checked, kept (hash-chained) and its root anchored on chain.

Reviews are rare human acts, so the root of all reviews is anchored (``AccessLedger.anchorReviews``) as
soon as one is kept, in the request (:mod:`gateway.ledger.review_anchoring`).
"""

from __future__ import annotations

from typing import Any

from gateway.ledger.review_anchoring import anchor_pending
from gateway.problems import Problem
from gateway.storage import emergency_reviews, read_model
from gateway.wiring import Components
from node_client._exceptions import SignatureError
from node_client.reviews import StoredReview, note_hash
from node_client.signing import REVIEW_VERDICTS, EmergencyReview, recover_signer, typed_data
from node_client.vocabulary import Role

__all__ = ["draft", "submit"]


def _require_emergency(c: Components, access_id: bytes) -> None:
    if not any(e.access_id == access_id for e in read_model.emergencies(c.db)):
        raise Problem("emergency_access_unknown", f"no emergency access 0x{access_id.hex()} on chain")


def draft(c: Components, reviewer: str, access_id: bytes, verdict: str, note: str, now: int) -> dict[str, Any]:
    """The typed data the auditor signs (the page signs exactly this, after checking the note's hash)."""
    _require_emergency(c, access_id)
    if verdict not in REVIEW_VERDICTS:
        raise Problem("invalid_request", f"verdict is one of {', '.join(REVIEW_VERDICTS)}")
    review = EmergencyReview(access_id, verdict, note_hash(note), reviewer, now)
    return {
        "type": review.primary_type,
        "message": review.message(),
        "typedData": typed_data(c.ledger.consents.domain(), review),
    }


def submit(c: Components, caller: str, review: EmergencyReview, note: str, signature: bytes) -> StoredReview:
    """Checks the review is the signed-in auditor's own, then keeps it and anchors the reviews' root."""
    c.policy.require_member(caller, int(Role.AUDITOR))
    if review.verdict not in REVIEW_VERDICTS:
        raise Problem("review_signature_invalid", f"verdict is one of {', '.join(REVIEW_VERDICTS)}")
    if note_hash(note) != review.note_hash:
        raise Problem("review_signature_invalid", "the note does not hash to the signed noteHash")
    domain = c.ledger.consents.domain()
    try:
        signer = recover_signer(domain, review, signature)
    except SignatureError as exc:
        raise Problem("review_signature_invalid", str(exc)) from None
    if signer.lower() != review.reviewer.lower() or signer.lower() != caller.lower():
        raise Problem("review_signature_invalid", f"signed by {signer}; the reviewer must be the signed-in {caller}")
    _require_emergency(c, review.access_id)
    try:
        stored = emergency_reviews.append(c.db, domain, review, note, signature)
    except emergency_reviews.AlreadyReviewed as exc:
        raise Problem("already_reviewed", str(exc)) from None
    anchor_pending(c.db, c.ledger, c.gateway_account)
    return stored
