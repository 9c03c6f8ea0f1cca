"""Auditors' reviews of emergency accesses: the note's hash, each review's Merkle leaf and hash chain, and
their check against the signatures and the anchored roots.

A review is an EIP-712 ``EmergencyReview`` (:mod:`node_client.signing`) signed by an auditor. The gateway
keeps it off-chain, in order, hash-chained like the release journal, and anchors the RFC 6962 root of all
reviews so far with ``AccessLedger.anchorReviews`` (its own event, so a reviews root is never taken for a
journal root; its leaves carry their own tag). The gateway and the auditor's replay use this one module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client import merkle
from node_client._exceptions import SignatureError
from node_client.signing import REVIEW_VERDICTS, Domain, EmergencyReview, digest, recover_signer, sign_typed

__all__ = [
    "LEAF_TAG",
    "NOTE_TAG",
    "ReviewProblem",
    "StoredReview",
    "check_reviews",
    "leaf_of",
    "next_chain_hash",
    "note_hash",
    "signed_review",
]

#: domain separation of the note's hash and of a review's Merkle leaf from every other hash of the project
NOTE_TAG = b"hcl/emergency-review-note/v1\x00"
LEAF_TAG = b"hcl/emergency-review/v1\x00"
ZERO = bytes(32)


def note_hash(note: str) -> bytes:
    """``SHA-256(NOTE_TAG || UTF-8 note)``: what the signed review commits to (the note stays off-chain)."""
    return hashlib.sha256(NOTE_TAG + note.encode()).digest()


def signed_review(
    account: LocalAccount, domain: Domain, access_id: bytes, verdict: str, note: str, now: int
) -> dict[str, Any]:
    """An auditor's review signed with a local key, as ``POST /v1/emergency-reviews`` takes it."""
    if verdict not in REVIEW_VERDICTS:
        raise ValueError(f"verdict is one of {', '.join(REVIEW_VERDICTS)}, not {verdict!r}")
    review = EmergencyReview(access_id, verdict, note_hash(note), account.address, now)
    signature = sign_typed(account, domain, review)
    return {"message": review.message(), "note": note, "signature": _hex(signature)}


def leaf_of(domain: Domain, review: EmergencyReview, signature: bytes) -> bytes:
    """The review's RFC 6962 leaf hash: ``SHA-256(0x00 || LEAF_TAG || EIP-712 digest || signature)``."""
    return merkle.leaf_hash(LEAF_TAG + digest(domain, review) + signature)


def next_chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """``chain_hash(i) = SHA-256(chain_hash(i-1) || leaf_hash(i))``, ``chain_hash(-1)`` = 32 zero bytes."""
    return hashlib.sha256(previous + leaf).digest()


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _bytes(s: str) -> bytes:
    return bytes.fromhex(s.removeprefix("0x"))


@dataclass(frozen=True, slots=True)
class StoredReview:
    """A review as the gateway keeps and exports it: position, signed message, note, signature, hashes."""

    idx: int
    review: EmergencyReview
    note: str
    signature: bytes
    leaf_hash: bytes
    chain_hash: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "idx": self.idx,
            **self.review.message(),
            "note": self.note,
            "signature": _hex(self.signature),
            "leafHash": _hex(self.leaf_hash),
            "chainHash": _hex(self.chain_hash),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StoredReview:
        review = EmergencyReview(
            _bytes(d["accessId"]),
            str(d["verdict"]),
            _bytes(d["noteHash"]),
            to_checksum_address(d["reviewer"]),
            int(d["reviewedAt"]),
        )
        return cls(
            int(d["idx"]), review, str(d["note"]), _bytes(d["signature"]), _bytes(d["leafHash"]), _bytes(d["chainHash"])
        )


@dataclass(frozen=True, slots=True)
class ReviewProblem:
    """Why a review (``idx``; ``None``: an anchor) does not check out."""

    idx: int | None
    kind: str  # review_signature_invalid | review_note_mismatch | review_chain_broken | review_root_mismatch
    detail: str


def _check_one(domain: Domain, r: StoredReview, expected_idx: int, previous: bytes) -> list[ReviewProblem]:
    out = []
    if r.idx != expected_idx:
        out.append(ReviewProblem(r.idx, "review_chain_broken", f"review {r.idx} where {expected_idx} was expected"))
    if r.review.verdict not in REVIEW_VERDICTS:
        out.append(ReviewProblem(r.idx, "review_signature_invalid", f"unknown verdict {r.review.verdict!r}"))
    if note_hash(r.note) != r.review.note_hash:
        out.append(ReviewProblem(r.idx, "review_note_mismatch", "the note does not hash to the signed noteHash"))
    try:
        signer = recover_signer(domain, r.review, r.signature)
    except SignatureError as exc:
        signer = str(exc)
    if signer.lower() != r.review.reviewer.lower():
        out.append(ReviewProblem(r.idx, "review_signature_invalid", f"signed by {signer}, not {r.review.reviewer}"))
    leaf = leaf_of(domain, r.review, r.signature)
    if leaf != r.leaf_hash or next_chain_hash(previous, leaf) != r.chain_hash:
        out.append(ReviewProblem(r.idx, "review_chain_broken", "its leaf or chain hash is not the one recomputed"))
    return out


def check_reviews(
    domain: Domain, reviews: Sequence[StoredReview], anchors: Sequence[tuple[int, bytes]]
) -> list[ReviewProblem]:
    """Every problem of ``reviews`` (in order): signature, note, hash chain; and of each anchored
    ``(size, root)`` (from the chain's ``EmergencyReviewsAnchored`` events): the recomputed leaves'
    root at that size. Empty: all check out."""
    out: list[ReviewProblem] = []
    previous, leaves = ZERO, []
    for i, r in enumerate(reviews):
        out += _check_one(domain, r, i, previous)
        leaf = leaf_of(domain, r.review, r.signature)
        previous = next_chain_hash(previous, leaf)
        leaves.append(leaf)
    for size, root in anchors:
        if size > len(leaves):
            out.append(ReviewProblem(None, "review_root_mismatch", f"an anchor of {size} reviews; {len(leaves)} given"))
        elif merkle.root_from_leaf_hashes(leaves[:size]) != root:
            out.append(
                ReviewProblem(None, "review_root_mismatch", f"the first {size} reviews do not hash to 0x{root.hex()}")
            )
    return out
