"""The auditors' reviews of emergency accesses anchored on chain: the root of every kept review, published
with ``AccessLedger.anchorReviews`` (its own event, never read as a journal root; docs/audit.md).

Reviews are rare, so there is no anchoring loop: the request that keeps a review anchors, and the
gateway's start anchors whatever a failed attempt (chain down) left unanchored.
"""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount

from gateway.storage import emergency_reviews
from gateway.storage.db import Database
from node_client.deploy import Ledger

__all__ = ["anchor_pending"]

log = logging.getLogger("hcl.gateway.reviews")


def anchor_pending(db: Database, ledger: Ledger, account: LocalAccount) -> None:
    """Anchors the root of every kept review if the last anchor does not cover them all (logged, not raised)."""
    pending = emergency_reviews.pending_anchor(db)
    if pending is None:
        return
    size, root = pending
    try:
        result = ledger.access.anchor_reviews(account, root, size)
    except Exception as exc:  # noqa: BLE001 - the review is kept; the next one (or the next start) anchors it
        log.warning("anchoring %d reviews failed (will retry): %s", size, exc)
        return
    emergency_reviews.record_anchor(db, size, root, result.tx_hash, result.block_number)
