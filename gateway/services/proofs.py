"""Batch-mode proofs: a journal entry with what checks it without trusting this gateway.

The entry's bytes, its RFC 6962 leaf hash and — once a root covering it is anchored — the anchor (root,
tree size, transaction) and the inclusion proof that :func:`node_client.merkle.verify_inclusion` turns
back into that root. Served to the requester, the patient or an auditor (``/v1/accesses/{i}/proof``) and,
for a patient's history, to the patient's own gateway (``/v1/federation/patients/{p}/accesses``).
"""

from __future__ import annotations

from typing import Any

from gateway.wiring import Components
from node_client.journal_entry import JournalEntry
from node_client.vocabulary import PURPOSES

__all__ = ["batch_proof"]


def batch_proof(c: Components, idx: int, entry: JournalEntry) -> dict[str, Any]:
    """Journal entry ``idx`` with its leaf hash and, when anchored (``anchored``), its anchor and proof."""
    assert c.journal is not None  # batch mode
    body: dict[str, Any] = {
        "mode": "batch",
        "journalIndex": idx,
        "entry": "0x" + entry.to_bytes().hex(),
        "leafHash": "0x" + c.journal.leaf_hash(idx).hex(),
        "accessId": "0x" + entry.access_hash.hex(),
        "requester": entry.requester,
        "patient": entry.patient,
        "recordId": "0x" + entry.record_id.hex(),
        "purpose": PURPOSES[entry.purpose].slug,
        "emergency": entry.emergency,
        "releasedAt": entry.released_at,
        "hashes": "RFC 6962: leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right)",
        "anchored": False,
    }
    anchor = c.journal.last_anchor()
    if anchor is None or anchor.tree_size <= idx:
        return body
    body["anchored"] = True
    body["anchor"] = {
        "treeSize": anchor.tree_size,
        "root": "0x" + anchor.root.hex(),
        "txHash": anchor.tx_hash,
        "blockNumber": anchor.block_number,
        "contract": c.ledger.access.address,
        "gateway": c.gateway_account.address,
    }
    body["inclusionProof"] = ["0x" + h.hex() for h in c.journal.inclusion_proof(idx, anchor.tree_size)]
    return body
