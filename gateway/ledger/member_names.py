"""Institutions' display names, following the chain's member events.

Names stay off-chain (on-chain there is only ``metadataHash``); they come from the deployment manifest's
``members``, which onboarding appends to (``demo seed`` does, after the governance transaction). The
indexer tells :class:`MemberNames` about every ``MemberAdded`` it applies; while such a member has no
name yet, each poll re-reads the manifest if the file changed, so a member added at run time gets its
name without a gateway restart (even when the manifest is written after the event is mined).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson
from eth_utils import to_checksum_address

from node_client.deploy import OPTIONAL_METADATA

__all__ = ["MemberNames", "display_language", "negotiate"]

log = logging.getLogger("hcl.gateway.members")

#: The language an API request asked for names in (``Accept-Language``: zh-CN or en, set per request by the
#: app's middleware); "" gives each member's ``name``. The portal passes its page's language explicitly.
display_language: ContextVar[str] = ContextVar("hcl_display_language", default="")


def negotiate(accept_language: str) -> str:
    """zh-CN or en, whichever ``accept_language`` prefers (q-values honoured), else ""."""
    best, best_q = "", 0.0
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            continue
        lang = {"zh": "zh-CN", "en": "en"}.get(tag.strip().lower().split("-")[0], "")
        if lang and q > best_q:
            best, best_q = lang, q
    return best


def _names(members: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {to_checksum_address(m["address"]): str(m.get("name", "")) for m in members if m.get("name")}


def _metadata(members: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """address → the off-chain metadata whose hash is on chain (``endpoint``, ``name_zh`` and ``name_en``
    only for a member that has them, as :attr:`node_client.deploy.MemberSpec.metadata` hashes it)."""
    out: dict[str, dict[str, str]] = {}
    for m in members:
        address = to_checksum_address(m["address"])
        meta = {"name": str(m.get("name", "")), "kind": str(m.get("kind", "")), "address": address}
        for key in OPTIONAL_METADATA:
            if m.get(key):
                meta[key] = str(m[key])
        out[address] = meta
    return out


#: which metadata key holds a member's name in each portal language
NAME_KEYS = {"zh-CN": "name_zh", "zh": "name_zh", "en": "name_en"}


class MemberNames(Mapping[str, str]):
    """address → name; a read-only mapping to readers, refreshed by the indexer thread."""

    def __init__(self, manifest_path: Path | None, members: Iterable[Mapping[str, Any]] = ()) -> None:
        self.path = manifest_path
        members = list(members)
        self._names = _names(members)  # replaced whole, never mutated: readers need no lock
        self._metadata = _metadata(members)
        self._stamp = self._stat()
        self._unnamed: set[str] = set()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path) if self.path is not None else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None

    # ---------------------------------------------------------------- Mapping

    def __getitem__(self, address: str) -> str:
        lang = display_language.get()
        return self._names[address] if not lang or address not in self._names else self.name(address, lang)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    # ---------------------------------------------------------------- following the chain

    def metadata(self, address: str) -> dict[str, str] | None:
        """The member's off-chain metadata as the manifest has it (to be checked against its on-chain hash)."""
        return self._metadata.get(address)

    def name(self, address: str, lang: str) -> str:
        """The member's name in ``lang`` (zh-CN or en), else its ``name``; "" for an unnamed address."""
        meta = self._metadata.get(address)
        if meta is None:
            return self._names.get(address, "")
        return meta.get(NAME_KEYS.get(lang, ""), "") or meta["name"]

    def in_language(self, lang: str) -> dict[str, str]:
        """address → name in ``lang``: for code that takes a plain mapping (the health-code summary)."""
        return {address: self.name(address, lang) for address in self._names}

    def member_added(self, address: str) -> None:
        """A ``MemberAdded`` was applied: look for this member's name until one appears."""
        if address not in self._names:
            self._unnamed.add(address)

    def refresh(self) -> bool:
        """Re-reads the manifest if a member lacks a name and the file changed; True if names changed."""
        if not self._unnamed or self.path is None:
            return False
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            members = list(orjson.loads(self.path.read_bytes()).get("members", []))
            names, metadata = _names(members), _metadata(members)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # half-written or edited by hand: next poll
            log.warning("manifest not readable for member names: %s", exc)
            return False
        self._stamp = stamp
        changed = names != self._names
        self._names, self._metadata = names, metadata
        self._unnamed -= names.keys()
        return changed
