"""Salted commitments: how free text a person wrote is bound on chain without being guessable from it.

A bare SHA-256 of an emergency reason lets anyone who guesses the wording ("Patient brought in
unresponsive…") confirm it from the chain. The commitment hashes a tag, 32 random bytes (the salt) and
the text; the salt stays off-chain with the text (the *opening*), kept by the gateway and handed to
auditors, who check it against the chain (``hcl audit replay --reasons``).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["REASON_TAG", "SALT_BYTES", "new_salt", "reason_commitment"]

#: domain separation: a reason's commitment never equals any other hash the project puts on chain
REASON_TAG = b"hcl/emergency-reason/v1\x00"
SALT_BYTES = 32


def new_salt() -> bytes:
    """A fresh salt (from the OS's CSPRNG): one per commitment, never reused."""
    return secrets.token_bytes(SALT_BYTES)


def reason_commitment(reason: str, salt: bytes) -> bytes:
    """``SHA-256(REASON_TAG || salt || UTF-8 reason)``: the ``reasonHash`` of ``emergencyAccess``."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt is {SALT_BYTES} bytes, not {len(salt)}")
    return hashlib.sha256(REASON_TAG + salt + reason.encode()).digest()
