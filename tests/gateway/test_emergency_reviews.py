"""Auditors' reviews of emergency accesses over HTTP: signed with node_client, kept hash-chained by the real
gateway, their Merkle root anchored on a real Hardhat chain and checked by the auditor's code."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway.storage import emergency_reviews
from node_client import merkle
from node_client.commitments import reason_commitment
from node_client.paging import decode_cursor
from node_client.reviews import StoredReview, check_reviews, signed_review
from node_client.signing import EmergencyReview
from node_client.vocabulary import parse_categories
from tests.support.gateway_harness import AUDITOR, HOSPITAL, SALT, RunningGateway, dev, restarted, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("reviews")) as running:
        yield running


def _break_glass(gw: RunningGateway, patient: int) -> bytes:
    access_id, _ = gw.ledger.consents.emergency_access(
        dev(HOSPITAL), dev(patient).address, parse_categories("allergies"), reason_commitment("unconscious", SALT)
    )
    gw.wait_indexed()
    return access_id


def _review(
    gw: RunningGateway, access_id: bytes, verdict: str = "justified", note: str = "ok", who: int = AUDITOR
) -> dict:
    return signed_review(dev(who), gw.ledger.consents.domain(), access_id, verdict, note, int(time.time()))


def test_auditor_reviews_an_emergency_access_and_the_root_is_anchored(gw: RunningGateway) -> None:
    first, second = _break_glass(gw, 11), _break_glass(gw, 12)
    auditor = gw.login(dev(AUDITOR))
    r = auditor.post("/v1/emergency-reviews", json=_review(gw, first, "justified", "unconscious; allergies only"))
    assert r.status_code == 201, r.text
    assert r.json()["idx"] == 0 and r.json()["note"] == "unconscious; allergies only"
    r = auditor.post("/v1/emergency-reviews", json=_review(gw, second, "needs-follow-up", "ask the ward"))
    assert r.status_code == 201, r.text

    # a second review by the same auditor is refused; the first stays
    again = auditor.post("/v1/emergency-reviews", json=_review(gw, first, "unjustified", "changed my mind"))
    assert again.status_code == 409 and again.json()["code"] == "already_reviewed"

    listed = auditor.get("/v1/emergency-reviews", params={"limit": 1}).json()
    assert [x["verdict"] for x in listed["reviews"]] == ["needs-follow-up"]  # newest first
    assert decode_cursor(listed["cursor"])[0] == 1
    rest = auditor.get("/v1/emergency-reviews", params={"limit": 1, "cursor": listed["cursor"]}).json()
    assert [x["accessId"] for x in rest["reviews"]] == ["0x" + first.hex()]
    only = auditor.get("/v1/emergency-reviews", params={"accessId": "0x" + second.hex()}).json()
    assert [x["idx"] for x in only["reviews"]] == [1]

    # the anchored roots: on chain (its own event), equal to the recomputed leaves' root
    chain = gw.ledger.access.reviews_anchors(gw.components.gateway_account.address)
    assert [size for size, _ in chain] == [1, 2]
    assert [(a["size"], a["root"]) for a in listed["anchors"]] == [(s, "0x" + root.hex()) for s, root in chain]
    kept = [StoredReview.from_json(x) for x in reversed(auditor.get("/v1/emergency-reviews").json()["reviews"])]
    assert chain[-1][1] == merkle.root_from_leaf_hashes([k.leaf_hash for k in kept])
    assert check_reviews(gw.ledger.consents.domain(), kept, chain) == []
    # a journal anchor is another event: no reviews root appears among them
    assert not list(gw.ledger.access.events(["AccessBatchAnchored"]))

    # a note edited in the gateway's database no longer matches its signed hash, nor the anchored root
    with gw.components.db.write() as conn:
        conn.execute("UPDATE emergency_reviews SET note = 'nothing to see' WHERE idx = 0")
    problems = check_reviews(gw.ledger.consents.domain(), emergency_reviews.every(gw.components.db), chain)
    assert [p.kind for p in problems] == ["review_note_mismatch"]
    with gw.components.db.write() as conn:
        conn.execute("UPDATE emergency_reviews SET verdict = 'unjustified' WHERE idx = 0")
    kinds = {
        p.kind for p in check_reviews(gw.ledger.consents.domain(), emergency_reviews.every(gw.components.db), chain)
    }
    assert {"review_signature_invalid", "review_chain_broken", "review_root_mismatch"} <= kinds


def test_reviews_are_refused_unless_signed_by_the_signed_in_auditor(gw: RunningGateway) -> None:
    access_id = _break_glass(gw, 13)
    auditor = gw.login(dev(AUDITOR))

    hospital = gw.login(dev(HOSPITAL))  # not an auditor: neither submits nor lists
    assert hospital.post("/v1/emergency-reviews", json=_review(gw, access_id)).status_code == 403
    assert hospital.get("/v1/emergency-reviews").json()["code"] == "wrong_role"

    # signed by the hospital's key, submitted by the auditor: the signer is not the signed-in auditor
    forged = auditor.post("/v1/emergency-reviews", json=_review(gw, access_id, who=HOSPITAL))
    assert forged.status_code == 422 and forged.json()["code"] == "review_signature_invalid"
    # the verdict changed after signing
    body = _review(gw, access_id)
    body["message"]["verdict"] = "unjustified"
    assert auditor.post("/v1/emergency-reviews", json=body).status_code == 422
    # another note than the one whose hash was signed
    body = _review(gw, access_id, note="signed note")
    body["note"] = "another note"
    assert auditor.post("/v1/emergency-reviews", json=body).json()["code"] == "review_signature_invalid"

    unknown = auditor.post("/v1/emergency-reviews", json=_review(gw, bytes(range(32))))
    assert unknown.status_code == 404 and unknown.json()["code"] == "emergency_access_unknown"
    assert not [r for r in emergency_reviews.every(gw.components.db) if r.review.access_id == access_id]


def test_the_draft_is_the_typed_data_the_auditor_signs(gw: RunningGateway) -> None:
    access_id = _break_glass(gw, 14)
    auditor = gw.login(dev(AUDITOR))
    d = auditor.post(
        "/v1/emergency-reviews/draft", json={"accessId": "0x" + access_id.hex(), "verdict": "justified", "note": "fine"}
    ).json()
    assert d["typedData"]["primaryType"] == "EmergencyReview"
    assert d["message"]["reviewer"] == dev(AUDITOR).address
    assert d["message"]["noteHash"] == _review(gw, access_id, note="fine")["message"]["noteHash"]


def test_a_review_left_unanchored_is_anchored_at_the_next_start(gw: RunningGateway) -> None:
    """A review kept while its anchor failed (chain down) is covered by the anchor the gateway sends at start."""
    access_id = _break_glass(gw, 15)
    body = _review(gw, access_id, note="kept while the chain was down")
    m = body["message"]
    review = EmergencyReview(access_id, m["verdict"], bytes.fromhex(m["noteHash"][2:]), m["reviewer"], m["reviewedAt"])
    c = gw.components
    kept = emergency_reviews.append(
        c.db, gw.ledger.consents.domain(), review, body["note"], bytes.fromhex(body["signature"][2:])
    )
    assert emergency_reviews.pending_anchor(c.db) is not None
    with restarted(gw) as again:  # Components.start anchors what is pending, in the background
        deadline = time.monotonic() + 30
        while emergency_reviews.pending_anchor(again.components.db) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        size, root = again.ledger.access.reviews_anchors(c.gateway_account.address)[-1]
        assert size == kept.idx + 1
        assert root == merkle.root_from_leaf_hashes([r.leaf_hash for r in emergency_reviews.every(again.components.db)])
