"""The directory of the other institutions' gateways: who they are and where they are reached.

A peer is an active member with the GATEWAY role whose off-chain metadata (the manifest's ``members``
entry: name, kind, address, endpoint) hashes to its on-chain ``metadataHash``. A manifest edited to point
a gateway elsewhere therefore drops that gateway from the directory instead of redirecting requests: an
endpoint changes only through governance (a metadata update), like every other member fact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.ledger.member_names import MemberNames
from gateway.storage import read_model
from gateway.storage.db import Database
from node_client.contracts import MemberStatus
from node_client.deploy import metadata_hash
from node_client.vocabulary import Role

__all__ = ["Directory", "Peer"]

log = logging.getLogger("hcl.gateway.federation")


@dataclass(frozen=True, slots=True)
class Peer:
    """Another institution's gateway, as the chain vouches for it."""

    address: str
    name: str
    endpoint: str


class Directory:
    """The peers of the gateway ``self_address``, read from the read model and the manifest on each call."""

    def __init__(self, db: Database, names: MemberNames, self_address: str) -> None:
        self.db = db
        self.names = names
        self.self_address = self_address
        self._warned: set[tuple[str, bytes]] = set()

    def peers(self) -> list[Peer]:
        """Every other active gateway with a verified endpoint, in the order they joined."""
        out = []
        for member in read_model.active_members(self.db):
            if member.address == self.self_address or not member.roles & Role.GATEWAY:
                continue
            peer = self._verified(member.address, member.metadata_hash)
            if peer is not None:
                out.append(peer)
        return out

    def peer(self, address: str) -> Peer | None:
        """The gateway ``address`` if it is an active peer with a verified endpoint."""
        member = read_model.member(self.db, address)
        if member is None or member.status is not MemberStatus.ACTIVE or not member.roles & Role.GATEWAY:
            return None
        return self._verified(address, member.metadata_hash)

    def _verified(self, address: str, onchain_hash: bytes) -> Peer | None:
        meta = self.names.metadata(address)
        if meta is None or not meta.get("endpoint"):
            return None  # a gateway that serves only its own institution (or a manifest that lags)
        if metadata_hash(meta) != onchain_hash:
            if (address, onchain_hash) not in self._warned:
                self._warned.add((address, onchain_hash))
                log.warning(
                    "gateway endpoint ignored: its metadata does not match the chain", extra={"gateway": address}
                )
            return None
        return Peer(address, meta.get("name", ""), meta["endpoint"].rstrip("/"))
