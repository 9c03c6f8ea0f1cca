"""The auditor: replay the ledger from its deploy block and prove (or refute) every release.

Why this module exists: a regulator or a compliance officer must be able to take the chain and the
gateway's exported release journal, trust *nothing else*, and decide whether every release of a
patient's data was authorized at that moment. So :func:`replay` uses only

* the chain's events (:func:`node_client.events.read_events` over all four contracts of the manifest,
  from ``deploy_block``) and the timestamps of the blocks they are in,
* the optional JSON Lines export of the gateway's journal (``hcl gateway export-journal``), whose
  every hash is re-derived here from the entry fields (the 151-byte layout is re-implemented below on
  purpose, so the auditor does not import gateway code it is meant to check),
* the packaged ABIs,

and never a gateway's database or internals. State (members, guardians, opt-outs, consents,
emergency windows, records) is rebuilt in Python in event order, mirroring ``ConsentRegistry.check``
and ``AccessLedger.logAccess`` rule for rule.

When a journal entry is judged (docs/audit.md, "Judging a batch entry")
-----------------------------------------------------------------------
A version 2 entry names the block whose state its decision used (``state_block``, checked against the
chain's hash). It is judged against the state as of that block, at that block's timestamp — no clock
is compared with another. Then the auditor looks for the first later block that would have changed the
verdict (revocation, expiry, suspension, retraction...): none before the block anchoring the entry
means the access was authorized whenever between the two it happened. One before it is a race the
chain alone cannot order; the journal's own record of when the gateway saw which head (``released_at``,
``state_seen_at`` of all entries, in the gateway's clock) settles it when it can: ``ok`` (another entry
shows the head was still before the change after this decision), ``stale_decision`` (an error: another
entry shows the change in use before this decision's state was seen, or the state was older than the
staleness bound), else ``access_in_staleness_window`` (for review).

A version 1 entry (journals written before version 2) has no block: it is judged, as before, at
``released_at // 1000 + clock_skew`` against the state of the latest block not after that time, capped
by its anchor's block; ``clock_skew`` is measured from the anchors of version 1 entries. On chains whose
clock runs ahead of wall time (Hardhat under load) that judgment can be wrong either way.
"""

from __future__ import annotations

import base64
import bisect
import csv
import hashlib
import html
import re
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import requests
from eth_utils import to_checksum_address

from node_client._client import ChainClient
from node_client.deploy import Manifest
from node_client.events import DEFAULT_PAGE_SIZE, EventRecord, read_events
from node_client.merkle import MerkleTree, verify_consistency, verify_inclusion
from node_client.vocabulary import CATEGORIES, PURPOSES, Purpose, Role

__all__ = [
    "ANOMALY_KINDS",
    "CHECKPOINT_FORMAT",
    "DETAILS",
    "REVIEW_KINDS",
    "AccessRow",
    "Anomaly",
    "AuditReport",
    "Progress",
    "read_checkpoint",
    "replay",
    "write_checkpoint",
    "write_outputs",
]

#: Every anomaly kind the auditor reports.
ANOMALY_KINDS: tuple[str, ...] = (
    "entry_without_valid_consent",
    "access_by_non_member",
    "access_by_suspended_member",
    "access_after_revocation",
    "access_after_expiry",
    "emergency_access",
    "access_in_staleness_window",
    "stale_decision",
    "entry_state_block_invalid",
    "record_mismatch",
    "journal_chain_broken",
    "journal_entry_unanchored",
    "anchor_not_backed_by_journal",
    "anchor_inconsistent",
    "journal_root_mismatch",
    "access_logged_by_non_gateway",
    "anchor_by_non_gateway",
    "blob_hash_mismatch",
    "blob_missing",
    "release_without_ledger_entry",
)
#: Kinds that are listed for a person to review but are not errors (break-glass access is legitimate; a
#: release in the gateway's staleness window after a change is within what it promises, but the journal
#: cannot tell whether it came before the change).
REVIEW_KINDS: frozenset[str] = frozenset({"emergency_access", "access_in_staleness_window"})

#: ``progress(phase, done, total)``; phase is ``"events"`` (blocks), ``"timestamps"`` or ``"verify"``.
Progress = Callable[[str, int, int], None]

# mirrors contracts/libraries/Vocabulary.sol and ConsentRegistry.sol
_PROVIDER_ROLES = 0x0F
_ROLE_EMERGENCY = int(Role.EMERGENCY)
_ROLE_GATEWAY = int(Role.GATEWAY)
_PURPOSE_EMERGENCY = int(Purpose.EMERGENCY)
_CATEGORY_COUNT = len(CATEGORIES)
_PURPOSE_COUNT = len(PURPOSES)
_EMERGENCY_WINDOW = 4 * 3600
_ACTIVE, _SUSPENDED, _REMOVED = 1, 2, 3
_C_ACTIVE, _C_REVOKED = 1, 2
_R_ACTIVE, _R_AMENDED, _R_RETRACTED = 1, 2, 3

_ZERO = b"\x00" * 32
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


# ---------------------------------------------------------------------------------------- results


@dataclass(slots=True)
class Anomaly:
    """One finding. ``evidence`` holds what a person needs to check it by hand: block, tx hash, entry
    index, roots and proofs (hex), whichever apply."""

    kind: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        """``"review"`` for break-glass accesses, ``"error"`` otherwise."""
        return "review" if self.kind in REVIEW_KINDS else "error"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "evidence": self.evidence}


@dataclass(slots=True)
class AccessRow:
    """One ledgered access (a strict ``AccessLogged`` event or a journal entry), as verified."""

    source: str  # "strict" | "journal"
    time: int  # unix seconds: block time (strict) or released_at (journal)
    requester: str
    requester_name: str
    patient: str
    record_id: str
    category: str
    purpose: str
    consent_id: str
    emergency: bool
    access_hash: str
    block: int | None = None  # the AccessLogged block, or the anchor block covering the entry
    tx_hash: str | None = None
    entry_index: int | None = None
    anchored: bool | None = None
    gateway: str | None = None  # the logAccess sender (strict) or the journal's anchoring gateway
    state_block: int | None = None  # the block whose state the decision used (journal, version 2)
    status: str = "ok"  # ok | review | anomaly | pending
    kinds: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class AuditReport:
    """What :func:`replay` found: summary counts, anomalies (errors and review items), access rows."""

    chain_id: int
    contracts: dict[str, str]
    from_block: int
    to_block: int
    anomalies: list[Anomaly]
    accesses: list[AccessRow]
    summary: dict[str, Any]
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: what ``replay(..., checkpoint=True)`` settled, for ``replay(..., resume=...)`` (see docs/audit.md)
    checkpoint: dict[str, Any] | None = None

    @property
    def errors(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "error"]

    @property
    def reviews(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "review"]

    @property
    def exit_code(self) -> int:
        """0 when clean (review items allowed), 1 when there is any error anomaly (2 is the CLI's for failures)."""
        return 1 if self.errors else 0

    def kinds(self) -> Counter[str]:
        return Counter(a.kind for a in self.anomalies)

    def to_json(self, detail: str = "all") -> dict[str, Any]:
        """The report as JSON; ``detail="issues"`` lists only the accesses that are not ``ok``."""
        return {
            "format": "hcl-audit-report",
            "version": 1,
            "generated_at": self.generated_at,
            "chain_id": self.chain_id,
            "contracts": self.contracts,
            "from_block": self.from_block,
            "to_block": self.to_block,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "anomalies": [a.to_json() for a in sorted(self.anomalies, key=lambda a: a.severity != "error")],
            "detail": detail,
            "accesses": [r.to_json() for r in _detail_rows(self, detail)],
        }


# ---------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Consent:
    consent_id: bytes
    categories: int
    purposes: int
    status: int
    valid_from: int
    valid_until: int
    block: int
    tx_hash: str
    revoked_block: int | None = None
    revoked_tx: str | None = None


@dataclass(slots=True)
class _State:
    members: dict[str, list[int]] = field(default_factory=dict)  # addr -> [status, roles]
    guardians: dict[tuple[str, str], int] = field(default_factory=dict)
    opt_out: dict[str, list[int]] = field(default_factory=dict)  # patient -> [opted_out, last_opt_out]
    consents: dict[tuple[str, str], _Consent] = field(default_factory=dict)
    emergency: dict[tuple[str, str], tuple[int, int, bytes, int]] = field(default_factory=dict)
    # id -> [patient, category, status, content_hash, locator, block, tx_hash]
    records: dict[bytes, list[Any]] = field(default_factory=dict)
    version: int = 0  # bumped by every applied event: verdicts cached under an older version are stale

    def apply(self, ev: EventRecord, ts: int) -> None:
        """Applies one state-changing event (others are ignored)."""
        self.version += 1
        a = ev.args
        n = ev.name
        if n == "MemberAdded":
            self.members[a["member"]] = [_ACTIVE, int(a["roles"])]
        elif n == "MemberSuspended":
            self.members.setdefault(a["member"], [0, 0])[0] = _SUSPENDED
        elif n == "MemberReinstated":
            self.members.setdefault(a["member"], [0, 0])[0] = _ACTIVE
        elif n == "MemberRemoved":
            self.members.setdefault(a["member"], [0, 0])[0] = _REMOVED
        elif n == "MemberRolesChanged":
            self.members.setdefault(a["member"], [0, 0])[1] = int(a["roles"])
        elif n == "ConsentGranted":
            self.consents[(a["patient"], a["grantee"])] = _Consent(
                bytes(a["consentId"]),
                int(a["categories"]),
                int(a["purposes"]),
                _C_ACTIVE,
                int(a["validFrom"]),
                int(a["validUntil"]),
                ev.block_number,
                ev.tx_hash,
            )
        elif n == "ConsentRevoked":
            c = self.consents.get((a["patient"], a["grantee"]))
            if c is not None:
                c.status, c.revoked_block, c.revoked_tx = _C_REVOKED, ev.block_number, ev.tx_hash
        elif n == "GuardianSet":
            self.guardians[(a["patient"], a["guardian"])] = int(a["validUntil"])
        elif n == "GuardianRemoved":
            self.guardians.pop((a["patient"], a["guardian"]), None)
        elif n == "EmergencyOptOutSet":
            slot = self.opt_out.setdefault(a["patient"], [0, 0])
            if a["optedOut"]:
                slot[0], slot[1] = 1, ts
            else:
                slot[0] = 0
        elif n == "EmergencyAccessGranted":
            self.emergency[(a["patient"], a["member"])] = (
                int(a["categories"]),
                int(a["validUntil"]),
                bytes(a["accessId"]),
                ev.block_number,
            )
        elif n == "RecordRegistered":
            self.records[bytes(a["recordId"])] = [
                a["patient"],
                int(a["category"]),
                _R_ACTIVE,
                bytes(a["contentHash"]),
                bytes(a["locator"]),
                ev.block_number,
                ev.tx_hash,
            ]
        elif n == "RecordAmended":
            rec = self.records.get(bytes(a["previousRecordId"]))
            if rec is not None:
                rec[2] = _R_AMENDED
        elif n == "RecordRetracted":
            rec = self.records.get(bytes(a["recordId"]))
            if rec is not None:
                rec[2] = _R_RETRACTED

    def to_json(self) -> dict[str, Any]:
        """The state as JSON (bytes as 0x-hex), for checkpoints."""
        return {
            "members": self.members,
            "guardians": [[p, g, until] for (p, g), until in self.guardians.items()],
            "opt_out": self.opt_out,
            "consents": [
                [
                    p,
                    g,
                    _hex(c.consent_id),
                    c.categories,
                    c.purposes,
                    c.status,
                    c.valid_from,
                    c.valid_until,
                    c.block,
                    c.tx_hash,
                    c.revoked_block,
                    c.revoked_tx,
                ]
                for (p, g), c in self.consents.items()
            ],
            "emergency": [
                [p, m, cats, until, _hex(aid), block] for (p, m), (cats, until, aid, block) in self.emergency.items()
            ],
            "records": {
                _hex(rid): [r[0], r[1], r[2], _hex(r[3]), _hex(r[4]), r[5], r[6]] for rid, r in self.records.items()
            },
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> _State:
        st = cls()
        st.members = {a: [int(v[0]), int(v[1])] for a, v in obj["members"].items()}
        st.guardians = {(p, g): int(u) for p, g, u in obj["guardians"]}
        st.opt_out = {p: [int(v[0]), int(v[1])] for p, v in obj["opt_out"].items()}
        st.consents = {(c[0], c[1]): _Consent(_unhex(c[2], 32), *c[3:]) for c in obj["consents"]}
        st.emergency = {(e[0], e[1]): (int(e[2]), int(e[3]), _unhex(e[4], 32), int(e[5])) for e in obj["emergency"]}
        st.records = {
            _unhex(rid, 32): [r[0], r[1], r[2], _unhex(r[3], 32), _unhex(r[4]), r[5], r[6]]
            for rid, r in obj["records"].items()
        }
        return st

    def windows(self, requester: str, patient: str, record_id: bytes, purpose: int) -> tuple[tuple[int, int], ...]:
        """The times ``t`` at which :meth:`authorize` finds nothing but review items, in this state:
        ``[valid_from, valid_until)`` of a covering consent, ``(-1, until)`` of an emergency window."""
        status, roles = self.members.get(requester, (0, 0))
        if status != _ACTIVE or roles & _PROVIDER_ROLES == 0:
            return ()
        rec = self.records.get(record_id)
        if rec is None or rec[0] != patient or rec[2] == _R_RETRACTED:
            return ()
        category = rec[1]
        if not (0 <= category < _CATEGORY_COUNT and 0 <= purpose < _PURPOSE_COUNT):
            return ()
        out: list[tuple[int, int]] = []
        c = self.consents.get((patient, requester))
        if (
            c is not None
            and c.status == _C_ACTIVE
            and (c.categories >> category) & 1 == 1
            and (c.purposes >> purpose) & 1 == 1
        ):
            out.append((c.valid_from, c.valid_until))
        if purpose == _PURPOSE_EMERGENCY and roles & _ROLE_EMERGENCY:
            e = self.emergency.get((patient, requester))
            o = self.opt_out.get(patient, [0, 0])
            if e is not None and (e[0] >> category) & 1 and not o[0] and e[1] - _EMERGENCY_WINDOW > o[1]:
                out.append((-1, e[1]))
        return tuple(out)

    def authorize(
        self, requester: str, patient: str, record_id: bytes, purpose: int, t: int
    ) -> tuple[list[tuple[str, str, dict[str, Any]]], int | None, bytes | None, bool]:
        """Mirrors ``logAccess`` + ``ConsentRegistry.check`` at time ``t``.

        Returns (findings as (kind, message, evidence), record category, consent id, emergency).
        Unlike the contract, which only says no, it names *why* (revoked, expired, not a member...).
        """
        found: list[tuple[str, str, dict[str, Any]]] = []
        status, roles = self.members.get(requester, (0, 0))
        if status == _SUSPENDED:
            found.append(("access_by_suspended_member", f"requester {requester} was suspended", {}))
        elif status != _ACTIVE:
            found.append(("access_by_non_member", f"requester {requester} was not a member", {}))
        elif roles & _PROVIDER_ROLES == 0:
            found.append(("access_by_non_member", f"requester {requester} had no care-provider role", {"roles": roles}))
        active_roles = roles if status == _ACTIVE else 0
        rec = self.records.get(record_id)
        if rec is None:
            found.append(("record_mismatch", "no such record on-chain", {}))
            return found, None, None, False
        rec_patient, category, rec_status = rec[0], rec[1], rec[2]
        if rec_patient != patient:
            found.append(("record_mismatch", f"record belongs to {rec_patient}, not {patient}", {}))
        if rec_status == _R_RETRACTED:
            found.append(("record_mismatch", "record was retracted", {}))
        if not (0 <= category < _CATEGORY_COUNT and 0 <= purpose < _PURPOSE_COUNT):
            found.append(("entry_without_valid_consent", "category or purpose outside the vocabulary", {}))
            return found, category, None, False

        c = self.consents.get((patient, requester))
        covers = c is not None and (c.categories >> category) & 1 == 1 and (c.purposes >> purpose) & 1 == 1
        if c is not None and covers and c.status == _C_ACTIVE and c.valid_from <= t < c.valid_until:
            return found, category, c.consent_id, False

        if purpose == _PURPOSE_EMERGENCY and active_roles & _ROLE_EMERGENCY and active_roles & _PROVIDER_ROLES:
            e = self.emergency.get((patient, requester))
            o = self.opt_out.get(patient, [0, 0])
            if e is not None and t < e[1] and (e[0] >> category) & 1 and not o[0] and e[1] - _EMERGENCY_WINDOW > o[1]:
                found.append(
                    (
                        "emergency_access",
                        "break-glass access (review)",
                        {
                            "emergency_access_id": "0x" + e[2].hex(),
                            "window_block": e[3],
                            "window_until": e[1],
                        },
                    )
                )
                return found, category, e[2], True
        if c is not None and covers and c.status == _C_REVOKED:
            found.append(
                (
                    "access_after_revocation",
                    "consent was revoked before this access",
                    {
                        "consent_id": "0x" + c.consent_id.hex(),
                        "revoked_block": c.revoked_block,
                        "revoked_tx": c.revoked_tx,
                    },
                )
            )
        elif c is not None and covers and t >= c.valid_until:
            found.append(
                (
                    "access_after_expiry",
                    "consent had expired",
                    {
                        "consent_id": "0x" + c.consent_id.hex(),
                        "valid_until": c.valid_until,
                        "t": t,
                    },
                )
            )
        elif purpose == _PURPOSE_EMERGENCY and (e := self.emergency.get((patient, requester))) and t >= e[1]:
            found.append(
                (
                    "access_after_expiry",
                    "emergency window had ended",
                    {
                        "emergency_access_id": "0x" + e[2].hex(),
                        "window_until": e[1],
                        "t": t,
                    },
                )
            )
        else:
            detail: dict[str, Any] = {"t": t}
            if c is not None:
                detail.update(
                    consent_id="0x" + c.consent_id.hex(),
                    categories=c.categories,
                    purposes=c.purposes,
                    valid_from=c.valid_from,
                    valid_until=c.valid_until,
                )
            found.append(("entry_without_valid_consent", "no consent covered this access", detail))
        return found, category, None, False


# ---------------------------------------------------------------------------------------- journal


@dataclass(slots=True)
class _Entry:
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


def _unhex(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"expected 0x-hex, got {value!r}")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


_ENTRY_STRUCT = struct.Struct(">4sB20s20s32sB32sB32sQ")  # HCLJ/1, see node_client.journal_entry
_ENTRY_STRUCT_V2 = struct.Struct(">4sB20s20s32sB32sB32sQQ32sQ")  # HCLJ/2 (docs/audit.md)


class _FieldCodec:
    """Re-encodes an exported entry's fields into its ``HCLJ/1`` bytes, fast.

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
            hit = self._addresses[value] = (bytes.fromhex(value[2:]), to_checksum_address(value))
        return hit

    def b32(self, value: Any) -> bytes:
        hit = self._b32.get(value)
        if hit is None:
            hit = _unhex(value, 32)
            if len(self._b32) < 1_000_000:
                self._b32[value] = hit
        return hit

    def encode(self, obj: Mapping[str, Any]) -> tuple[bytes, tuple[Any, ...]]:
        """(encoding, (requester, patient, record_id, purpose, consent_id, emergency, access_hash,
        released_at, state_block, state_block_hash, state_seen_at)); version 2 when the object has
        ``state_block`` (the state fields are ``None`` in version 1); raises KeyError or ValueError for a
        malformed entry."""
        req_b, requester = self.address(obj["requester"])
        pat_b, patient = self.address(obj["patient"])
        record_id = self.b32(obj["record_id"])
        consent_id = self.b32(obj["consent_id"])
        access_hash = _unhex(obj["access_hash"], 32)
        purpose = obj["purpose"]
        emergency = obj["emergency"]
        released_at = obj["released_at"]
        if type(purpose) is not int or not 0 <= purpose <= 255:
            raise ValueError("purpose must be an integer 0..255")
        if type(emergency) is not bool:
            raise ValueError("emergency must be a bool")
        if type(released_at) is not int or not 0 <= released_at < 1 << 64:
            raise ValueError("released_at must be an integer (unix ms) in range")
        if "state_block" not in obj:
            data = _ENTRY_STRUCT.pack(
                b"HCLJ", 1, req_b, pat_b, record_id, purpose, consent_id, emergency, access_hash, released_at
            )
            return data, (
                requester,
                patient,
                record_id,
                purpose,
                consent_id,
                emergency,
                access_hash,
                released_at,
                None,
                None,
                None,
            )
        state_block = obj["state_block"]
        state_hash = self.b32(obj["state_block_hash"])
        seen_at = obj["state_seen_at"]
        if type(state_block) is not int or not 0 <= state_block < 1 << 64:
            raise ValueError("state_block must be an integer in range")
        if type(seen_at) is not int or not 0 <= seen_at < 1 << 64:
            raise ValueError("state_seen_at must be an integer (unix ms) in range")
        data = _ENTRY_STRUCT_V2.pack(
            b"HCLJ",
            2,
            req_b,
            pat_b,
            record_id,
            purpose,
            consent_id,
            emergency,
            access_hash,
            released_at,
            state_block,
            state_hash,
            seen_at,
        )
        return data, (
            requester,
            patient,
            record_id,
            purpose,
            consent_id,
            emergency,
            access_hash,
            released_at,
            state_block,
            state_hash,
            seen_at,
        )


def _load_journal(
    path: Path, *, skip: int = 0, chain_head: bytes | None = None
) -> tuple[list[_Entry], dict[str, Any], list[Anomaly]]:
    """Tolerant reader of an export: unlike ``read_export`` it does not stop at the first problem but
    localizes every broken link (each link is checked against the previous *given* chain hash, so one
    edited row yields one finding, not one per following row).

    ``skip`` entries (a checkpoint's position) are passed over without parsing, except the last one,
    whose written chain hash must be ``chain_head``: the export must extend the checkpointed journal.
    """
    entries: list[_Entry] = []
    problems: list[Anomaly] = []
    header: dict[str, Any] = {}
    prev_given = _ZERO if chain_head is None else chain_head
    chain = prev_given
    skipped = 0
    codec = _FieldCodec()
    sha256 = hashlib.sha256
    loads = orjson.loads
    fromhex = bytes.fromhex
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():
                    continue
                problems.append(Anomaly("journal_chain_broken", f"line {lineno} is not JSON: {exc}", {"line": lineno}))
                continue
            kind = obj.get("type") if type(obj) is dict else None
            if kind != "entry":
                if kind == "header":
                    header = obj
                    if skip:  # the checkpointed entries follow the header: pass over them unparsed
                        for _ in range(skip - 1):
                            if not f.readline():
                                break
                            skipped += 1
                        last = f.readline()
                        skipped += 1 if last else 0
                        ok = False
                        try:
                            prior = loads(last)
                            ok = prior.get("idx") == skip - 1 and prior.get("chain_hash") == _hex(chain_head)
                        except (orjson.JSONDecodeError, AttributeError):
                            pass
                        if not ok or skipped != skip:
                            problems.append(
                                Anomaly(
                                    "journal_chain_broken",
                                    "the export does not extend the checkpointed journal",
                                    {"entry_index": skip - 1, "checkpoint_chain_head": _hex(chain_head)},
                                )
                            )
                continue  # the export's anchor lines: the chain's events are authoritative
            position = len(entries) + skip
            try:
                data, fields = codec.encode(obj)
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(
                    Anomaly(
                        "journal_chain_broken",
                        f"entry on line {lineno} is malformed: {exc}",
                        {"line": lineno, "entry_index": obj.get("idx")},
                    )
                )
                continue
            leaf = sha256(b"\x00" + data).digest()
            chain = sha256(chain + leaf).digest()
            given = obj.get("chain_hash")
            try:
                given_b = fromhex(given[2:]) if type(given) is str and given[:2] == "0x" and len(given) == 66 else b""
            except ValueError:
                given_b = b""
            encoded = obj.get("encoded")
            leaf_given = obj.get("leaf_hash")
            if (
                obj.get("idx") != position
                or type(encoded) is not str
                or encoded[2:] != data.hex()
                or encoded[:2] != "0x"
                or type(leaf_given) is not str
                or leaf_given[2:] != leaf.hex()
                or given_b != sha256(prev_given + leaf).digest()
            ):
                reasons: list[str] = []
                if obj.get("idx") != position:
                    reasons.append(f"index {obj.get('idx')!r} at position {position}")
                if encoded != "0x" + data.hex():
                    reasons.append("encoded bytes differ from the fields")
                if leaf_given != "0x" + leaf.hex():
                    reasons.append("leaf hash differs from the fields")
                if given_b != sha256(prev_given + leaf).digest():
                    reasons.append("chain hash does not follow from the previous row")
                problems.append(
                    Anomaly(
                        "journal_chain_broken",
                        f"entry at position {position}: " + "; ".join(reasons),
                        {
                            "entry_index": position,
                            "idx_written": obj.get("idx"),
                            "line": lineno,
                            "leaf_hash": "0x" + leaf.hex(),
                            "chain_hash_written": given,
                        },
                    )
                )
            prev_given = given_b or chain
            entries.append(_Entry(position, obj.get("idx"), *fields, leaf))
    if not header:
        problems.append(Anomaly("journal_chain_broken", "export has no header", {}))
    else:
        if header.get("size") != len(entries) + skip:
            problems.append(
                Anomaly(
                    "journal_chain_broken",
                    f"header says {header.get('size')} entries, file has {len(entries) + skip}",
                    {"header_size": header.get("size"), "entries": len(entries) + skip},
                )
            )
        if header.get("chain_head") != "0x" + chain.hex():
            problems.append(
                Anomaly(
                    "journal_chain_broken",
                    "header chain head differs from the recomputed chain",
                    {"header_chain_head": header.get("chain_head"), "recomputed": "0x" + chain.hex()},
                )
            )
    return entries, header, problems


# ---------------------------------------------------------------------------------------- chain


def _batch_rpc(client: ChainClient, method: str, params: list[list[Any]]) -> list[Any]:
    """One JSON-RPC batch request: the results in the order of ``params``. Raises ``ValueError`` when the
    node does not answer batches (callers then ask one by one)."""
    payload = [{"jsonrpc": "2.0", "id": j, "method": method, "params": p} for j, p in enumerate(params)]
    resp = client.rpc(lambda: requests.post(client.rpc_url, json=payload, timeout=client.timeout))
    resp.raise_for_status()
    answers = resp.json()
    if not isinstance(answers, list):
        raise ValueError("node does not batch")
    by_id = {int(a["id"]): a["result"] for a in answers}
    return [by_id[j] for j in range(len(params))]


def _block_timestamps(
    client: ChainClient,
    blocks: Iterable[int],
    cache: dict[int, int],
    progress: Progress | None = None,
    batch: int = 500,
    hashes: dict[int, bytes] | None = None,
) -> dict[int, int]:
    """Each distinct block's timestamp (and hash, into ``hashes`` if given), fetched once, in JSON-RPC
    batches (one HTTP round trip per ``batch`` blocks: a replay touches thousands of blocks and one
    request each would dominate)."""
    todo = sorted({b for b in blocks if b not in cache or (hashes is not None and b not in hashes)})
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        try:
            answers = _batch_rpc(client, "eth_getBlockByNumber", [[hex(n), False] for n in chunk])
            for n, ans in zip(chunk, answers):
                cache[n] = int(ans["timestamp"], 16)
                if hashes is not None:
                    hashes[n] = bytes.fromhex(ans["hash"][2:])
        except (ValueError, KeyError, TypeError, requests.RequestException):
            for n in chunk:  # a node without batch support: one by one
                b = client.rpc(lambda n=n: client.w3.eth.get_block(n))
                cache[n] = int(b["timestamp"])
                if hashes is not None:
                    hashes[n] = bytes(b["hash"])
        if progress:
            progress("timestamps", min(i + batch, len(todo)), len(todo))
    return cache


def _fetch_events(
    client: ChainClient, manifest: Manifest, start: int, end: int, progress: Progress | None
) -> list[EventRecord]:
    events: list[EventRecord] = []
    total = end - start + 1
    page = start
    while page <= end:
        stop = min(page + DEFAULT_PAGE_SIZE - 1, end)
        events.extend(read_events(client, manifest.contracts, from_block=page, to_block=stop))
        if progress:
            progress("events", stop - start + 1, total)
        page = stop + 1
    events.sort(key=lambda e: (e.block_number, e.log_index))
    return events


def _hex(b: bytes | None) -> str:
    return "" if b is None else "0x" + b.hex()


def _slug(table: tuple[Any, ...], bit: int | None) -> str:
    if bit is None:
        return ""
    return table[bit].slug if 0 <= bit < len(table) else str(bit)


# ---------------------------------------------------------------------------------------- replay


@dataclass(slots=True)
class _AnchorRef:
    """One ``AccessBatchAnchored`` of the audited gateway, and what the auditor concluded about it."""

    index: int
    block_number: int
    tx_hash: str
    tree_size: int
    root: bytes
    ok: bool = False  # its root equals the journal's root at its size
    judged: bool = False  # checked against a journal that had all its entries (final)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "block": self.block_number,
            "tx_hash": self.tx_hash,
            "tree_size": self.tree_size,
            "root": _hex(self.root),
            "ok": self.ok,
        }

    @classmethod
    def from_json(cls, o: Mapping[str, Any]) -> _AnchorRef:
        return cls(
            int(o["index"]),
            int(o["block"]),
            str(o["tx_hash"]),
            int(o["tree_size"]),
            _unhex(o["root"], 32),
            bool(o["ok"]),
            True,
        )


def _tx_senders(client: ChainClient, tx_hashes: Iterable[str], batch: int = 500) -> dict[str, str]:
    """``from`` of each transaction, in JSON-RPC batches (a strict ledger has one tx per access)."""
    todo = sorted(set(tx_hashes))
    out: dict[str, str] = {}
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        try:
            answers = _batch_rpc(client, "eth_getTransactionByHash", [[h] for h in chunk])
            for h, ans in zip(chunk, answers):
                out[h] = to_checksum_address(ans["from"])
        except (ValueError, KeyError, TypeError, requests.RequestException):
            for h in chunk:
                out[h] = to_checksum_address(client.rpc(lambda h=h: client.w3.eth.get_transaction(h))["from"])
    return out


#: checkpoint file format (see :func:`replay` and docs/audit.md); version 1 files are read too
CHECKPOINT_FORMAT = "hcl-audit-checkpoint"
CHECKPOINT_VERSION = 2
#: the staleness bound a gateway promises (``gateway.indexer.Indexer.freshness`` at the default poll)
DEFAULT_MAX_STALENESS = 1.0
#: entries released up to this many seconds before the journal's newest one may still turn up in a
#: later export (concurrent releases commit out of time order): the checkpoint's state stays that far back
CHECKPOINT_MARGIN = 10


def _anomaly_from_json(o: Mapping[str, Any]) -> Anomaly:
    return Anomaly(str(o["kind"]), str(o["message"]), dict(o.get("evidence") or {}))


@dataclass(frozen=True, slots=True)
class _Resume:
    """A loaded, checked checkpoint (format in docs/audit.md)."""

    from_block: int
    block: int
    journal_position: int
    chain_head: bytes
    frontier: list[bytes]
    gateway: str | None
    last_anchor_index: int
    anchors: list[_AnchorRef]
    state: Mapping[str, Any]
    counts: Mapping[str, int]
    anomalies: list[dict[str, Any]]
    timeline: dict[int, list[int | None]]  # block -> [latest state_seen_at, earliest released_at]

    @classmethod
    def load(cls, obj: Mapping[str, Any], manifest: Manifest) -> _Resume:
        if obj.get("format") != CHECKPOINT_FORMAT or obj.get("version") not in (1, CHECKPOINT_VERSION):
            raise ValueError("not a version 1 or 2 audit checkpoint")
        if obj["chain_id"] != manifest.chain_id or obj["contracts"] != dict(manifest.contracts):
            raise ValueError("the checkpoint is of another deployment")
        j = obj["journal"]
        frontier = [_unhex(h, 32) for h in j["frontier"]]
        if len(frontier) != bin(int(j["position"])).count("1"):
            raise ValueError("checkpoint frontier does not match its journal position")
        tl = j.get("timeline") or {}
        timeline: dict[int, list[int | None]] = {int(b): [s, d] for b, s, d in tl.get("points", [])}
        if tl.get("seen_before") is not None:
            slot = timeline.setdefault(int(obj["block"]), [None, None])
            slot[0] = max(int(tl["seen_before"]), slot[0] if slot[0] is not None else -1)
        return cls(
            int(obj["from_block"]),
            int(obj["block"]),
            int(j["position"]),
            _unhex(j["chain_head"], 32),
            frontier,
            j.get("gateway"),
            int(j["last_anchor_index"]),
            [_AnchorRef.from_json(a) for a in j["anchors"]],
            obj["state"],
            {k: int(v) for k, v in obj["counts"].items()},
            list(obj["anomalies"]),
            timeline,
        )


def write_checkpoint(report: AuditReport, path: Path) -> Path:
    """Writes ``report.checkpoint`` (a replay run with ``checkpoint=True``) atomically."""
    if report.checkpoint is None:
        raise ValueError("this report was made without checkpoint=True")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(report.checkpoint))
    tmp.replace(path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint file for ``replay(..., resume=...)``."""
    obj = orjson.loads(Path(path).read_bytes())
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not an audit checkpoint")
    return obj


def _measure_skew(
    entries: list[_Entry], anchor_of: list[_AnchorRef | None], ts_cache: dict[int, int], client: ChainClient
) -> int:
    """How far the chain clock runs ahead of the gateway's, as far as the anchors tell.

    No entry can have been released after the block anchoring it, so for every anchored entry
    ``released_at + skew <= timestamp(anchor block)``: the smallest such margin is the largest skew
    the evidence allows, and the real one is at most one anchoring interval (seconds) below it.
    Evaluating at that skew puts each batch's last entry at its anchor's block, never later.
    0 when nothing is anchored.
    """
    margins: dict[int, int] = {}
    for en, a in zip(entries, anchor_of, strict=True):
        if a is not None:
            m = margins.get(a.block_number)
            t = en.released_at // 1000
            if m is None or t > m:
                margins[a.block_number] = t
    if not margins:
        return 0
    _block_timestamps(client, margins, ts_cache)
    return min(ts_cache[b] - t for b, t in margins.items())


def _run(windows: tuple[tuple[int, int], ...], t: int) -> tuple[int, int] | None:
    """The contiguous run of ``windows`` (half-open intervals) that contains ``t``, or ``None``."""
    lo = hi = None
    for a, b in windows:
        if a <= t < b:
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is None or hi is None:
        return None
    grown = True
    while grown:  # overlapping or adjacent windows extend the run
        grown = False
        for a, b in windows:
            if a <= hi < b:
                hi, grown = b, True
            if a < lo <= b:
                lo, grown = a, True
    return lo, hi


def _state_block_problem(en: _Entry, anchor: _AnchorRef | None, end: int, hashes: Mapping[int, bytes]) -> str | None:
    """Why a version 2 entry's state claim cannot hold, or ``None``."""
    b = en.state_block
    assert b is not None and en.seen_at is not None
    if anchor is not None and b >= anchor.block_number:
        return f"the decision names block {b}, not before the block {anchor.block_number} that anchored it"
    if b > end:
        return None  # beyond the audited range: not judged by this run
    if hashes.get(b) != en.state_hash:
        return f"block {b} of this chain has another hash"
    if en.seen_at > en.released_at:
        return "state_seen_at is after released_at"
    return None


def _cid_str(cid: bytes) -> str:
    """Multibase base32-lower string of a CID (what stores and ``ipfs`` name blobs by)."""
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def _check_blobs(state: _State, store: Path | str) -> list[Anomaly]:
    """Re-hashes every stored ciphertext of a live (not retracted) record against its ``contentHash``.

    ``store`` is a local content-addressed directory (``<root>/<next-to-last 2 chars of the CID
    string>/<CID string>``, the gateway's ``LocalBlobStore`` layout) or an ``http(s)://`` IPFS (Kubo)
    RPC API URL (``/api/v0/cat``). The store is only asked for bytes: it is the SHA-256 of what it
    returns, compared with the hash the gateway registered on-chain, that decides. Retracted records
    are skipped (their blobs are deleted on purpose).
    """
    found: list[Anomaly] = []
    ipfs = isinstance(store, str) and store.startswith(("http://", "https://"))
    for rid, rec in state.records.items():
        patient, _category, status, content_hash, locator, block, tx_hash = rec
        if status == _R_RETRACTED:
            continue
        evidence = {
            "record_id": _hex(rid),
            "patient": patient,
            "locator": _hex(locator),
            "block": block,
            "tx_hash": tx_hash,
            "content_hash": _hex(content_hash),
        }
        try:
            name = _cid_str(locator)
        except (ValueError, TypeError):
            found.append(Anomaly("blob_missing", "the on-chain locator is not a CID", evidence))
            continue
        evidence["cid"] = name
        data: bytes | None
        if ipfs:
            try:
                resp = requests.post(f"{str(store).rstrip('/')}/api/v0/cat", params={"arg": name}, timeout=30)
            except requests.RequestException as exc:
                raise ValueError(f"IPFS API {store} unreachable: {exc}") from exc
            data = resp.content if resp.status_code == 200 else None
            evidence["store"] = str(store)
        else:
            path = Path(store) / name[-3:-1] / name
            evidence["path"] = str(path)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = None
        if data is None:
            found.append(Anomaly("blob_missing", "the store holds no ciphertext for this record", evidence))
            continue
        actual = hashlib.sha256(data).digest()
        if actual != content_hash:
            found.append(
                Anomaly(
                    "blob_hash_mismatch",
                    "the stored ciphertext no longer matches its on-chain hash",
                    {**evidence, "stored_sha256": _hex(actual), "stored_size": len(data)},
                )
            )
    return found


def _check_claims(path: Path, rows: list[AccessRow]) -> list[Anomaly]:
    """Releases a requester says it received, each of which must be on the ledger.

    ``path`` is JSON Lines, one release response per line as the gateway returned it (the encrypted
    payload may be left out): ``accessId`` is required; ``recordId``, ``patient`` and ``ledger``
    (``{"mode": "batch", "journalIndex": i}`` or ``{"mode": "strict", "txHash": ...}``) are compared
    when present. What this proves: a release response is not signed by the gateway, so a claim is
    the requester's word. A claim without a ledger entry therefore means that either the gateway
    released without ledgering or the requester invented the response; both are for a person to
    settle, and the response bytes (whose hash ``accessId`` commits to with the gateway's nonce)
    are the evidence to ask for. A ledgered access cannot be denied by the gateway afterwards.
    """
    by_hash: dict[str, AccessRow] = {r.access_hash: r for r in rows}
    found: list[Anomaly] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                claim = orjson.loads(line)
                access_id = str(claim["accessId"]).lower()
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a release response: {exc}") from exc
            ledger = claim.get("ledger") if isinstance(claim.get("ledger"), dict) else {}
            evidence = {
                "line": lineno,
                "access_id": access_id,
                "record_id": claim.get("recordId"),
                "patient": claim.get("patient"),
                "ledger": ledger,
            }
            row = by_hash.get(access_id)
            if row is None:
                found.append(
                    Anomaly(
                        "release_without_ledger_entry",
                        "a requester holds a release that is on no ledger (journal or chain)",
                        evidence,
                    )
                )
                continue
            mismatch = []
            if claim.get("recordId") and str(claim["recordId"]).lower() != row.record_id:
                mismatch.append("recordId")
            if claim.get("patient") and str(claim["patient"]).lower() != row.patient.lower():
                mismatch.append("patient")
            if "journalIndex" in ledger and ledger["journalIndex"] != row.entry_index:
                mismatch.append("journalIndex")
            if "txHash" in ledger and str(ledger["txHash"]).lower() != (row.tx_hash or "").lower():
                mismatch.append("txHash")
            if mismatch:
                found.append(
                    Anomaly(
                        "release_without_ledger_entry",
                        f"the ledgered access with this accessId differs in {', '.join(mismatch)}",
                        {
                            **evidence,
                            "ledgered": {
                                "record_id": row.record_id,
                                "patient": row.patient,
                                "entry_index": row.entry_index,
                                "tx_hash": row.tx_hash,
                            },
                        },
                    )
                )
    return found


def replay(
    client: ChainClient,
    manifest: Manifest,
    *,
    journal: Path | None = None,
    from_block: int | None = None,
    to_block: int | None = None,
    progress: Progress | None = None,
    gateway: str | None = None,
    clock_skew: int | None = 0,
    anchor_grace: int = 60,
    resume: Mapping[str, Any] | None = None,
    store: Path | str | None = None,
    claims: Path | None = None,
    checkpoint: bool = False,
    checkpoint_margin: int = CHECKPOINT_MARGIN,
    max_staleness: float = DEFAULT_MAX_STALENESS,
) -> AuditReport:
    """Replays the deployment's events (and the exported ``journal``) and verifies every access.

    ``from_block`` defaults to (and should stay at) the deploy block: state is rebuilt from events, so
    starting later misses what came before. ``gateway`` is the address whose anchors the journal is
    checked against (default: the anchoring gateway whose roots the journal matches best).
    How journal entries are judged: see the module docstring; ``clock_skew`` applies to version 1
    entries only (``None`` measures it from their anchors); ``max_staleness`` (seconds) is the bound the
    audited gateway promises between seeing a head and deciding on its state. Journal entries not covered
    by any anchor are reported only when older than ``anchor_grace`` seconds at ``to_block``.

    ``resume`` is a checkpoint (:attr:`AuditReport.checkpoint`, loaded from JSON): the replay then
    starts from the checkpoint's state and position instead of the deploy block, and reaches the
    same verdict as a full replay (see docs/audit.md for what a checkpoint holds). ``store`` (a
    local store directory or an IPFS API URL) re-hashes every stored record ciphertext against its
    on-chain ``contentHash``. ``claims`` is a JSON Lines file of release responses a requester says
    it received: each must be on the ledger (see :func:`_check_claims`). ``checkpoint`` fills
    :attr:`AuditReport.checkpoint` (a JSON-able dict) for a later ``resume``; its state stands
    ``checkpoint_margin`` seconds before the newest journal entry (see :data:`CHECKPOINT_MARGIN`).
    """
    started = time.perf_counter()
    if client.chain_id != manifest.chain_id:
        raise ValueError(f"manifest is for chain {manifest.chain_id}, the node is chain {client.chain_id}")
    cp = _Resume.load(resume, manifest) if resume is not None else None
    if cp is not None and claims is not None:
        raise ValueError("claims are checked against every access: use --claims with a full replay, not --resume")
    origin = manifest.deploy_block if from_block is None else from_block
    start = cp.block + 1 if cp is not None else origin
    if cp is not None:
        origin = cp.from_block
    end = client.block_number() if to_block is None else to_block
    if end < start - 1:
        raise ValueError(f"to_block {end} is before the checkpoint's block {start - 1}")
    names = {m["address"]: m.get("name", "") for m in manifest.members}

    events = _fetch_events(client, manifest, start, end, progress) if end >= start else []
    fetched = time.perf_counter()
    ts_cache: dict[int, int] = {}
    _block_timestamps(client, {e.block_number for e in events} | {end}, ts_cache, progress)
    senders = _tx_senders(client, (e.tx_hash for e in events if e.name == "AccessLogged"))
    timed = time.perf_counter()

    anomalies: list[Anomaly] = []
    origins: list[tuple[str, int]] = []  # per anomaly: what it is about, to tell what a checkpoint keeps
    rows: list[AccessRow] = []

    def report(a: Anomaly, about: tuple[str, int]) -> None:
        anomalies.append(a)
        origins.append(about)

    # ---- journal ↔ anchors (pure Merkle work, before the state replay)
    entries: list[_Entry] = []
    eval_before: list[int] = []  # per entry: evaluate before this block (index into block order)
    hash_cache: dict[int, bytes] = {}
    invalid: dict[int, str] = {}  # entry -> why its state block claim does not hold
    # the journal's timeline (gateway clock): per decided-on block, [latest state_seen_at, earliest
    # released_at] of the entries deciding on it (and what a checkpoint kept of settled entries)
    timeline: dict[int, list[int | None]] = {b: list(v) for b, v in (cp.timeline.items() if cp else ())}
    anchor_of: list[_AnchorRef | None] = []
    chosen_gw: str | None = cp.gateway if cp is not None else None
    anchors_by_gw: dict[str, list[EventRecord]] = defaultdict(list)
    for e in events:
        if e.name == "AccessBatchAnchored":
            anchors_by_gw[e["gateway"]].append(e)
    anchors: list[_AnchorRef] = []
    base = cp.journal_position if cp is not None else 0
    n = base
    block_order = sorted({e.block_number for e in events})
    block_ts = [ts_cache[b] for b in block_order]
    if journal is not None:
        entries, _header, problems = _load_journal(journal, skip=base, chain_head=cp.chain_head if cp else None)
        for a in problems:
            report(
                a,
                ("entry", a.evidence["entry_index"]) if isinstance(a.evidence.get("entry_index"), int) else ("run", 0),
            )
        tree = MerkleTree.from_frontier(base, cp.frontier) if cp is not None else MerkleTree()
        tree.extend([en.leaf for en in entries])
        n = tree.size
        if chosen_gw is None:
            if gateway is not None:
                chosen_gw = to_checksum_address(gateway)
            elif anchors_by_gw:

                def score(g: str) -> tuple[int, int]:
                    ok = sum(
                        1
                        for a in anchors_by_gw[g]
                        if a["treeSize"] <= n and tree.root(a["treeSize"]) == bytes(a["root"])
                    )
                    return ok, len(anchors_by_gw[g])

                chosen_gw = max(anchors_by_gw, key=score)
        judged_upto = -1
        if cp is not None:
            anchors = list(cp.anchors)
            judged_upto = cp.last_anchor_index
        previous: _AnchorRef | None = anchors[-1] if anchors else None
        for a_ev in anchors_by_gw.get(chosen_gw, []) if chosen_gw else []:
            a = _AnchorRef(
                int(a_ev["index"]), a_ev.block_number, a_ev.tx_hash, int(a_ev["treeSize"]), bytes(a_ev["root"])
            )
            if a.index <= judged_upto:
                continue  # judged before the checkpoint
            anchors.append(a)
            size, root = a.tree_size, a.root
            ev = {
                "block": a.block_number,
                "tx_hash": a.tx_hash,
                "tree_size": size,
                "root": _hex(root),
                "anchor_index": a.index,
            }
            if size > n:
                report(
                    Anomaly(
                        "anchor_not_backed_by_journal",
                        f"anchor of {size} entries, the journal has {n}",
                        {**ev, "journal_size": n},
                    ),
                    ("run", 0),
                )
            else:
                a.judged = True
                mine = tree.root(size)
                a.ok = mine == root
                if not a.ok:
                    report(
                        Anomaly(
                            "journal_root_mismatch",
                            f"journal's first {size} entries do not hash to the anchored root",
                            {**ev, "journal_root": _hex(mine)},
                        ),
                        ("anchor", a.index),
                    )
            if previous is not None and size <= n and a.ok and previous.tree_size >= base:
                old_size, old_root = previous.tree_size, previous.root
                proof = tree.consistency_proof(old_size, size)
                if not verify_consistency(old_size, size, old_root, root, proof):
                    report(
                        Anomaly(
                            "anchor_inconsistent",
                            f"anchored root of {old_size} is not a prefix of the one of {size}",
                            {
                                **ev,
                                "previous_block": previous.block_number,
                                "previous_tx_hash": previous.tx_hash,
                                "previous_tree_size": old_size,
                                "previous_root": _hex(old_root),
                                "proof": [_hex(p) for p in proof],
                            },
                        ),
                        ("anchor", a.index),
                    )
            previous = a
        # inclusion of each entry under the first anchor covering it
        sizes = [a.tree_size for a in anchors]
        failed: dict[int, list[int]] = defaultdict(list)
        for en in entries:
            k = bisect.bisect_left(sizes, en.position + 1)
            if k == len(anchors):
                anchor_of.append(None)
                continue
            a = anchors[k]
            ok = a.tree_size <= n and a.ok
            if ok and a.tree_size <= 4096:  # full proof check (when the root matched, each proof verifies by
                # construction; the explicit check is kept for small trees and for the evidence)
                ok = verify_inclusion(
                    en.leaf, en.position, a.tree_size, tree.inclusion_proof(en.position, a.tree_size), a.root
                )
            if not ok:
                failed[k].append(en.position)
            anchor_of.append(a if ok else None)
        for k, positions in failed.items():
            a = anchors[k]
            if a.tree_size <= n and a.ok:  # a root mismatch was already reported; this is a lone proof failure
                report(
                    Anomaly(
                        "journal_root_mismatch",
                        "inclusion proofs fail against the anchored root",
                        {
                            "block": a.block_number,
                            "tx_hash": a.tx_hash,
                            "tree_size": a.tree_size,
                            "entries": positions[:50],
                        },
                    ),
                    ("anchor", a.index),
                )
        legacy = [i for i, en in enumerate(entries) if en.state_block is None]
        if clock_skew is None:
            clock_skew = (
                _measure_skew([entries[i] for i in legacy], [anchor_of[i] for i in legacy], ts_cache, client)
                if legacy
                else 0
            )
        # version 2: the blocks the decisions name, their hashes checked and their timestamps used
        _block_timestamps(
            client,
            {en.state_block for en in entries if en.state_block is not None and en.state_block <= end},
            ts_cache,
            progress,
            hashes=hash_cache,
        )
        for i, (en, a) in enumerate(zip(entries, anchor_of, strict=True)):
            b = en.state_block
            if b is None:  # version 1: the latest event block at or before its time, capped by its anchor
                t = en.released_at // 1000 + clock_skew
                pos = bisect.bisect_right(block_ts, t)  # first block with ts > t
                if a is not None:
                    pos = min(pos, bisect.bisect_left(block_order, a.block_number))
                eval_before.append(pos)
                continue
            eval_before.append(bisect.bisect_right(block_order, b) if b <= end else len(block_order))
            problem = _state_block_problem(en, a, end, hash_cache)
            if problem is not None:
                invalid[i] = problem
            elif b <= end:  # the journal's own timeline: when the gateway saw which head (its clock)
                slot = timeline.get(b)
                if slot is None:
                    timeline[b] = [en.seen_at, en.released_at]
                else:
                    if en.seen_at > slot[0]:
                        slot[0] = en.seen_at
                    if slot[1] is None or en.released_at < slot[1]:
                        slot[1] = en.released_at
    skew = clock_skew or 0
    tl_blocks = sorted(timeline)
    tl_seen: list[int] = []  # max state_seen_at over entries deciding on a block <= tl_blocks[k]
    for b in tl_blocks:
        s_b = timeline[b][0]
        tl_seen.append(max(s_b if s_b is not None else -1, tl_seen[-1] if tl_seen else -1))
    tl_used: list[int | None] = [None] * len(tl_blocks)  # min released_at over blocks >= tl_blocks[k]
    low: int | None = None
    for k in range(len(tl_blocks) - 1, -1, -1):
        d_b = timeline[tl_blocks[k]][1]
        if d_b is not None and (low is None or d_b < low):
            low = d_b
        tl_used[k] = low

    def seen_before(block: int) -> int:
        """The latest moment (gateway ms) the journal shows the chain's head before ``block``; -1 if none."""
        k = bisect.bisect_left(tl_blocks, block) - 1
        return tl_seen[k] if k >= 0 else -1

    def used_from(block: int) -> int | None:
        """The earliest decision (gateway ms) the journal shows on a state at or after ``block``."""
        k = bisect.bisect_left(tl_blocks, block)
        return tl_used[k] if k < len(tl_blocks) else None

    # ---- the state replay, block by block, in log order
    state = _State.from_json(cp.state) if cp is not None else _State()
    verify_started = time.perf_counter()
    pending: dict[int, list[int]] = defaultdict(list)
    for i, pos in enumerate(eval_before):
        pending[pos].append(i)
    end_ts = ts_cache[end]

    # per-entry work is the auditor's hot loop (a million entries a run): hex strings and slugs of the
    # few distinct records, consents and vocabulary terms are made once, and a clean verdict is cached
    # per (requester, patient, record, purpose) for as long as no event changed the state and ``t``
    # stays inside the run of validity windows it fell in (the only time-dependent part of a verdict)
    hex_cache: dict[bytes, str] = {}
    cat_slugs = [t.slug for t in CATEGORIES]
    purpose_slugs = {i: t.slug for i, t in enumerate(PURPOSES)}
    clean_cache: dict[tuple[str, str, bytes, int], tuple[int, int, int, int, list[int]]] = {}
    legacy_cache: dict[tuple[str, str, bytes, int], tuple[int, int, int, int]] = {}
    entry_rows: list[AccessRow | None] = [None] * len(entries)

    # what would change a clean verdict after its block: per (requester, patient, record, purpose) key of
    # a version 2 entry, the key's standing evaluated at every block whose events touch it (members,
    # consents, emergency windows, opt-outs, records): (block, validity windows, change if not clean there)
    key_ids: dict[tuple[str, str, bytes, int], int] = {}
    key_list: list[tuple[str, str, bytes, int]] = []
    ev_blocks: list[list[int]] = []
    ev_wins: list[list[tuple[tuple[int, int], ...]]] = []
    ev_changes: list[list[tuple[str, dict[str, Any]] | None]] = []
    by_requester: dict[str, list[int]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_patient: dict[str, list[int]] = defaultdict(list)
    by_record: dict[bytes, list[int]] = defaultdict(list)
    touched: set[int] = set()
    # clean entries, grouped by (key, evaluation, end of their validity run): the same next change
    groups: dict[tuple[int, int, int], list[int]] = {}

    def evaluate(kid: int, block: int) -> None:
        req, pat, rid, pur = key_list[kid]
        w = state.windows(req, pat, rid, pur)
        t = ts_cache[block]
        change: tuple[str, dict[str, Any]] | None = None
        if _run(w, t) is None:
            found, *_ = state.authorize(req, pat, rid, pur, t)
            errs = [f for f in found if f[0] not in REVIEW_KINDS]
            change = (errs[0][0], errs[0][2]) if errs else ("entry_without_valid_consent", {})
        ev_blocks[kid].append(block)
        ev_wins[kid].append(w)
        ev_changes[kid].append(change)

    def register(key: tuple[str, str, bytes, int], block: int) -> int:
        kid = key_ids[key] = len(key_list)
        key_list.append(key)
        ev_blocks.append([])
        ev_wins.append([])
        ev_changes.append([])
        req, pat, rid, _pur = key
        by_requester[req].append(kid)
        by_pair[(pat, req)].append(kid)
        by_patient[pat].append(kid)
        by_record[rid].append(kid)
        evaluate(kid, block)
        return kid

    def touch(e: EventRecord) -> None:
        n = e.name
        a = e.args
        if n.startswith("Member"):
            ks = by_requester.get(a["member"])
        elif n in ("ConsentGranted", "ConsentRevoked"):
            ks = by_pair.get((a["patient"], a["grantee"]))
        elif n == "EmergencyAccessGranted":
            ks = by_pair.get((a["patient"], a["member"]))
        elif n == "EmergencyOptOutSet":
            ks = by_patient.get(a["patient"])
        elif n in ("RecordRegistered", "RecordRetracted"):
            ks = by_record.get(bytes(a["recordId"]))
        elif n == "RecordAmended":
            ks = by_record.get(bytes(a["previousRecordId"]))
        else:
            return
        if ks:
            touched.update(ks)

    def hx(b: bytes) -> str:
        h = hex_cache.get(b)
        if h is None:
            h = hex_cache[b] = "0x" + b.hex()
        return h

    def entry_evidence(en: _Entry, row: AccessRow) -> dict[str, Any]:
        ev = {
            "entry_index": en.position,
            "released_at": en.released_at,
            "anchor_block": row.block,
            "anchor_tx_hash": row.tx_hash,
            "requester": en.requester,
            "patient": en.patient,
            "record_id": row.record_id,
            "purpose": en.purpose,
            "leaf_hash": _hex(en.leaf),
        }
        if en.state_block is not None:
            ev.update(state_block=en.state_block, state_block_hash=_hex(en.state_hash), state_seen_at=en.seen_at)
        return ev

    def check_entry(i: int) -> None:
        en = entries[i]
        b = en.state_block
        a = anchor_of[i]
        row = AccessRow(
            source="journal",
            time=en.released_at // 1000,
            requester=en.requester,
            requester_name=names.get(en.requester, ""),
            patient=en.patient,
            record_id=hx(en.record_id),
            category="",
            purpose=purpose_slugs.get(en.purpose) or str(en.purpose),
            consent_id=hx(en.consent_id),
            emergency=en.emergency,
            access_hash="0x" + en.access_hash.hex(),
            block=a.block_number if a else None,
            tx_hash=a.tx_hash if a else None,
            entry_index=en.position,
            anchored=a is not None,
            gateway=chosen_gw,
            state_block=b,
        )
        entry_rows[i] = row
        key = (en.requester, en.patient, en.record_id, en.purpose)
        found: list[tuple[str, str, dict[str, Any]]]
        category: int | None
        if b is None:  # version 1
            t = en.released_at // 1000 + skew
            hit = legacy_cache.get(key)
            if hit is not None and hit[0] == state.version and hit[1] <= t < hit[2]:
                found, category = [], hit[3]
            else:
                found, category, _cid, emergency = state.authorize(
                    en.requester, en.patient, en.record_id, en.purpose, t
                )
                if not found and not emergency and category is not None:
                    c = state.consents[(en.patient, en.requester)]
                    legacy_cache[key] = (state.version, c.valid_from, c.valid_until, category)
        elif i in invalid:
            _record(
                row,
                [("entry_state_block_invalid", invalid[i], {"chain_block_hash": _hex(hash_cache.get(b))})],
                entry_evidence(en, row),
                ("entry", en.position),
            )
            return
        elif b > end:  # decided on a block after the audited range (--to-block): judged by a later run
            row.status = "pending"
            rows.append(row)
            return
        else:
            t = ts_cache[b]
            hit2 = clean_cache.get(key)
            if hit2 is not None and hit2[0] == state.version and hit2[1] <= t < hit2[2]:
                found, category = [], hit2[3]
                hit2[4].append(i)
            else:
                found, category, _cid, emergency = state.authorize(
                    en.requester, en.patient, en.record_id, en.purpose, t
                )
                if category is not None and all(f[0] in REVIEW_KINDS for f in found):
                    kid = key_ids.get(key)
                    if kid is None:
                        kid = register(key, b)
                    seg = len(ev_blocks[kid]) - 1
                    run = _run(ev_wins[kid][seg], t) or (t, t + 1)
                    group = groups.setdefault((kid, seg, run[1]), [])
                    group.append(i)
                    if not found and not emergency:
                        clean_cache[key] = (state.version, run[0], run[1], category, group)
        row.category = (
            cat_slugs[category]
            if category is not None and 0 <= category < _CATEGORY_COUNT
            else _slug(CATEGORIES, category)
        )
        if a is None:
            if t <= end_ts - anchor_grace:
                found.append(("journal_entry_unanchored", "no anchored root covers this entry", {}))
            else:
                row.status = "pending"
        if not found:
            rows.append(row)
            return
        _record(row, found, entry_evidence(en, row), ("entry", en.position))

    def _record(
        row: AccessRow,
        found: list[tuple[str, str, dict[str, Any]]],
        base_ev: dict[str, Any],
        about: tuple[str, int],
        append: bool = True,
    ) -> None:
        for kind, message, detail in found:
            report(Anomaly(kind, message, {**base_ev, **detail}), about)
            row.kinds.append(kind)
        if any(k not in REVIEW_KINDS for k in row.kinds):
            row.status = "anomaly"
        elif row.kinds:
            row.status = "review"
        if append:
            rows.append(row)

    block_index = -1
    last_block = None
    for e in events:
        if e.block_number != last_block:
            if touched:
                for kid in touched:
                    evaluate(kid, last_block)  # type: ignore[arg-type]
                touched.clear()
            block_index += 1
            last_block = e.block_number
            for i in pending.pop(block_index, ()):
                check_entry(i)
        ts = ts_cache[e.block_number]
        if e.name == "AccessLogged":
            rid = bytes(e["recordId"])
            found, category, cid, emergency = state.authorize(e["requester"], e["patient"], rid, int(e["purpose"]), ts)
            sender = senders.get(e.tx_hash, "")
            s_status, s_roles = state.members.get(sender, (0, 0))
            if s_status != _ACTIVE or not s_roles & _ROLE_GATEWAY:
                found.append(
                    (
                        "access_logged_by_non_gateway",
                        f"the logAccess transaction was sent by {sender}, not an active gateway",
                        {"sender": sender, "sender_status": s_status, "sender_roles": s_roles},
                    )
                )
            row = AccessRow(
                source="strict",
                time=ts,
                requester=e["requester"],
                requester_name=names.get(e["requester"], ""),
                patient=e["patient"],
                record_id=_hex(rid),
                category=_slug(CATEGORIES, category),
                purpose=_slug(PURPOSES, int(e["purpose"])),
                consent_id=_hex(bytes(e["consentId"])),
                emergency=bool(e["emergency"]),
                access_hash=_hex(bytes(e["accessHash"])),
                block=e.block_number,
                tx_hash=e.tx_hash,
                gateway=sender,
            )
            base_ev = {
                "block": e.block_number,
                "tx_hash": e.tx_hash,
                "log_index": e.log_index,
                "requester": e["requester"],
                "patient": e["patient"],
                "record_id": row.record_id,
                "purpose": int(e["purpose"]),
                "gateway": sender,
            }
            _record(row, found, base_ev, ("block", e.block_number))
        else:
            if e.name == "AccessBatchAnchored":
                g_status, g_roles = state.members.get(e["gateway"], (0, 0))
                if g_status != _ACTIVE or not g_roles & _ROLE_GATEWAY:
                    report(
                        Anomaly(
                            "anchor_by_non_gateway",
                            f"{e['gateway']} anchored a journal but is not an active gateway",
                            {
                                "block": e.block_number,
                                "tx_hash": e.tx_hash,
                                "gateway": e["gateway"],
                                "anchor_index": int(e["index"]),
                            },
                        ),
                        ("block", e.block_number),
                    )
            elif key_ids:
                touch(e)
            state.apply(e, ts)
    if touched:
        for kid in touched:
            evaluate(kid, last_block)  # type: ignore[arg-type]
        touched.clear()
    for pos in sorted(pending):
        for i in pending[pos]:
            check_entry(i)

    # ---- what changed after each clean decision's block, before the entry was anchored
    first_at: dict[int, int | None] = {}

    def first_block_at(v: int) -> int | None:
        """The first block (up to ``end``) whose timestamp is ``>= v``."""
        if v in first_at:
            return first_at[v]
        found_block: int | None = None
        if end_ts >= v:
            k = bisect.bisect_left(block_ts, v)
            hi = block_order[k] if k < len(block_order) else end
            lo = block_order[k - 1] if k > 0 else start - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid not in ts_cache:
                    ts_cache[mid] = client.block_timestamp(mid)
                if ts_cache[mid] >= v:
                    hi = mid
                else:
                    lo = mid
            found_block = hi
        first_at[v] = found_block
        return found_block

    def next_change(kid: int, seg: int, run_end: int) -> tuple[int, tuple[str, dict[str, Any]]] | None:
        blocks, wins, changes = ev_blocks[kid], ev_wins[kid], ev_changes[kid]
        j, hi = seg, run_end
        while True:
            nxt = blocks[j + 1] if j + 1 < len(blocks) else None
            n_time = first_block_at(hi)
            if n_time is not None and (nxt is None or n_time < nxt):
                return n_time, ("access_after_expiry", {"valid_until": hi})
            if nxt is None:
                return None
            j += 1
            if changes[j] is not None:
                return blocks[j], changes[j]  # type: ignore[return-value]
            hi = (_run(wins[j], ts_cache[blocks[j]]) or (0, 0))[1]

    bound_ms = int(max_staleness * 1000)
    margin_ms = int(checkpoint_margin * 1000)
    max_d = max((en.released_at for en in entries), default=0)
    unsettled: set[int] = set()  # entries whose timing verdict a later export could still change
    for (kid, seg, run_end), members in groups.items():
        change = next_change(kid, seg, run_end)
        if change is None:
            continue
        n_block, (change_kind, change_detail) = change
        used = used_from(n_block)
        seen = seen_before(n_block)
        for i in members:
            a = anchor_of[i]
            if a is not None and n_block >= a.block_number:
                continue  # the access was anchored before the change: authorized whenever it happened
            en = entries[i]
            if used is None or used + bound_ms + margin_ms > max_d:
                unsettled.add(i)
            assert en.seen_at is not None and en.state_block is not None
            detail = {
                "change": change_kind,
                "change_block": n_block,
                "change_detail": change_detail,
                "change_in_use_from": used,
                "head_before_change_seen_until": seen if seen >= 0 else None,
                "staleness_bound_ms": bound_ms,
            }
            if used is not None and used < en.seen_at:
                f = (
                    "stale_decision",
                    "decided on a state older than one the journal shows in use before this "
                    "decision's head was seen: released after the change was in force",
                    detail,
                )
            elif seen > en.released_at:
                continue  # the journal shows the head still before the change after this decision
            elif en.released_at - en.seen_at > bound_ms:
                f = (
                    "stale_decision",
                    "decided on a state seen longer ago than the staleness bound, and it "
                    "changed before the entry was anchored",
                    detail,
                )
            else:
                f = (
                    "access_in_staleness_window",
                    "decided on the state just before a change mined before "
                    "the entry was anchored: before the change, or within the gateway's staleness bound "
                    "after it; the journal cannot tell which",
                    detail,
                )
            row = entry_rows[i]
            assert row is not None
            _record(row, [f], entry_evidence(en, row), ("entry", en.position), append=False)
    verified = time.perf_counter()

    if store is not None:
        for a in _check_blobs(state, store):
            report(a, ("run", 0))
    if claims is not None:
        for a in _check_claims(claims, rows):
            report(a, ("run", 0))

    # ---- the checkpoint: what is settled (see docs/audit.md)
    carried = cp.anomalies if cp is not None else []
    counts_before: Mapping[str, int] = cp.counts if cp is not None else {}
    checkpoint_data: dict[str, Any] | None = None
    if checkpoint:
        judged = [a for a in anchors if a.judged]
        limit = judged[-1].tree_size if judged else base
        journal_position = base
        for i, en in enumerate(entries):  # settled: under a judged anchor, verdict final
            if en.position >= limit or i in unsettled:
                break
            journal_position += 1

        def decided_on(i: int) -> int | None:
            en = entries[i]
            if en.state_block is None:
                pos = eval_before[i]
                return block_order[pos - 1] if pos > 0 else start - 1
            return en.state_block if i not in invalid and en.state_block <= end else None

        # the checkpoint's block: at or before the block of every entry not settled, and of every entry
        # decided in the margin before the newest one (a later export may add entries committed late)
        cp_block = end
        recent = max_d - margin_ms
        for i, en in enumerate(entries):
            if en.position >= journal_position or en.released_at >= recent:
                b_i = decided_on(i)
                if b_i is not None and b_i < cp_block:
                    cp_block = b_i
        cp_block = max(cp_block, start - 1)
        cp_st = _State.from_json(cp.state) if cp is not None else _State()
        for e in events:
            if e.block_number > cp_block:
                break
            if e.name != "AccessLogged":
                cp_st.apply(e, ts_cache[e.block_number])

        def settled(about: tuple[str, int]) -> bool:
            kind, key = about
            if kind == "block":
                return key <= cp_block
            if kind == "entry":
                return key < journal_position
            if kind == "anchor":
                return True  # only judged anchors are reported with this origin
            return False

        keep_anomalies = [a.to_json() for a, about in zip(anomalies, origins, strict=True) if settled(about)]
        keep_counts: Counter[str] = Counter(counts_before)
        for r in rows:
            if (r.source == "strict" and r.block is not None and r.block <= cp_block) or (
                r.source == "journal" and r.entry_index is not None and r.entry_index < journal_position
            ):
                keep_counts[r.source] += 1
                keep_counts[r.status] += 1
        keep_counts["events"] += sum(1 for e in events if e.block_number <= cp_block)
        # the frontier and hash-chain head at journal_position (leaves from ``base`` on are in ``entries``)
        cp_frontier = list(cp.frontier) if cp is not None else []
        cp_chain = cp.chain_head if cp is not None else _ZERO
        if journal is not None and journal_position > base:
            part = MerkleTree.from_frontier(base, cp_frontier)
            settled_leaves = [en.leaf for en in entries[: journal_position - base]]
            part.extend(settled_leaves)
            cp_frontier = part.frontier()
            sha256 = hashlib.sha256
            for leaf in settled_leaves:
                cp_chain = sha256(cp_chain + leaf).digest()
        # the settled entries' part of the journal's timeline, for verdicts of entries exported later
        kept_tl: dict[int, list[int | None]] = {b: list(v) for b, v in (cp.timeline.items() if cp else ())}
        for i, en in enumerate(entries[: journal_position - base]):
            b = en.state_block
            if b is None or i in invalid or b > end:
                continue
            slot = kept_tl.setdefault(b, [None, None])
            if slot[0] is None or en.seen_at > slot[0]:  # type: ignore[operator]
                slot[0] = en.seen_at
            if slot[1] is None or en.released_at < slot[1]:
                slot[1] = en.released_at
        seen_upto = max((v[0] for b, v in kept_tl.items() if b <= cp_block and v[0] is not None), default=None)
        checkpoint_data = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "chain_id": manifest.chain_id,
            "contracts": dict(manifest.contracts),
            "from_block": origin,
            "block": cp_block,
            "block_timestamp": ts_cache.get(cp_block),
            "clock_skew": skew,
            "journal": {
                "position": journal_position,
                "chain_head": _hex(cp_chain),
                "frontier": [_hex(h) for h in cp_frontier],
                "gateway": chosen_gw,
                "last_anchor_index": judged[-1].index if judged else (cp.last_anchor_index if cp else -1),
                "last_root": _hex(judged[-1].root)
                if judged
                else (_hex(cp.anchors[-1].root) if cp and cp.anchors else None),
                "anchors": [
                    a.to_json() for a in (judged or (cp.anchors if cp else [])) if a.tree_size >= journal_position
                ][-10_000:],
                "timeline": {
                    "seen_before": seen_upto,
                    "points": [[b, v[0], v[1]] for b, v in sorted(kept_tl.items()) if b > cp_block],
                },
            },
            "state": cp_st.to_json(),
            "counts": dict(keep_counts),
            "anomalies": [*carried, *keep_anomalies],
        }
        # a checkpoint keeps anchors sized >= its position; the last judged one is always among them
        if judged and not any(a["index"] == judged[-1].index for a in checkpoint_data["journal"]["anchors"]):
            checkpoint_data["journal"]["anchors"].append(judged[-1].to_json())

    rows.sort(key=lambda r: (r.time, r.entry_index if r.entry_index is not None else -1))
    all_anomalies = [_anomaly_from_json(o) for o in carried] + anomalies
    kinds = Counter(a.kind for a in all_anomalies)
    statuses = Counter(r.status for r in rows)
    statuses.update({k: counts_before.get(k, 0) for k in ("ok", "review", "anomaly", "pending")})
    strict_n = len(rows) - len(entries) + counts_before.get("strict", 0)
    journal_n = len(entries) + counts_before.get("journal", 0)
    verify_s = verified - verify_started
    total_s = time.perf_counter() - started
    summary = {
        "blocks": end - origin + 1,
        "events": len(events) + counts_before.get("events", 0),
        "strict_accesses": strict_n,
        "journal_entries": journal_n,
        "journal_gateway": chosen_gw,
        "anchors": sum(len(v) for v in anchors_by_gw.values()),
        "accesses": strict_n + journal_n,
        "accesses_ok": statuses["ok"],
        "accesses_review": statuses["review"],
        "accesses_anomalous": statuses["anomaly"],
        "accesses_pending": statuses["pending"],
        "errors": sum(v for k, v in kinds.items() if k not in REVIEW_KINDS),
        "reviews": sum(v for k, v in kinds.items() if k in REVIEW_KINDS),
        "by_kind": dict(sorted(kinds.items())),
        "members": {m: {"status": s, "roles": r} for m, (s, r) in state.members.items()},
        "clock_skew": skew,
        "journal_entries_v1": sum(1 for en in entries if en.state_block is None),
        "max_staleness": max_staleness,
        "resumed_from_block": cp.block if cp is not None else None,
        "seconds": {
            "events": round(fetched - started, 3),
            "timestamps": round(timed - fetched, 3),
            "journal": round(verify_started - timed, 3),
            "verify": round(verify_s, 3),
            "total": round(total_s, 3),
        },
        # state checks only (events and journal already loaded) / end to end, this run's accesses
        "accesses_per_s_verify": round(len(rows) / verify_s, 1) if verify_s > 0 and rows else None,
        "accesses_per_s": round(len(rows) / total_s, 1) if total_s > 0 and rows else None,
    }
    out = AuditReport(manifest.chain_id, dict(manifest.contracts), origin, end, all_anomalies, rows, summary)
    out.checkpoint = checkpoint_data
    return out


# ---------------------------------------------------------------------------------------- outputs

_CSV_FIELDS = [
    "time",
    "time_iso",
    "source",
    "status",
    "kinds",
    "requester",
    "requester_name",
    "patient",
    "record_id",
    "category",
    "purpose",
    "consent_id",
    "emergency",
    "access_hash",
    "block",
    "tx_hash",
    "entry_index",
    "anchored",
    "gateway",
    "state_block",
]


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


#: ``detail`` values of :func:`write_outputs`
DETAILS = ("all", "issues")


def _detail_rows(report: AuditReport, detail: str) -> Iterable[AccessRow]:
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, not {detail!r}")
    return report.accesses if detail == "all" else [r for r in report.accesses if r.status != "ok"]


def write_outputs(report: AuditReport, folder: Path, *, detail: str = "all") -> dict[str, Path]:
    """Writes ``report.json`` (machine), ``accesses.csv`` (spreadsheets), ``report.html`` (a person)
    and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent) into ``folder``; returns the paths.

    ``detail="issues"`` lists per access only those that are not ``ok`` (anomalous, for review,
    pending) in the JSON, CSV and FHIR outputs; summaries and the HTML tables still count every
    access. It exists for ledgers of millions of accesses, whose full per-access outputs run to
    gigabytes (a FHIR AuditEvent is ~1.5 kB) and take minutes to write.
    """
    rows = _detail_rows(report, detail)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "report.json",
        "csv": folder / "accesses.csv",
        "html": folder / "report.html",
        "fhir": folder / "audit-events.json",
    }
    paths["json"].write_bytes(orjson.dumps(report.to_json(detail), option=orjson.OPT_INDENT_2))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in rows:
            d = r.to_json()
            d["kinds"] = ";".join(r.kinds)
            d["time_iso"] = _iso(r.time)
            w.writerow({k: d.get(k) for k in _CSV_FIELDS})
    paths["html"].write_text(_html(report), encoding="utf-8")
    paths["fhir"].write_bytes(orjson.dumps(_fhir_bundle(report, rows), option=orjson.OPT_INDENT_2))
    return paths


def _html(report: AuditReport) -> str:
    e = html.escape
    s = report.summary
    verdict = "CLEAN" if report.exit_code == 0 else "ANOMALIES FOUND"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>HealthCode Ledger audit</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em}"
        ".error{background:#fde2e2}.review{background:#fff4d6}.ok{color:#176f2c}.bad{color:#b00020}"
        "code{font-size:.85em}</style></head><body>",
        "<h1>HealthCode Ledger audit</h1>",
        f"<p>Chain {report.chain_id}, blocks {report.from_block}–{report.to_block}, generated {e(report.generated_at)}.</p>",
        f"<h2 class='{'ok' if report.exit_code == 0 else 'bad'}'>{verdict}</h2>",
        "<table><tr><th>accesses</th><th>ok</th><th>review</th><th>anomalous</th><th>pending</th>"
        "<th>errors</th><th>journal entries</th><th>anchors</th></tr>",
        f"<tr><td>{s['accesses']}</td><td>{s['accesses_ok']}</td><td>{s['accesses_review']}</td>"
        f"<td>{s['accesses_anomalous']}</td><td>{s['accesses_pending']}</td><td>{s['errors']}</td>"
        f"<td>{s['journal_entries']}</td><td>{s['anchors']}</td></tr></table>",
        "<h2>Anomalies</h2>",
    ]
    if report.anomalies:
        parts.append("<table><tr><th>severity</th><th>kind</th><th>message</th><th>evidence</th></tr>")
        for a in sorted(report.anomalies, key=lambda a: a.severity != "error"):
            ev = "<br>".join(f"{e(str(k))}: <code>{e(str(v))}</code>" for k, v in a.evidence.items() if v is not None)
            parts.append(
                f"<tr class='{a.severity}'><td>{a.severity}</td><td>{e(a.kind)}</td>"
                f"<td>{e(a.message)}</td><td>{ev}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='ok'>None.</p>")
    for title, key in (("Per institution", "requester"), ("Per patient", "patient")):
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        for r in report.accesses:
            label = r.requester + (f" ({r.requester_name})" if key == "requester" and r.requester_name else "")
            groups[label if key == "requester" else r.patient][r.status] += 1
        parts.append(
            f"<h2>{title}</h2><table><tr><th>{key}</th><th>accesses</th><th>ok</th><th>review</th>"
            "<th>anomalous</th><th>pending</th></tr>"
        )
        for label, c in sorted(groups.items()):
            parts.append(
                f"<tr><td>{e(label)}</td><td>{sum(c.values())}</td><td>{c['ok']}</td><td>{c['review']}</td>"
                f"<td>{c['anomaly']}</td><td>{c['pending']}</td></tr>"
            )
        parts.append("</table>")
    by_day: Counter[str] = Counter(_iso(r.time)[:13] for r in report.accesses)
    if by_day:
        top = max(by_day.values())
        parts.append("<h2>Accesses over time (per hour)</h2><table>")
        for hour, count in sorted(by_day.items()):
            bar = "█" * max(1, round(40 * count / top))
            parts.append(f"<tr><td>{e(hour)}:00Z</td><td>{count}</td><td>{bar}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fhir_bundle(report: AuditReport, rows: Iterable[AccessRow]) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` (collection) of ``AuditEvent`` resources, IHE BALP style: one patient-read
    event per access (outcome 0 = authorized, 4 = anomalous) with the consent as an entity."""
    items = []
    for i, r in enumerate(rows):
        outcome = "4" if r.status == "anomaly" else "0"
        ev: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": f"access-{i}",
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "RESTful Operation",
            },
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}],
            "action": "R",
            "recorded": _iso(r.time),
            "outcome": outcome,
            "purposeOfEvent": [{"coding": [{"system": "urn:hcl:purpose", "code": r.purpose}]}],
            "agent": [
                {
                    "who": {
                        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:ethereum:{r.requester}"},
                        "display": r.requester_name or r.requester,
                    },
                    "requestor": True,
                }
            ],
            "source": {
                "observer": {"display": "HealthCode Ledger auditor"},
                "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
            },
            "entity": [
                {
                    "what": {"identifier": {"value": f"urn:ethereum:{r.patient}"}},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
                },
                {"what": {"identifier": {"value": r.record_id}}, "description": r.category},
                {
                    "what": {"identifier": {"value": r.consent_id}},
                    "description": "emergency" if r.emergency else "consent",
                },
            ],
        }
        if r.kinds:
            ev["outcomeDesc"] = ", ".join(r.kinds)
        items.append({"fullUrl": f"urn:uuid:hcl-audit-{i}", "resource": ev})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": report.generated_at, "entry": items}
