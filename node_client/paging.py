"""A list's page cursor: an opaque string to clients, a (time, 32-byte id) key to gateways.

A page ends at its last entry; the next page holds the entries strictly beyond its key in the list's
order — (time, access id) descending for the access log, (registeredAt, record id) descending for
discovery, (created, access id) ascending for emergency reasons — so pages neither repeat nor skip
entries while new ones arrive (they land before the first page, or after the last).
"""

from __future__ import annotations

import base64

__all__ = ["PageKey", "decode_cursor", "encode_cursor"]

#: where a page ends: (a time or block number, a 32-byte id); the cursor is this key, encoded
PageKey = tuple[int, bytes]


def encode_cursor(time: int, entry_id: bytes) -> str:
    """The cursor of the page after the entry ``(time, entry_id)`` (``entry_id``: 32 bytes)."""
    raw = time.to_bytes(8, "big") + entry_id
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    """Inverse of :func:`encode_cursor`; ``ValueError`` for anything it did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a page cursor") from exc
    if len(raw) != 40 or encode_cursor(int.from_bytes(raw[:8], "big"), raw[8:]) != cursor:
        raise ValueError("not a page cursor")
    return int.from_bytes(raw[:8], "big"), raw[8:]
