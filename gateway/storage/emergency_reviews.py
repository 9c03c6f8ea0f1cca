"""Auditors' reviews of emergency accesses (``emergency_reviews``), kept off-chain, in order, hash-chained.

Each row is a signed ``EmergencyReview`` with its note; ``leaf_hash`` and ``chain_hash`` are computed by
:mod:`node_client.reviews`, the module the auditor's replay checks them with. The roots anchored on chain
(``AccessLedger.anchorReviews``) are in ``emergency_review_anchors``.
"""

from __future__ import annotations

import sqlite3

from gateway.storage.db import Database
from node_client import merkle
from node_client.reviews import ZERO, StoredReview, leaf_of, next_chain_hash
from node_client.signing import Domain, EmergencyReview

__all__ = ["AlreadyReviewed", "anchors", "append", "every", "page", "pending_anchor", "record_anchor", "reviewed"]


class AlreadyReviewed(Exception):
    """This auditor already reviewed this emergency access (a review is final; a second one is refused)."""


def _stored(r: sqlite3.Row) -> StoredReview:
    review = EmergencyReview(
        bytes(r["access_id"]), str(r["verdict"]), bytes(r["note_hash"]), str(r["reviewer"]), int(r["reviewed_at"])
    )
    return StoredReview(
        int(r["idx"]), review, str(r["note"]), bytes(r["signature"]), bytes(r["leaf_hash"]), bytes(r["chain_hash"])
    )


def append(db: Database, domain: Domain, review: EmergencyReview, note: str, signature: bytes) -> StoredReview:
    """Appends a (verified) review at the end of the chain; :class:`AlreadyReviewed` for a second one."""
    leaf = leaf_of(domain, review, signature)
    with db.write() as conn:
        last = conn.execute("SELECT idx, chain_hash FROM emergency_reviews ORDER BY idx DESC LIMIT 1").fetchone()
        idx, previous = (0, ZERO) if last is None else (int(last["idx"]) + 1, bytes(last["chain_hash"]))
        stored = StoredReview(idx, review, note, signature, leaf, next_chain_hash(previous, leaf))
        try:
            conn.execute(
                "INSERT INTO emergency_reviews (idx, access_id, reviewer, verdict, note, note_hash, reviewed_at,"
                " signature, leaf_hash, chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (idx, review.access_id, review.reviewer, review.verdict, note, review.note_hash, review.reviewed_at,
                 signature, leaf, stored.chain_hash),
            )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise AlreadyReviewed(f"{review.reviewer} already reviewed 0x{review.access_id.hex()}") from exc
    return stored


def every(db: Database) -> list[StoredReview]:
    """Every review, in chain order (the auditor's replay input)."""
    return [_stored(r) for r in db.read().execute("SELECT * FROM emergency_reviews ORDER BY idx")]


def page(db: Database, *, before: int | None, limit: int, access_id: bytes | None = None) -> list[StoredReview]:
    """Up to ``limit`` reviews, newest first, below index ``before``; of one emergency access if given."""
    sql = "SELECT * FROM emergency_reviews WHERE idx < ?"
    args: list[object] = [2**62 if before is None else before]
    if access_id is not None:
        sql, args = sql + " AND access_id = ?", [*args, access_id]
    rows = db.read().execute(sql + " ORDER BY idx DESC LIMIT ?", (*args, limit))
    return [_stored(r) for r in rows]


def reviewed(db: Database) -> dict[bytes, list[StoredReview]]:
    """Emergency access id → its reviews, oldest first."""
    out: dict[bytes, list[StoredReview]] = {}
    for r in every(db):
        out.setdefault(r.review.access_id, []).append(r)
    return out


def anchors(db: Database) -> list[tuple[int, bytes, str, int]]:
    """``(size, root, tx_hash, block)`` of every anchored root, smallest first."""
    rows = db.read().execute("SELECT size, root, tx_hash, block FROM emergency_review_anchors ORDER BY size")
    return [(int(r["size"]), bytes(r["root"]), str(r["tx_hash"]), int(r["block"])) for r in rows]


def pending_anchor(db: Database) -> tuple[int, bytes] | None:
    """``(size, root)`` of all reviews when more are kept than the last anchored root covers, else None."""
    leaves = [bytes(r["leaf_hash"]) for r in db.read().execute("SELECT leaf_hash FROM emergency_reviews ORDER BY idx")]
    done = db.read().execute("SELECT MAX(size) AS s FROM emergency_review_anchors").fetchone()["s"] or 0
    return None if len(leaves) <= done else (len(leaves), merkle.root_from_leaf_hashes(leaves))


def record_anchor(db: Database, size: int, root: bytes, tx_hash: str, block: int) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO emergency_review_anchors (size, root, tx_hash, block) VALUES (?, ?, ?, ?)",
            (size, root, tx_hash, block),
        )
