"""The release-journal entry format (``HCLJ/1``): what a gateway journals for each release in batch mode.

It lives in the node client because two parties must agree on it byte for byte: the gateway that writes
the journal and the auditor that re-derives every Merkle leaf from an export. Neither imports the other.

The Merkle leaf of entry ``i`` is ``SHA-256(0x00 || to_bytes(entry_i))``. ``to_bytes`` is a fixed
binary layout of exactly 151 bytes (no lengths, no text, so no canonicalisation questions; the auditor
re-derives it in any language from the exported fields)::

    offset size  field
         0    4  magic        b"HCLJ"
         4    1  version      0x01
         5   20  requester    address, 20 raw bytes
        25   20  patient      address, 20 raw bytes
        45   32  record_id    bytes32
        77    1  purpose      uint8 (the on-chain purpose code)
        78   32  consent_id   bytes32
       110    1  emergency    0x00 or 0x01 (anything else is rejected)
       111   32  access_hash  bytes32 (the ``accessId`` of the release response)
       143    8  released_at  uint64 big-endian, unix time in milliseconds
       151       (end)

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

__all__ = ["ENTRY_MAGIC", "ENTRY_SIZE", "ENTRY_VERSION", "JournalEntry", "unhex"]

ENTRY_MAGIC = b"HCLJ"
ENTRY_VERSION = 1
_ENTRY = struct.Struct(">4sB20s20s32sB32sB32sQ")
ENTRY_SIZE = _ENTRY.size  # 151

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


@functools.lru_cache(maxsize=16384)
def _checksum(address: str) -> str:
    # EIP-55 costs ~60 us (keccak in Python land); releases involve few distinct addresses
    return to_checksum_address(address)


def _b32(name: str, value: bytes) -> bytes:
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
    released_at: int  # unix ms

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
        if not 0 <= self.released_at < 1 << 64:
            raise ValueError("released_at out of range")

    def to_bytes(self) -> bytes:
        """The canonical 151-byte encoding, version 1 (layout in the module docstring)."""
        return _ENTRY.pack(
            ENTRY_MAGIC,
            ENTRY_VERSION,
            bytes.fromhex(self.requester[2:]),
            bytes.fromhex(self.patient[2:]),
            self.record_id,
            self.purpose,
            self.consent_id,
            1 if self.emergency else 0,
            self.access_hash,
            self.released_at,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> JournalEntry:
        """Inverse of :meth:`to_bytes`; rejects anything that is not exactly a canonical encoding."""
        if len(data) != ENTRY_SIZE:
            raise ValueError(f"an entry is {ENTRY_SIZE} bytes, not {len(data)}")
        magic, version, req, pat, rid, purpose, cid, emergency, ah, at = _ENTRY.unpack(data)
        if magic != ENTRY_MAGIC or version != ENTRY_VERSION:
            raise ValueError("not a version 1 journal entry")
        if emergency not in (0, 1):
            raise ValueError("emergency byte must be 0 or 1")
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
        ):
            object.__setattr__(entry, name, value)
        return entry

    def leaf_hash(self) -> bytes:
        """The Merkle leaf hash of this entry: ``SHA-256(0x00 || to_bytes())``."""
        return leaf_hash(self.to_bytes())

    def to_json(self) -> dict[str, Any]:
        """The entry's fields as in the export (hex strings ``0x``-prefixed)."""
        return {
            "requester": self.requester,
            "patient": self.patient,
            "record_id": "0x" + self.record_id.hex(),
            "purpose": self.purpose,
            "consent_id": "0x" + self.consent_id.hex(),
            "emergency": self.emergency,
            "access_hash": "0x" + self.access_hash.hex(),
            "released_at": self.released_at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> JournalEntry:
        """Inverse of :meth:`to_json` (extra keys are ignored)."""
        return cls(
            requester=obj["requester"],
            patient=obj["patient"],
            record_id=unhex(obj["record_id"]),
            purpose=obj["purpose"],
            consent_id=unhex(obj["consent_id"]),
            emergency=obj["emergency"],
            access_hash=unhex(obj["access_hash"]),
            released_at=obj["released_at"],
        )


def unhex(s: Any) -> bytes:
    """``0x``-prefixed hex → bytes (ValueError otherwise)."""
    if not isinstance(s, str) or not s.startswith("0x"):
        raise ValueError(f"expected a 0x-prefixed hex string, got {s!r}")
    return bytes.fromhex(s[2:])
