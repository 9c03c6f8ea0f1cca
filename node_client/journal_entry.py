"""The release-journal entry format (``HCLJ/2``, reading ``HCLJ/1`` too): what a gateway journals for
each release in batch mode.

It lives in the node client because two parties must agree on it byte for byte: the gateway that writes
the journal and the auditor that re-derives every Merkle leaf from an export. Neither imports the other.

The Merkle leaf of entry ``i`` is ``SHA-256(0x00 || to_bytes(entry_i))``. ``to_bytes`` is a fixed
binary layout (no lengths, no text): 199 bytes in version 2, which the gateway writes, and the 151-byte
prefix-compatible version 1 of journals written before it (the first 151 bytes of both are the same
fields; version 1 lacks the state block). The byte-level table and what each field claims are in
docs/audit.md ("The journal entry").

Version 2 adds the chain state the decision used: ``state_block`` (number) and ``state_block_hash``,
the block whose state (members, records, consents) the gateway's read model or its pinned ``eth_call``
answered from, and ``state_seen_at`` (unix ms), a moment at which the chain's head was at most that
block. ``released_at`` is the moment of the decision. The gateway never decides on a state seen longer
ago than its staleness bound, so ``released_at - state_seen_at`` stays below it.

Addresses are stored as bytes, so letter case is not part of the entry: entries are normalised to
the EIP-55 checksummed form when built and when decoded.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from node_client.merkle import leaf_hash

__all__ = ["ENTRY_MAGIC", "ENTRY_SIZE", "ENTRY_SIZES", "ENTRY_VERSION", "JournalEntry", "unhex"]

ENTRY_MAGIC = b"HCLJ"
#: the version the gateway writes (entries without a state block are version 1)
ENTRY_VERSION = 2
_ENTRY_V1 = struct.Struct(">4sB20s20s32sB32sB32sQ")
_ENTRY_V2 = struct.Struct(">4sB20s20s32sB32sB32sQQ32sQ")
#: size of each version's encoding
ENTRY_SIZES = {1: _ENTRY_V1.size, 2: _ENTRY_V2.size}  # 151, 199
#: size of a version 1 entry (kept under its old name; see ENTRY_SIZES)
ENTRY_SIZE = _ENTRY_V1.size
_U64 = 1 << 64

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


@functools.lru_cache(maxsize=16384)
def _checksum(address: str) -> str:
    # EIP-55 costs ~60 us (keccak in Python land); releases involve few distinct addresses
    return to_checksum_address(address)


def _b32(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One release, as journaled. Validated and normalised on construction (see module docstring)."""

    requester: str
    patient: str
    record_id: bytes
    purpose: int
    consent_id: bytes
    emergency: bool
    access_hash: bytes
    released_at: int  # unix ms, the moment of the decision
    # version 2: the chain state the decision used (all three, or none for a version 1 entry)
    state_block: int | None = None
    state_block_hash: bytes | None = None
    state_seen_at: int | None = None  # unix ms at which the chain's head was at most state_block

    def __post_init__(self) -> None:
        for name in ("requester", "patient"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
                raise ValueError(f"{name} must be a 0x-prefixed 20-byte hex address")
            object.__setattr__(self, name, _checksum(value))
        for name in ("record_id", "consent_id", "access_hash"):
            object.__setattr__(self, name, _b32(name, getattr(self, name)))
        if isinstance(self.purpose, bool) or not isinstance(self.purpose, int) or not 0 <= self.purpose <= 255:
            raise ValueError("purpose must be an integer 0..255")
        if not isinstance(self.emergency, bool):
            raise ValueError("emergency must be a bool")
        if isinstance(self.released_at, bool) or not isinstance(self.released_at, int):
            raise ValueError("released_at must be an integer (unix ms)")
        if not 0 <= self.released_at < _U64:
            raise ValueError("released_at out of range")
        state = (self.state_block, self.state_block_hash, self.state_seen_at)
        if any(v is not None for v in state):
            for name in ("state_block", "state_seen_at"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
                    raise ValueError(f"{name} must be an integer 0..2**64-1")
            object.__setattr__(self, "state_block_hash", _b32("state_block_hash", self.state_block_hash))

    @property
    def version(self) -> int:
        """2 when the entry names the state its decision used, else 1."""
        return 1 if self.state_block is None else 2

    def to_bytes(self) -> bytes:
        """The canonical encoding: 199 bytes (version 2) or 151 (version 1, no state block)."""
        head = (
            ENTRY_MAGIC,
            self.version,
            bytes.fromhex(self.requester[2:]),
            bytes.fromhex(self.patient[2:]),
            self.record_id,
            self.purpose,
            self.consent_id,
            1 if self.emergency else 0,
            self.access_hash,
            self.released_at,
        )
        if self.state_block is None:
            return _ENTRY_V1.pack(*head)
        return _ENTRY_V2.pack(*head, self.state_block, self.state_block_hash, self.state_seen_at)

    @classmethod
    def from_bytes(cls, data: bytes) -> JournalEntry:
        """Inverse of :meth:`to_bytes`; rejects anything that is not exactly a canonical encoding."""
        version = data[4] if len(data) > 4 else None
        if data[:4] != ENTRY_MAGIC or version not in ENTRY_SIZES:
            raise ValueError("not a version 1 or 2 journal entry")
        if len(data) != ENTRY_SIZES[version]:
            raise ValueError(f"a version {version} entry is {ENTRY_SIZES[version]} bytes, not {len(data)}")
        fields = (_ENTRY_V1 if version == 1 else _ENTRY_V2).unpack(data)
        _magic, _version, req, pat, rid, purpose, cid, emergency, ah, at = fields[:10]
        if emergency not in (0, 1):
            raise ValueError("emergency byte must be 0 or 1")
        state = fields[10:] if version == 2 else (None, None, None)
        # every field is valid by construction of the layout: skip __post_init__ (5x faster; the
        # read paths decode whole journals)
        entry = object.__new__(cls)
        for name, value in (
            ("requester", _checksum("0x" + req.hex())),
            ("patient", _checksum("0x" + pat.hex())),
            ("record_id", rid),
            ("purpose", purpose),
            ("consent_id", cid),
            ("emergency", emergency == 1),
            ("access_hash", ah),
            ("released_at", at),
            ("state_block", state[0]),
            ("state_block_hash", state[1]),
            ("state_seen_at", state[2]),
        ):
            object.__setattr__(entry, name, value)
        return entry

    def leaf_hash(self) -> bytes:
        """The Merkle leaf hash of this entry: ``SHA-256(0x00 || to_bytes())``."""
        return leaf_hash(self.to_bytes())

    def to_json(self) -> dict[str, Any]:
        """The entry's fields as in the export (hex strings ``0x``-prefixed; the state fields only in
        version 2)."""
        out: dict[str, Any] = {
            "requester": self.requester,
            "patient": self.patient,
            "record_id": "0x" + self.record_id.hex(),
            "purpose": self.purpose,
            "consent_id": "0x" + self.consent_id.hex(),
            "emergency": self.emergency,
            "access_hash": "0x" + self.access_hash.hex(),
            "released_at": self.released_at,
        }
        if self.state_block is not None:
            assert self.state_block_hash is not None
            out["state_block"] = self.state_block
            out["state_block_hash"] = "0x" + self.state_block_hash.hex()
            out["state_seen_at"] = self.state_seen_at
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> JournalEntry:
        """Inverse of :meth:`to_json` (extra keys are ignored; ``state_block`` present means version 2)."""
        v2 = "state_block" in obj
        return cls(
            requester=obj["requester"],
            patient=obj["patient"],
            record_id=unhex(obj["record_id"]),
            purpose=obj["purpose"],
            consent_id=unhex(obj["consent_id"]),
            emergency=obj["emergency"],
            access_hash=unhex(obj["access_hash"]),
            released_at=obj["released_at"],
            state_block=obj["state_block"] if v2 else None,
            state_block_hash=unhex(obj["state_block_hash"]) if v2 else None,
            state_seen_at=obj["state_seen_at"] if v2 else None,
        )


def unhex(s: Any) -> bytes:
    """``0x``-prefixed hex → bytes (ValueError otherwise)."""
    if not isinstance(s, str) or not s.startswith("0x"):
        raise ValueError(f"expected a 0x-prefixed hex string, got {s!r}")
    return bytes.fromhex(s[2:])
