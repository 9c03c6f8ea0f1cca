"""Loading the gateway's exported release journal: every hash re-derived from the entry fields.

The entry layouts (``HCLJ/1``, 151 bytes; ``HCLJ/2``) are re-implemented here on purpose, so the auditor
does not import gateway code it is meant to check (``node_client.journal_entry`` is the writer's side; the
journal test suite checks both agree).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson
from eth_utils import to_checksum_address

from node_client.audit.model import AccessRow, Anomaly, hex0x, unhex

__all__ = ["ZERO", "Entry", "FieldCodec", "Loaded", "load_journal"]

ZERO = b"\x00" * 32
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_ENTRY_STRUCT = struct.Struct(">4sB20s20s32sB32sB32sQ")  # HCLJ/1, see node_client.journal_entry
_ENTRY_STRUCT_V2 = struct.Struct(">4sB20s20s32sB32sB32sQQ32sQ")  # HCLJ/2 (docs/audit.md)

#: (requester, patient, record_id, purpose, consent_id, emergency, access_hash, released_at, state_block,
#: state_block_hash, state_seen_at); the last three are ``None`` in version 1
Fields = tuple[str, str, bytes, int, bytes, bool, bytes, int, int | None, bytes | None, int | None]


@dataclass(slots=True)
class Entry:
    position: int  # line order among entries in the file
    idx: Any  # as written
    requester: str
    patient: str
    record_id: bytes
    purpose: int
    consent_id: bytes
    emergency: bool
    access_hash: bytes
    released_at: int
    state_block: int | None  # version 2 (None: a version 1 entry)
    state_hash: bytes | None
    seen_at: int | None
    leaf: bytes

    def evidence(self, row: AccessRow) -> dict[str, Any]:
        """What a person needs to check a finding about this entry (``row`` is its verified access row)."""
        ev = {
            "entry_index": self.position,
            "released_at": self.released_at,
            "anchor_block": row.block,
            "anchor_tx_hash": row.tx_hash,
            "requester": self.requester,
            "patient": self.patient,
            "record_id": row.record_id,
            "purpose": self.purpose,
            "leaf_hash": hex0x(self.leaf),
        }
        if self.state_block is not None:
            ev.update(state_block=self.state_block, state_block_hash=hex0x(self.state_hash), state_seen_at=self.seen_at)
        return ev


class FieldCodec:
    """Re-encodes an exported entry's fields into its ``HCLJ/1`` (or ``HCLJ/2``) bytes, fast.

    Same rules as :meth:`JournalEntry.from_json` + :meth:`JournalEntry.to_bytes` (the journal test
    suite checks both agree), but a journal names few distinct addresses, records and consents, so
    their validated forms are cached by the exact string written: the per-entry cost drops to one
    ``struct.pack`` and the one value that is unique per entry (``access_hash``). A million entries
    then re-encode in ~2 s instead of ~25 s.
    """

    __slots__ = ("_addresses", "_b32")

    def __init__(self) -> None:
        self._addresses: dict[Any, tuple[bytes, str]] = {}
        self._b32: dict[Any, bytes] = {}

    def address(self, value: Any) -> tuple[bytes, str]:
        hit = self._addresses.get(value)
        if hit is None:
            if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
                raise ValueError(f"expected a 0x-prefixed 20-byte hex address, got {value!r}")
            hit = self._addresses[value] = (bytes.fromhex(value[2:]), str(to_checksum_address(value)))
        return hit

    def b32(self, value: Any) -> bytes:
        hit = self._b32.get(value)
        if hit is None:
            hit = unhex(value, 32)
            if len(self._b32) < 1_000_000:
                self._b32[value] = hit
        return hit

    def encode(self, obj: Mapping[str, Any]) -> tuple[bytes, Fields]:
        """(encoding, :data:`Fields`); version 2 when the object has ``state_block``; raises KeyError or
        ValueError for a malformed entry."""
        req_b, requester = self.address(obj["requester"])
        pat_b, patient = self.address(obj["patient"])
        record_id = self.b32(obj["record_id"])
        consent_id = self.b32(obj["consent_id"])
        access_hash = unhex(obj["access_hash"], 32)
        purpose = obj["purpose"]
        emergency = obj["emergency"]
        released_at = obj["released_at"]
        if type(purpose) is not int or not 0 <= purpose <= 255:
            raise ValueError("purpose must be an integer 0..255")
        if type(emergency) is not bool:
            raise ValueError("emergency must be a bool")
        if type(released_at) is not int or not 0 <= released_at < 1 << 64:
            raise ValueError("released_at must be an integer (unix ms) in range")
        v1 = (req_b, pat_b, record_id, purpose, consent_id, emergency, access_hash, released_at)
        common = (requester, patient, record_id, purpose, consent_id, emergency, access_hash, released_at)
        if "state_block" not in obj:
            return _ENTRY_STRUCT.pack(b"HCLJ", 1, *v1), (*common, None, None, None)
        state_block = obj["state_block"]
        state_hash = self.b32(obj["state_block_hash"])
        seen_at = obj["state_seen_at"]
        if type(state_block) is not int or not 0 <= state_block < 1 << 64:
            raise ValueError("state_block must be an integer in range")
        if type(seen_at) is not int or not 0 <= seen_at < 1 << 64:
            raise ValueError("state_seen_at must be an integer (unix ms) in range")
        data = _ENTRY_STRUCT_V2.pack(b"HCLJ", 2, *v1, state_block, state_hash, seen_at)
        return data, (*common, state_block, state_hash, seen_at)


class _Links:
    """Checks each entry line against the previous *given* chain hash, so one edited row yields one finding,
    not one per following row; keeps the recomputed chain head."""

    __slots__ = ("chain", "codec", "prev_given", "problems")

    def __init__(self, chain_head: bytes | None, problems: list[Anomaly]) -> None:
        self.prev_given = self.chain = ZERO if chain_head is None else chain_head
        self.codec = FieldCodec()
        self.problems = problems

    def entry(self, obj: dict[str, Any], lineno: int, position: int) -> Entry | None:
        try:
            data, fields = self.codec.encode(obj)
        except (KeyError, ValueError, TypeError) as exc:
            evidence = {"line": lineno, "entry_index": obj.get("idx")}
            self.problems.append(
                Anomaly("journal_chain_broken", f"entry on line {lineno} is malformed: {exc}", evidence)
            )
            return None
        sha256 = hashlib.sha256
        leaf = sha256(b"\x00" + data).digest()
        self.chain = sha256(self.chain + leaf).digest()
        given = obj.get("chain_hash")
        try:
            given_b = bytes.fromhex(given[2:]) if type(given) is str and given[:2] == "0x" and len(given) == 66 else b""
        except ValueError:
            given_b = b""
        encoded = obj.get("encoded")
        leaf_given = obj.get("leaf_hash")
        expected = sha256(self.prev_given + leaf).digest()
        if (
            obj.get("idx") != position
            or type(encoded) is not str
            or encoded[2:] != data.hex()
            or encoded[:2] != "0x"
            or type(leaf_given) is not str
            or leaf_given[2:] != leaf.hex()
            or given_b != expected
        ):
            self.problems.append(_broken_link(obj, lineno, position, data, leaf, given_b == expected))
        self.prev_given = given_b or self.chain
        return Entry(position, obj.get("idx"), *fields, leaf)


def _broken_link(obj: Mapping[str, Any], lineno: int, position: int, data: bytes, leaf: bytes, linked: bool) -> Anomaly:
    reasons: list[str] = []
    if obj.get("idx") != position:
        reasons.append(f"index {obj.get('idx')!r} at position {position}")
    if obj.get("encoded") != "0x" + data.hex():
        reasons.append("encoded bytes differ from the fields")
    if obj.get("leaf_hash") != "0x" + leaf.hex():
        reasons.append("leaf hash differs from the fields")
    if not linked:
        reasons.append("chain hash does not follow from the previous row")
    evidence = {
        "entry_index": position,
        "idx_written": obj.get("idx"),
        "line": lineno,
        "leaf_hash": "0x" + leaf.hex(),
        "chain_hash_written": obj.get("chain_hash"),
    }
    return Anomaly("journal_chain_broken", f"entry at position {position}: " + "; ".join(reasons), evidence)


def _skip_checkpointed(f: IO[bytes], skip: int, chain_head: bytes | None) -> Anomaly | None:
    """Passes over the ``skip`` entries a checkpoint covers (they follow the header) unparsed, except the
    last one, whose written chain hash must be ``chain_head``: the export must extend the checkpointed
    journal."""
    skipped = 0
    for _ in range(skip - 1):
        if not f.readline():
            break
        skipped += 1
    last = f.readline()
    skipped += 1 if last else 0
    ok = False
    try:
        prior = orjson.loads(last)
        ok = prior.get("idx") == skip - 1 and prior.get("chain_hash") == hex0x(chain_head)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if ok and skipped == skip:
        return None
    evidence = {"entry_index": skip - 1, "checkpoint_chain_head": hex0x(chain_head)}
    return Anomaly("journal_chain_broken", "the export does not extend the checkpointed journal", evidence)


def _header_problems(header: Mapping[str, Any], size: int, chain: bytes) -> list[Anomaly]:
    if not header:
        return [Anomaly("journal_chain_broken", "export has no header", {})]
    problems = []
    if header.get("size") != size:
        evidence = {"header_size": header.get("size"), "entries": size}
        problems.append(
            Anomaly("journal_chain_broken", f"header says {header.get('size')} entries, file has {size}", evidence)
        )
    if header.get("chain_head") != "0x" + chain.hex():
        evidence = {"header_chain_head": header.get("chain_head"), "recomputed": "0x" + chain.hex()}
        problems.append(
            Anomaly("journal_chain_broken", "header chain head differs from the recomputed chain", evidence)
        )
    return problems


class Loaded(NamedTuple):
    """An export as read: its entries (after the skipped ones), header, problems, and its anchor lines
    (the gateway's own record of its anchors: a hint to which gateway's journal it is, never proof)."""

    entries: list[Entry]
    header: dict[str, Any]
    problems: list[Anomaly]
    anchors: list[dict[str, Any]]


def load_journal(path: Path, *, skip: int = 0, chain_head: bytes | None = None) -> Loaded:
    """Tolerant reader of an export: unlike ``read_export`` it does not stop at the first problem but
    localizes every broken link (each link is checked against the previous *given* chain hash, so one
    edited row yields one finding, not one per following row).

    ``skip`` entries (a checkpoint's position) are passed over without parsing, except the last one,
    whose written chain hash must be ``chain_head``: the export must extend the checkpointed journal.
    """
    entries: list[Entry] = []
    problems: list[Anomaly] = []
    header: dict[str, Any] = {}
    anchors: list[dict[str, Any]] = []
    links = _Links(chain_head, problems)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if line.strip():
                    problems.append(
                        Anomaly("journal_chain_broken", f"line {lineno} is not JSON: {exc}", {"line": lineno})
                    )
                continue
            kind = obj.get("type") if type(obj) is dict else None
            if kind == "entry":
                entry = links.entry(obj, lineno, len(entries) + skip)
                if entry is not None:
                    entries.append(entry)
            elif kind == "header":
                header = obj
                gap = _skip_checkpointed(f, skip, chain_head) if skip else None
                if gap is not None:
                    problems.append(gap)
            elif kind == "anchor":  # the chain's events are authoritative; these only hint at the gateway
                anchors.append(obj)
    problems.extend(_header_problems(header, len(entries) + skip, links.chain))
    return Loaded(entries, header, problems, anchors)
