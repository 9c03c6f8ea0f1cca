"""The auditors' reviews of emergency accesses a gateway keeps (``--reviews``), checked against the chain.

The file is what ``hcl audit fetch-reviews`` writes: a header line naming the gateway, then its reviews
oldest first (``GET /v1/emergency-reviews``). Each review's signature, note and hash chain are checked,
the recomputed roots against that gateway's ``EmergencyReviewsAnchored`` events, the reviewer against the
replayed membership; the emergency windows on chain no valid review covers are counted as unreviewed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from node_client.audit.evidence import _json_lines
from node_client.audit.model import Anomaly, hex0x
from node_client.events import EventRecord
from node_client.reviews import StoredReview, check_reviews
from node_client.signing import Domain
from node_client.vocabulary import Role

__all__ = ["FORMAT", "check_review_file"]

FORMAT = "hcl-emergency-reviews"
_ACTIVE = 1


def _read(path: Path) -> tuple[str, list[StoredReview]]:
    lines = _json_lines(path, ())
    if not lines or lines[0][1].get("format") != FORMAT or "gateway" not in lines[0][1]:
        raise ValueError(f"{path}: the first line is not a {FORMAT} header naming the gateway")
    return to_checksum_address(lines[0][1]["gateway"]), [StoredReview.from_json(obj) for _, obj in lines[1:]]


def check_review_file(
    path: Path, events: list[EventRecord], domain: Domain, members: dict[str, list[int]]
) -> tuple[list[Anomaly], dict[str, Any]]:
    """The anomalies of the reviews in ``path`` and a summary (reviews, anchored, unreviewed windows).

    ``members`` is the replayed state's (address → [status, roles]) at the end of the replay: a reviewer
    must be an active AUDITOR then."""
    gateway, reviews = _read(path)
    anchors = [
        (int(e["size"]), bytes(e["root"]))
        for e in events
        if e.name == "EmergencyReviewsAnchored" and e["gateway"].lower() == gateway.lower()
    ]
    found = [
        Anomaly(p.kind, p.detail, {"gateway": gateway, "review_index": p.idx})
        for p in check_reviews(domain, reviews, anchors)
    ]
    bad = {a.evidence["review_index"] for a in found}
    windows = {bytes(e["accessId"]) for e in events if e.name == "EmergencyAccessGranted"}
    for r in reviews:
        evidence = {"gateway": gateway, "review_index": r.idx, "access_id": hex0x(r.review.access_id)}
        if r.review.access_id not in windows:
            found.append(Anomaly("review_of_unknown_emergency", "a review of no emergency window on chain", evidence))
        status, roles = members.get(r.review.reviewer, [0, 0])
        if status != _ACTIVE or not roles & int(Role.AUDITOR):
            evidence["reviewer"] = r.review.reviewer
            found.append(Anomaly("review_by_non_auditor", "the reviewer is not an active auditor", evidence))
            bad.add(r.idx)
    anchored = max((size for size, _ in anchors), default=0)
    if len(reviews) > anchored:
        message = f"{len(reviews) - anchored} review(s) after the last anchored root ({anchored})"
        found.append(Anomaly("review_unanchored", message, {"gateway": gateway, "anchored": anchored}))
    reviewed = {r.review.access_id for r in reviews if r.idx not in bad}
    unreviewed = sorted(hex0x(w) for w in windows - reviewed)
    summary = {"gateway": gateway, "reviews": len(reviews), "anchored": anchored, "unreviewed": unreviewed}
    return found, summary
