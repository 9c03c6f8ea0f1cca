"""Chain helpers for the tests on the session's Hardhat node (see ``tests/conftest.py``): the named dev
accounts, time and block control, and realistic hashes and CIDs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node_client._client import ChainClient


@dataclass(frozen=True)
class Accounts:
    """Named dev accounts of the dev consortium (see ``node_client.deploy.DEV_CONSORTIUM``)."""

    admins: tuple[LocalAccount, ...]
    gateway: LocalAccount
    hospital: LocalAccount  # HOSPITAL | EMERGENCY
    clinic: LocalAccount
    lab: LocalAccount
    pharmacy: LocalAccount
    auditor: LocalAccount
    regulator: LocalAccount
    patients: tuple[LocalAccount, ...]
    outsider: LocalAccount  # funded, never a member


class Chain:
    """Time and block helpers on the test node."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client

    def now(self) -> int:
        return self.client.block_timestamp()

    def advance(self, seconds: int) -> None:
        """Moves the chain's clock forward and mines a block."""
        self.client.w3.provider.make_request("evm_increaseTime", [seconds])
        self.client.w3.provider.make_request("evm_mine", [])

    def mine(self) -> None:
        self.client.w3.provider.make_request("evm_mine", [])


def h(label: str) -> bytes:
    """A realistic 32-byte value derived from ``label``."""
    return hashlib.sha256(label.encode()).digest()


def cid(label: str) -> bytes:
    """A CIDv1 (raw, sha2-256) locator derived from ``label``."""
    return b"\x01\x55\x12\x20" + h(label)
