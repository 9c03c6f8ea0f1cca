"""The bytes of a record that are hashed and encrypted."""

from __future__ import annotations

import math
from typing import Final

import orjson

__all__ = ["canonical_json"]

_CANONICAL_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes of ``obj``: sorted keys, no insignificant whitespace, UTF-8, no NaN.

    Used for hashing and encryption, so equal content must give equal bytes whatever the key order.
    Numbers use orjson's shortest round-trip form, so ``canonical_json(orjson.loads(canonical_json(x)))``
    equals ``canonical_json(x)``. This is not RFC 8785 (JCS): it is stable for this gateway (pinned
    orjson), which is what the hashes need. Only JSON data is accepted: NaN/Infinity (which orjson would
    silently write as ``null``) raise ValueError; datetimes, dataclasses, non-string keys, integers beyond
    64 bits and strings with lone surrogates raise TypeError rather than getting an implicit encoding.
    """
    out = orjson.dumps(obj, option=_CANONICAL_OPTIONS)
    if b"null" in out and _has_non_finite(obj):  # NaN/Infinity come out as null; real FHIR has no null
        raise ValueError("NaN and Infinity have no JSON representation")
    return out


def _has_non_finite(obj: object) -> bool:
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False
