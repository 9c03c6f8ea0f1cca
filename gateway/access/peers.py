"""Who is calling, gateway to gateway: a request signed by another institution's gateway on a member's behalf.

1. the signature over the request (:func:`node_client.federation.verify_request`) is the named gateway's
   and was made within ``MAX_SKEW`` seconds of this gateway's clock;
2. that gateway is an active member with the GATEWAY role (asked of the chain, like any caller);
3. its nonce is new: remembered for as long as the request could still be accepted.

The member it acts for is then checked by the route like any caller (membership, consent); what is
released is sealed to *that member's* key, so the forwarding gateway never reads it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from gateway import errors
from gateway.access.policy import AccessPolicy
from gateway.storage import nonces
from gateway.storage.db import Database
from node_client.federation import MAX_SKEW, SignedRequest, verify_request
from node_client.vocabulary import Role

__all__ = ["PeerVerifier"]


class PeerVerifier:
    """Checks gateway-to-gateway requests (see the module docstring)."""

    def __init__(self, policy: AccessPolicy, db: Database) -> None:
        self.policy = policy
        self.db = db

    def verify(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> SignedRequest:
        """The verified request, or the domain error saying why it is refused (401 or 403)."""
        now = int(time.time())
        try:
            signed = verify_request(method, target, body, headers, now=now)
        except ValueError as exc:
            raise errors.InvalidSignature(f"gateway request refused: {exc}") from None
        self.policy.require_member(signed.gateway, int(Role.GATEWAY))
        with self.db.write() as conn:
            fresh = nonces.remember_peer_nonce(conn, signed.gateway, signed.nonce, signed.timestamp + MAX_SKEW, now)
        if not fresh:
            raise errors.ReplayedNonce("this gateway request was already received")
        return signed
