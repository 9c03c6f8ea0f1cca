"""How record ciphertexts are named and laid out: CIDv1 locators and the local store's directory layout.

The one implementation both sides use: the gateway stores blobs by it, the auditor (``hcl audit replay
--store``) finds them by it. Locators are CIDv1 *bytes* (the form stored on-chain); exactly one format is
accepted, so a locator has exactly one spelling::

    0x01 (CIDv1) | codec: 0x55 raw or 0x70 dag-pb | 0x12 0x20 (sha2-256, 32 bytes) | digest (32)

String form: multibase base32 lower (``"b"`` + RFC 4648 base32, lower case, no padding), which is what
``ipfs add --cid-version 1 --raw-leaves`` prints (``bafkrei…`` for raw blocks).

Local store layout: ``<root>/<next-to-last two characters of the CID string>/<CID string>``, one file per
blob (Kubo's flatfs ``next-to-last/2`` fan-out: every raw sha2-256 CID starts with ``bafkrei``, so the first
characters would put everything in one directory; the very last character carries only 3 data bits, hence
next-to-last; 1024 shards). Paths are made only from validated CIDs re-encoded by :func:`cid_to_str`
(59 characters of ``[a-z2-7]``), so no locator can express ``..`` or ``/``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path

from node_client._exceptions import NodeClientError

__all__ = [
    "CID_SIZE",
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "InvalidCid",
    "cid_from_str",
    "cid_to_str",
    "cid_v1_raw",
    "local_blob_path",
    "sha256_of_cid",
    "shard_of",
    "validate_cid",
]

CID_VERSION = 0x01
CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
MH_SHA2_256 = 0x12
SHA256_SIZE = 32
_CID_PREFIX_RAW = bytes([CID_VERSION, CODEC_RAW, MH_SHA2_256, SHA256_SIZE])
CID_SIZE = len(_CID_PREFIX_RAW) + SHA256_SIZE
_CID_STR_LEN = 1 + (CID_SIZE * 8 + 4) // 5  # "b" + 58 base32 chars
_CID_STR_RE = re.compile(f"b[a-z2-7]{{{_CID_STR_LEN - 1}}}")


class InvalidCid(NodeClientError, ValueError):
    """Not a CID of the one accepted format (see the module doc)."""


def cid_v1_raw(data: bytes) -> bytes:
    """CIDv1 bytes of ``data`` as a single raw block: ``01 55 12 20 || sha256(data)``."""
    return _CID_PREFIX_RAW + hashlib.sha256(data).digest()


def validate_cid(cid: object) -> bytes:
    """``cid`` as ``bytes`` if it is a CID of the accepted format, else :class:`InvalidCid`."""
    if not isinstance(cid, (bytes, bytearray, memoryview)):
        raise InvalidCid(f"a locator must be CID bytes, not {type(cid).__name__}")
    raw = bytes(cid)
    if len(raw) != CID_SIZE:
        raise InvalidCid(f"a CID must be {CID_SIZE} bytes (CIDv1, sha2-256), got {len(raw)}")
    if raw[0] != CID_VERSION:
        raise InvalidCid("only CIDv1 is accepted")
    if raw[1] not in (CODEC_RAW, CODEC_DAG_PB):
        raise InvalidCid(f"unsupported CID codec 0x{raw[1]:02x} (raw 0x55 or dag-pb 0x70 only)")
    if raw[2] != MH_SHA2_256 or raw[3] != SHA256_SIZE:
        raise InvalidCid("only sha2-256 multihashes with a 32-byte digest are accepted")
    return raw


def cid_to_str(cid: bytes) -> str:
    """Multibase base32-lower string of a CID (``b`` + RFC 4648 base32, lower case, unpadded)."""
    raw = validate_cid(cid)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def cid_from_str(s: str) -> bytes:
    """Parses the string form strictly: exact length, ``b`` prefix, lower-case base32 alphabet, canonical
    (zero) trailing bits, then :func:`validate_cid`. Everything else (``Qm…`` CIDv0, upper case, padding,
    paths like ``../x`` or ``/ipfs/…``) is :class:`InvalidCid`."""
    if not isinstance(s, str):
        raise InvalidCid(f"a CID string must be str, not {type(s).__name__}")
    if _CID_STR_RE.fullmatch(s) is None:
        raise InvalidCid("not a CIDv1 base32-lower string of the accepted format")
    body = s[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise InvalidCid("invalid base32 in CID string") from None
    cid = validate_cid(raw)
    if cid_to_str(cid) != s:  # non-zero trailing bits: a second spelling of the same CID
        raise InvalidCid("non-canonical CID string")
    return cid


def sha256_of_cid(cid: bytes) -> bytes:
    """The 32-byte sha2-256 digest inside the CID.

    For a raw CID this is ``sha256(blob)``; for a dag-pb CID it is the hash of the DAG's root node, *not*
    of the file content (the on-chain ``contentHash`` covers the content).
    """
    return validate_cid(cid)[len(_CID_PREFIX_RAW) :]


def shard_of(cid_str: str) -> str:
    """The local store's shard directory of a CID string: its next-to-last two characters."""
    return cid_str[-3:-1]


def local_blob_path(root: Path, cid: bytes) -> Path:
    """Where the local store at ``root`` keeps the blob of ``cid`` (:class:`InvalidCid` if it is none)."""
    name = cid_to_str(cid)
    return root / shard_of(name) / name
