"""A release of a record another institution holds: forwarded to the holder's gateway, never opened here.

Data stays with the institution that holds it ("数据不出院"): the holder checks consent for the member,
ledgers the access in its own journal (or ``logAccess``) and seals the record to the member's key; this
gateway checks that the caller is an active member, signs the request on the caller's behalf and passes
the sealed answer through. The holder is the gateway that registered the record (the chain says which).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import errors
from gateway.federation.directory import Peer
from gateway.storage import read_model, record_keys
from gateway.wiring import Components
from node_client.vocabulary import PURPOSES

__all__ = ["holder_elsewhere", "release_elsewhere"]

log = logging.getLogger("hcl.gateway.forwarding")


def holder_elsewhere(c: Components, record_id: bytes) -> Peer | None:
    """The peer gateway holding the record, or ``None`` when this gateway answers for it (it holds it, or
    the read model does not know the record and the local path gives the precise refusal)."""
    row = read_model.record(c.db, record_id)
    if row is None and record_keys.held(c.db, record_id) is None:
        c.indexer.require_complete()  # held elsewhere, perhaps: the directory is the read model's
    if row is None or row.gateway == c.gateway_account.address or record_keys.held(c.db, record_id) is not None:
        return None
    peer = c.federation.directory.peer(row.gateway)
    if peer is None:
        raise errors.HolderUnavailable(
            f"the record is held by the gateway {row.gateway}, which has no endpoint this gateway can verify",
            holder=row.gateway,
        )
    return peer


def release_elsewhere(c: Components, *, peer: Peer, caller: str, record_id: bytes, purpose: int) -> dict[str, Any]:
    """The holder's release to ``caller`` (sealed to the caller's key), after checking the caller here."""
    c.policy.require_member(caller)
    body = c.federation.release(peer, caller, record_id, PURPOSES[purpose].slug)
    if isinstance(body.get("patient"), str) and "category" in body:  # the holder may lack her key: name it here
        body["category"] = c.category_keys.renamed(body["patient"], body["category"])
    c.metrics.forwarded.inc()
    log.info("release forwarded", extra={"record": record_id.hex(), "requester": caller, "holder": peer.address})
    return body
