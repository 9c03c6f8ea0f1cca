"""The Clique genesis block of a consortium network.

Every fork up to London is active from block 0 and none after it: geth 1.13's Clique refuses Shanghai and
Cancun, and London is the EVM target the contracts are compiled for (``solc-settings.json``), so the same
bytecode runs here, on Hardhat and on Besu QBFT. The initial signers sit in ``extraData`` (32 vanity bytes,
the sorted signer addresses, 65 zero bytes for the seal); member and admin accounts are pre-funded, because
on a consortium chain ether is only gas credit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_utils import to_checksum_address

__all__ = ["FORKS", "clique_genesis"]

#: The fork blocks a London chain sets to 0 (no Shanghai/Cancun: Clique in geth 1.13 stops here).
FORKS: tuple[str, ...] = (
    "homesteadBlock",
    "eip150Block",
    "eip155Block",
    "eip158Block",
    "byzantiumBlock",
    "constantinopleBlock",
    "petersburgBlock",
    "istanbulBlock",
    "muirGlacierBlock",
    "berlinBlock",
    "londonBlock",
    "arrowGlacierBlock",
    "grayGlacierBlock",
)
#: Gas credit of each pre-funded account (1,000,000 ether: never the limit on a consortium chain).
FUNDING_WEI = 10**24
GAS_LIMIT = 30_000_000
#: Clique: votes are reset every ``epoch`` blocks (the default, as in geth's own examples).
EPOCH = 30_000


def clique_genesis(*, chain_id: int, signers: Iterable[str], funded: Iterable[str], period: int = 1) -> dict[str, Any]:
    """The genesis JSON geth's ``init`` takes, with ``signers`` sealing and ``funded`` holding gas credit."""
    sealers = sorted({to_checksum_address(s) for s in signers}, key=lambda a: a.lower())
    extra = "0x" + "00" * 32 + "".join(a[2:].lower() for a in sealers) + "00" * 65
    return {
        "config": {
            "chainId": chain_id,
            **{fork: 0 for fork in FORKS},
            "clique": {"period": period, "epoch": EPOCH},
        },
        "difficulty": "0x1",
        "gasLimit": hex(GAS_LIMIT),
        "extradata": extra,
        "alloc": {to_checksum_address(a)[2:].lower(): {"balance": hex(FUNDING_WEI)} for a in funded},
    }
