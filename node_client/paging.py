"""The access log's page cursor: an opaque string to clients, (time, access id) to gateways.

A page ends at its last entry; the next page holds the entries strictly below it in the order
(time descending, access id descending), so pages neither repeat nor skip entries while new ones
arrive (they land before the first page).
"""

from __future__ import annotations

import base64

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(time: int, access_id: bytes) -> str:
    """The cursor of the page after the entry ``(time, access_id)``."""
    raw = time.to_bytes(8, "big") + access_id
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, bytes]:
    """Inverse of :func:`encode_cursor`; ``ValueError`` for anything it did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a page cursor") from exc
    if len(raw) != 40 or encode_cursor(int.from_bytes(raw[:8], "big"), raw[8:]) != cursor:
        raise ValueError("not a page cursor")
    return int.from_bytes(raw[:8], "big"), raw[8:]
