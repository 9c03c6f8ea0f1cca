"""The contracts' ABIs, shipped with the package in ``node_client/abi/``.

They are generated from the compiler output (``hcl dev gen-abi``) and a test fails when they drift from
the sources, so the client can decode calls, events and errors without a compiler at run time.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Any

import orjson

__all__ = ["CONTRACT_NAMES", "abi_hash", "all_abis", "load_abi"]

#: The deployable contracts, in deployment order.
CONTRACT_NAMES: tuple[str, ...] = ("MemberRegistry", "ConsentRegistry", "RecordRegistry", "AccessLedger")


@functools.cache
def load_abi(name: str) -> list[dict[str, Any]]:
    """The ABI of contract ``name`` (one of :data:`CONTRACT_NAMES`)."""
    if name not in CONTRACT_NAMES:
        raise KeyError(f"unknown contract {name!r}")
    data = resources.files("node_client.abi").joinpath(f"{name}.json").read_bytes()
    abi = orjson.loads(data)
    if not isinstance(abi, list):
        raise ValueError(f"the packaged ABI of {name} is not a JSON list")
    return abi


def all_abis() -> dict[str, list[dict[str, Any]]]:
    """Every packaged ABI by contract name."""
    return {name: load_abi(name) for name in CONTRACT_NAMES}


def abi_hash(abi: list[dict[str, Any]]) -> str:
    """A stable SHA-256 of an ABI (for deployment manifests: which interface was deployed)."""
    return "0x" + hashlib.sha256(orjson.dumps(abi, option=orjson.OPT_SORT_KEYS)).hexdigest()
